"""Property-based checks (hypothesis): every call raises a dekc error or returns a value that passes
its checks.

Generated inputs cover expression texts (well-formed and garbage), expressions taken through the
expectation engine, family files, input arrays with every argument of ``gram``, input moments,
and tampered cache files. For each case the outcome is one of

* ``value``: a result, and it passed the category's checks (below);
* ``typed error``: a :class:`dekc.DekcError` (the contract for bad input);

and anything else fails the test: an exception of another type (``untyped``), a value that fails
a check (``wrong``) or a call slower than its budget (``past budget``). The counts per category
are printed at the end of the run (``pytest -s`` or the terminal summary).

Checks on values: expressions parse to real sympy expressions in ``eta`` only; expectations agree
with the mpmath reference within their stated error bound (at ``c = 0`` the reference is the
product of two one-dimensional integrals, at ``c = ±√(ab)`` a one-dimensional one, and the
one-point form); a registered family's ``A`` is finite and convex at sampled points of ``Θ``
(mpmath, independent of sympy's derivative); Gram matrices are finite, symmetric when ``Y`` is
omitted, positive semi-definite (fixed point and T-step kernels from ``psi0="input"`` or
``"constant"``), equivariant under permutations of the inputs, scale as ``t²`` for the positively
homogeneous gaussian + relu kernel, and equal ``c/(λ² − 1)`` for the canonical Gaussian kernel;
a tampered cache file is never used.

Profiles: ``DEKC_PROPERTY_PROFILE=fast`` (default, the CI run, well under two minutes) and
``long`` (``make test-properties``; more than 10,000 cases in all).
"""

from __future__ import annotations

import os
import time
import warnings

import mpmath
import numpy as np
import pytest
import sympy as sp
from helpers import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dekc
from dekc import codegen
from dekc.expressions import ETA, FUNCTIONS

PROFILE = os.environ.get("DEKC_PROPERTY_PROFILE", "fast")
_COUNTS = {  # examples per category: fast (CI), long (make test-properties)
    "parser": (300, 5000),
    "expectations": (3, 60),
    "families": (25, 700),
    "gram": (60, 3000),
    "moments": (60, 1500),
    "cache": (6, 200),
}
BUDGET = 60.0  # seconds: the time budget every derivation runs under in these tests


def rare(draw, k: int) -> bool:
    """True about once in ``k`` draws (False is what hypothesis shrinks towards)."""
    return draw(st.sampled_from([False] * (k - 1) + [True]))


def examples(category: str) -> int:
    return _COUNTS[category][0 if PROFILE != "long" else 1]


def _settings(category: str):
    return settings(
        max_examples=examples(category),
        deadline=None,
        derandomize=PROFILE != "long",
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def outcome(category: str, call, check=None):
    """Run ``call``; classify and record the outcome; fail on anything but a checked value or a
    typed error."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dekc.time_budget(BUDGET):
                value = call()
    except dekc.DekcError:
        elapsed = time.perf_counter() - start
        kind = "typed error"
    except Exception as exc:
        record(category, "untyped")
        raise AssertionError(f"untyped {type(exc).__name__}: {exc}") from exc
    else:
        elapsed = time.perf_counter() - start
        kind = "value"
        if check is not None:
            try:
                check(value)
            except AssertionError:
                record(category, "wrong")
                raise
    if elapsed > BUDGET + 10:
        record(category, "past budget")
        raise AssertionError(f"took {elapsed:.1f} s, past the budget of {BUDGET} s")
    record(category, kind)
    return kind


# -- expression texts --------------------------------------------------------------------------------

UNARY = sorted(name for name, (_, counts) in FUNCTIONS.items() if counts == (1,))
NUMBERS = st.sampled_from(
    [
        "0",
        "1",
        "2",
        "0.5",
        "3.14159",
        "1e-5",
        "1e-320",
        "1e-300",
        "1e308",
        "10**400",
        "2.5",
        "-1",
        "pi",
        "E",
        "oo",
        "1000",
        "7",
    ]
)
LEAF = st.one_of(st.just("eta"), NUMBERS)


def _combine(children):
    unary = st.tuples(st.sampled_from(UNARY), children).map(lambda t: f"{t[0]}({t[1]})")
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**"]), children).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    two = st.tuples(st.sampled_from(["Max", "Min", "binomial"]), children, children).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})"
    )
    neg = children.map(lambda c: f"-{c}")
    return st.one_of(unary, binary, two, neg)


EXPRESSIONS = st.recursive(LEAF, _combine, max_leaves=8)
GARBAGE = st.text(alphabet="eta()+-*/^,.0123456789 _x'\"[]{}:;=lambdimportos", max_size=40)
SHORTHAND = st.sampled_from(sorted(dekc.expressions.SHORTHANDS))


def _check_parsed(expr):
    assert isinstance(expr, sp.Expr)
    assert expr.free_symbols <= {ETA}
    assert not expr.has(sp.nan, sp.zoo, sp.oo, -sp.oo, sp.I, sp.AccumBounds)


@_settings("parser")
@given(st.one_of(EXPRESSIONS, GARBAGE, SHORTHAND))
def test_parser(text):
    outcome("parser", lambda: dekc.expressions.as_eta_expression(text), _check_parsed)


# -- expectations against the mpmath reference --------------------------------------------------------

SMALL = st.recursive(
    st.one_of(st.just("eta"), st.sampled_from(["1", "2", "0.5", "1e-320", "-1", "3"])), _combine, max_leaves=4
)
PARTNERS = st.sampled_from(["relu", "heaviside", "1", "eta"])  # a closed conditional: 1-D quadrature at worst
VARIANCES = st.sampled_from([0.3, 1.0, 2.7])


def _expectation_check(f, g, a, b):
    def check(E):
        dps = 20
        with mpmath.workdps(dps):
            ff = float(dekc.reference.one_point(f, f, a, dps=dps))
            gg = float(dekc.reference.one_point(g, g, b, dps=dps))
            scale = max(np.sqrt(abs(ff * gg)), 1e-300)
            tol = max(E.error_bound, 1e-12) * scale * 1.01 + 1e-14 * scale
            f1 = float(dekc.reference.one_point(f, "1", a, dps=dps))
            g1 = float(dekc.reference.one_point(g, "1", b, dps=dps))
            checks = [(float(E(a, b, 0.0)), f1 * g1, "c = 0")]
            edge = float(np.sqrt(a * b)) * (1 - 1e-15)  # |c| = √(ab) to rounding, never past it
            for c in (edge, -edge):
                checks.append(
                    (float(E(a, b, c)), float(dekc.reference.expectation(f, g, a, b, c, dps=dps)), f"c = {c}")
                )
            fg = float(dekc.reference.one_point(f, g, a, dps=dps))
            ga = float(np.sqrt(float(dekc.reference.one_point(g, g, a, dps=dps)) * abs(ff)))
            checks.append((float(E.one_point(a)), fg, "one point"))
        for got, want, where in checks:
            bound = tol if where != "one point" else max(E.error_bound, 1e-12) * max(ga, 1e-300) * 1.01 + 1e-14 * ga
            assert np.isfinite(got), (f, g, where, got)
            assert abs(got - want) <= bound, (f, g, a, b, where, got, want, bound, E.method)

    return check


@_settings("expectations")
@given(SMALL, PARTNERS, VARIANCES, VARIANCES)
def test_expectations_agree_with_the_reference(f, g, a, b):
    outcome("expectations", lambda: dekc.gaussian_expectation(f, g), _expectation_check(f, g, a, b))


# -- family files ------------------------------------------------------------------------------------

LOG_PARTITIONS = st.one_of(
    st.sampled_from(
        [
            "exp(theta)",
            "theta**2/2",
            "log(1 + exp(theta))",
            "-log(-theta)",
            "-k*log(-theta)",
            "theta**4 + theta**2",
            "n*log(1 + exp(theta))",
            "theta",
            "-theta**2",
            "Heaviside(theta)*theta**2",
            "sqrt(theta)",
            "exp(theta**2)",
            "1/theta",
            "log(theta)",
            "cosh(theta)",
            "exp(exp(theta))",
            "theta**2/2 + y",
            "abs(theta)**3",
            "gamma(theta)",
        ]
    ),
    EXPRESSIONS.map(lambda e: e.replace("eta", "theta")),
)
VALID = [
    ("exp(theta)", "(-oo, oo)"),
    ("theta**2/2", "(-oo, oo)"),
    ("log(1 + exp(theta))", "(-oo, oo)"),
    ("-log(-theta)", "(-oo, 0)"),
    ("-k*log(-theta)", "(-oo, 0)"),
    ("theta**4 + theta**2", "(-oo, oo)"),
    ("n*log(1 + exp(theta))", "(-oo, oo)"),
    ("cosh(theta)", "(-oo, oo)"),
    ("-sqrt(-2*theta)", "(-oo, 0)"),
    ("-log(1 - exp(theta))", "(-oo, 0)"),
    ("theta**2/2", "[0, 1]"),
    ("exp(theta) + theta**2", "(-1, 1)"),
]
DOMAINS = st.sampled_from(
    [
        "(-oo, oo)",
        "(-oo, 0)",
        "(0, oo)",
        "[0, 1]",
        "(-1, 1)",
        "(oo, -oo)",
        "(0, 0)",
        "(-oo, 0]",
        "[-oo, 0)",
        "(a, b)",
        "0, 1",
        "(-1e308, 1e308)",
        "(1e-320, 1)",
    ]
)
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.just(10**400),
)
TOML_STRINGS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789 ()+-*/", max_size=20)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', "") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


@st.composite
def family_texts(draw):
    lines = []
    name = draw(st.sampled_from(["prop_family", "prop2", "Bad Name", "x" * 80, ""])) if rare(draw, 5) else "prop_family"
    if not rare(draw, 3):  # mostly a consistent declaration, so that values get checked too
        A, domain = draw(st.sampled_from(VALID))
    else:
        A, domain = draw(LOG_PARTITIONS), draw(DOMAINS)
    fields = {
        "name": name,
        "log_partition": A,
        "natural_domain": domain,
        "sufficient_statistic": draw(st.sampled_from(["y", "y**2", "log(y)", "theta", "1"])) if rare(draw, 4) else "y",
        "support": draw(st.sampled_from(["reals", "{0, 1}", "nonnegative integers"])),
    }
    for key, value in fields.items():
        if not rare(draw, 30):  # sometimes a required field is missing
            lines.append(f"{key} = {_toml_value(value)}")
    if rare(draw, 4):
        lines.append(
            f"{draw(st.sampled_from(['extra', 'description', 'base_measure', 'natural_parameter']))} = "
            f"{_toml_value(draw(st.one_of(TOML_STRINGS, VALUES)))}"
        )
    if "k*" in A or "n*" in A or rare(draw, 4):
        lines.append("[parameters]")
        keys = [key for key in ("k", "n") if f"{key}*" in A]
        keys += draw(st.lists(st.sampled_from(["k", "n", "theta", "y", "exp", "a"]), max_size=2, unique=True))
        for key in dict.fromkeys(keys):
            good = st.sampled_from([1, 2, 3, 0.5, 7])
            lines.append(f"{key} = {_toml_value(draw(VALUES if rare(draw, 3) else good))}")
    return "\n".join(lines) + "\n"


def _check_family(fam):
    assert isinstance(fam, dekc.Family)
    A = dekc.expressions.to_mpmath(fam.A, fam.theta)
    lo, hi = fam.domain.start, fam.domain.end
    with mpmath.workdps(30):
        lo_f = -mpmath.mpf(20) if lo == -sp.oo else mpmath.mpf(sp.Float(lo, 30))
        hi_f = mpmath.mpf(20) if hi == sp.oo else mpmath.mpf(sp.Float(hi, 30))
        for k in range(1, 10):
            x = lo_f + (hi_f - lo_f) * k / 10
            h = (hi_f - lo_f) * mpmath.mpf(10) ** -6
            values = [A(x - h), A(x), A(x + h)]
            assert all(mpmath.isfinite(v) and mpmath.im(v) == 0 for v in values), (fam, x)
            second = (values[0] - 2 * values[1] + values[2]) / h**2
            assert second >= -(mpmath.mpf(10) ** -6) * (1 + abs(values[1])), (fam, x, second)


@_settings("families")
@given(family_texts())
def test_family_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fam") / "family.toml"
    path.write_text(text)
    outcome("families", lambda: dekc.registry.load_family_file(path), _check_family)


# -- Gram matrices --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels():
    return {
        "relu": dekc.compile_kernel("gaussian", reparam="relu"),
        "identity": dekc.compile_kernel("gaussian", reparam="identity"),
    }


MAGNITUDE = st.sampled_from([1.0, 1.0, 1.0, 1e-3, 1e3, 1e-40, 1e40, 1e-80, 1e80, 1e-200, 1e200])
SCALARS_OK = st.floats(0.05, 20)
BAD = st.sampled_from(["2", None, 2 + 0j, float("nan"), float("inf"), -1.0, 0.0, True, [1.0], np.array([1.0, 2.0])])


@st.composite
def gram_cases(draw):
    n = draw(st.integers(1, 6))
    p = draw(st.integers(1, 3))
    base = np.asarray(draw(st.lists(st.floats(-3, 3), min_size=n * p, max_size=n * p))).reshape(n, p)
    if rare(draw, 4) and n > 1:
        base[-1] = base[0]  # a duplicate input
    X = base * draw(st.one_of(st.just(1.0), MAGNITUDE))
    kind = draw(st.sampled_from([2] * 12 + [0, 1]))
    if kind == 0:
        X = X.astype(draw(st.sampled_from([np.complex128, np.float32, np.int64, bool, object])))
    elif kind == 1 and X.size:
        X.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    args = {}
    for name in ("lam", "feature_scale", "input_scale", "bias"):
        if rare(draw, 12):
            args[name] = draw(BAD)
        elif draw(st.booleans()):
            low = 1.2 if name == "lam" else 0.05
            args[name] = draw(st.floats(low, 20)) if name != "bias" else draw(st.floats(-3, 3))
    if rare(draw, 4):
        args["steps"] = draw(
            st.one_of(
                st.integers(0, 6),
                st.tuples(st.integers(0, 5), st.integers(0, 5)),
                st.integers(0, 6),
                st.sampled_from([-1, 2.5, "3", 10**7]),
            )
        )
    if rare(draw, 5):
        args["psi0"] = draw(st.sampled_from(["input", "constant", "input", "constant", "zeros", None]))
    if rare(draw, 7):
        args["diagonal"] = draw(st.sampled_from(["exact", "limit", "both"]))
    if rare(draw, 6):
        args["features"] = draw(st.sampled_from(["relu", "identity", "erf", "heaviside", "abs"]))
    return draw(st.sampled_from(["relu", "identity"])), X, args, draw(st.integers(0, 2**31 - 1))


def _gram_check(ker, name, X, args, seed):
    def check(K):
        K = np.asarray(K)
        n = X.shape[0]
        stacked = isinstance(args.get("steps"), tuple)
        assert K.shape == ((len(args["steps"]), n, n) if stacked else (n, n))
        assert np.all(np.isfinite(K))
        for M in K if stacked else [K]:
            assert np.array_equal(M, M.T)
            if args.get("diagonal", "exact") == "exact":
                top = np.max(np.abs(np.diagonal(M)))
                assert np.linalg.eigvalsh(M)[0] >= -1e-9 * n * max(top, 1e-300), np.linalg.eigvalsh(M)
        perm = np.random.default_rng(seed).permutation(n)
        Kp = np.asarray(ker.gram(np.asarray(X)[perm], **args))
        expect = K[..., perm, :][..., :, perm]
        assert np.allclose(Kp, expect, rtol=1e-12, atol=1e-13 * np.max(np.abs(K))), "permutation"
        if (
            name == "relu"
            and args.get("bias", 0.0) == 0
            and args.get("psi0", "input") == "input"
            and args.get("features", "relu") in ("relu", "identity", "abs")
        ):
            t = 2.0**7  # exact in binary: the inputs scale without rounding
            try:
                Kt = np.asarray(ker.gram(np.asarray(X) * t, **args))
            except dekc.ScaleError:
                pass
            else:
                assert np.allclose(Kt, t * t * K, rtol=1e-11, atol=1e-13 * np.max(np.abs(K)) * t * t), "homogeneity"
        if name == "identity" and args.get("steps") is None and args.get("features", "relu") == "identity":
            lam = args.get("lam", 2.0)
            Xt = np.hstack([np.asarray(X) * args.get("input_scale", 1.0), np.full((n, 1), args.get("bias", 0.0))])
            c = args.get("feature_scale", 1.0) ** 2 * Xt @ Xt.T
            assert np.allclose(K, c / (lam**2 - 1), rtol=1e-10, atol=1e-13 * np.max(np.abs(c)) / (lam**2 - 1))

    return check


@_settings("gram")
@given(gram_cases())
def test_gram(kernels, case):
    name, X, args, seed = case
    ker = kernels[name]
    outcome("gram", lambda: ker.gram(X, **args), _gram_check(ker, name, X, args, seed))


# -- input moments ------------------------------------------------------------------------------------------


@st.composite
def moment_cases(draw):
    n = draw(st.integers(1, 5))
    B = np.asarray(draw(st.lists(st.floats(-2, 2), min_size=n * 3, max_size=n * 3))).reshape(n, 3)
    c = B @ B.T * draw(st.sampled_from([1.0, 1e-3, 1e3, 1e-100, 1e100, 1e-200]))
    kind = draw(st.sampled_from([3] * 5 + [0, 1, 2]))
    if kind == 0 and n > 1:
        c[0, -1] = c[-1, 0] = c[0, -1] + draw(st.floats(-3, 3))  # possibly no longer PSD
    elif kind == 1:
        c = c + 0j
    elif kind == 2 and n > 1:
        c[0, 1] += 1.0  # not symmetric
    mu = np.asarray(draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))) * np.sqrt(np.abs(np.diagonal(c)))
    if rare(draw, 9):
        mu = mu * 3 + 1  # may break mu² <= c
    return c, mu, draw(st.sampled_from([2.0, 1.2, 5.0, 0.5, -1.0]))


def _moments_check(ker, c, lam):
    def check(K):
        K = np.asarray(K)
        assert np.all(np.isfinite(K)) and np.array_equal(K, K.T)
        eig = np.linalg.eigvalsh(c)
        assert eig[0] >= -1e-8 * max(np.max(np.abs(np.diagonal(c))), 1e-300)  # only PSD inputs return
        top = np.max(np.abs(np.diagonal(K)))
        assert np.all(np.diagonal(K) >= 0)
        assert np.linalg.eigvalsh(K)[0] >= -1e-9 * len(K) * max(top, 1e-300)

    return check


@_settings("moments")
@given(moment_cases())
def test_from_moments(kernels, case):
    c, mu, lam = case
    ker = kernels["relu"]
    outcome("moments", lambda: ker.from_moments(c, mu, lam=lam), _moments_check(ker, c, lam))


# -- tampered cache files ----------------------------------------------------------------------------------


@st.composite
def tampering(draw):
    return (
        draw(st.sampled_from(["flip", "truncate", "insert", "random", "empty", "append"])),
        draw(st.integers(0, 10**6)),
        draw(st.integers(0, 255)),
    )


@_settings("cache")
@given(tampering())
def test_tampered_cache_files_are_never_used(tmp_path_factory, case):
    how, position, byte = case
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DEKC_CACHE_DIR")
    os.environ["DEKC_CACHE_DIR"] = str(cache)
    try:
        X = np.array([[1.0, 2.0], [0.5, -1.0], [-0.3, 0.2]])
        clean = dekc.compile_kernel("gaussian", reparam="relu")
        expected = np.asarray(clean.gram(X))
        raw = bytearray(clean.path.read_bytes())
        k = position % len(raw)
        marker = cache / "inserted-code-ran"
        if how == "flip":
            raw[k] ^= byte or 1
        elif how == "truncate":
            raw = raw[:k]
        elif how == "insert":
            line = raw.rfind(b"\n", 0, k) + 1
            raw[line:line] = f"open({str(marker)!r}, 'w').close()\n".encode()
        elif how == "random":
            raw = bytearray(np.random.default_rng(position).bytes(k + 1))
        elif how == "empty":
            raw = bytearray()
        else:
            raw += b"\nimport os\n"
        clean.path.write_bytes(bytes(raw))

        def check(ker):
            assert not marker.exists()
            assert np.array_equal(np.asarray(ker.gram(X)), expected)
            assert codegen.is_complete(ker.path.read_text(), ker.module.INPUT_HASH)

        outcome("cache", lambda: dekc.compile_kernel("gaussian", reparam="relu"), check)
    finally:
        if old is None:
            os.environ.pop("DEKC_CACHE_DIR", None)
        else:
            os.environ["DEKC_CACHE_DIR"] = old


def test_profile_sizes():
    """The long profile runs at least 10,000 cases; the fast one is a subset."""
    assert sum(long for _, long in _COUNTS.values()) >= 10_000
    assert all(fast < long for fast, long in _COUNTS.values())
    assert PROFILE in ("fast", "long")
