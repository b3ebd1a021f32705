"""The one emitter and the one loader of generated code.

Every piece of Python that dekc generates is assembled here, from expressions printed by
:mod:`dekc.printer`:

* the functions of one Gaussian expectation, ``prefix(a, b, c)``, ``prefix_dc(a, b, c)`` and
  ``prefix_one_point(a)``: a closed form (:func:`closed_form_functions`) or a fixed-node
  quadrature rule (:func:`quadrature_functions`, from a :class:`QuadraturePlan`);
* a kernel module (:func:`kernel_module`): the three expectations of ``(σ, σ)``, ``(σ, ρ)``,
  ``(ρ, ρ)``, the updates of the DEKer recursion, ``sigma``, ``rho`` and constants describing them.

Every text is a complete module that imports only ``jax`` (``jax.numpy`` as ``jnp`` and
``jax.scipy.special`` as ``jsp``) and carries the helpers it uses. :func:`load_module` is the only
place where generated text becomes code: in memory for expectations, from the verified cache text
for kernels (see :mod:`dekc.cache`). Kernel modules end with a seal (:func:`seal`) holding the
SHA-256 of the text above it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import sympy as sp

from ._version import __version__
from .errors import ExpressionError, UnprintableError
from .expressions import ETA, kink_points
from .gaussian import MU, RHO, SIGMA, VARIANCE_FLOOR, A, B, C, ClosedForm, swap_variances
from .printer import function_source, helpers_for

#: bump when the generated text changes shape, so stale cache files are not reused
FORMAT = 2
END_MARKER = "# end of dekc kernel module"
IMPORTS = "import jax\nimport jax.numpy as jnp\nimport jax.scipy.special as jsp"

# -- quadrature rules ------------------------------------------------------------------------------

#: half-width of the integration range in whitened coordinates (Gaussian mass beyond: below 1e-22)
QUADRATURE_RANGE = 10.0
#: feature points ``±1, ±4, ±16`` (in the function's own variable) where every rule is split
FEATURE_POINTS = (1.0, 4.0, 16.0)
#: fixed split points ``±1.5, ±3, ±5, ±7.5`` in whitened coordinates, so that the Gaussian weight
#: itself is integrated to float64 accuracy whatever the variance (one Gauss–Legendre piece across
#: ``[-10, 10]`` misses the Gaussian mass by 1e-8 even with 32 nodes)
WHITENED_POINTS = (1.5, 3.0, 5.0, 7.5)
#: multiples ``±1, ±2, ±4, ±8`` of the conditional spread around each kink of the inner function (and
#: around 0): the features of the smoothed factor ``E[g(μ + sZ)]`` as a function of ``μ``
SPREAD_MULTIPLES = (1.0, 2.0, 4.0, 8.0)

#: helpers shared by every generated quadrature rule in a module
QUADRATURE_HELPERS = f'''_QUAD_L = {QUADRATURE_RANGE!r}
_QUAD_Z = {tuple(sorted({-QUADRATURE_RANGE, QUADRATURE_RANGE} | {s * p for p in WHITENED_POINTS for s in (-1, 1)}))!r}
_QUAD_M = {tuple(sorted({s * m for m in SPREAD_MULTIPLES for s in (-1, 1)}))!r}


def _quad_phi(z):
    return jnp.exp(-z * z / 2) / jnp.sqrt(2 * jnp.pi)


def _quad_correlation(a, b, c):
    """(rho, sqrt(a), sqrt(b)); rho = 0 when a or b is 0."""
    a, b = jnp.maximum(a, 0.0), jnp.maximum(b, 0.0)
    sab = jnp.sqrt(a * b)
    return jnp.where(sab > 0, jnp.clip(c / jnp.where(sab > 0, sab, 1.0), -1.0, 1.0), 0.0), jnp.sqrt(a), jnp.sqrt(b)


def _quad_mapped(points, scale, shift):
    """Where shift + scale * z meets the points, clipped to [-L, L] (unsorted)."""
    pts = jnp.asarray(points, dtype=jnp.float64)
    safe = jnp.where(scale != 0, scale, 1.0)
    z = jnp.where(scale[..., None] != 0, (pts - shift[..., None]) / safe[..., None],
                  jnp.sign(pts - shift[..., None]) * 2 * _QUAD_L)
    return jnp.clip(z, -_QUAD_L, _QUAD_L)


def _quad_smoothed(centers, scale, spread):
    """Where scale * z meets centers + spread * m for the multiples m in _QUAD_M, clipped to [-L, L]:
    the features of E[g(scale z + spread Z)] for a g with features at the centers."""
    v = jnp.asarray(centers, dtype=jnp.float64)[:, None] + spread[..., None, None] * jnp.asarray(_QUAD_M)
    v = v.reshape(v.shape[:-2] + (-1,))
    safe = jnp.where(scale != 0, scale, 1.0)
    z = jnp.where(scale[..., None] != 0, v / safe[..., None], jnp.sign(v) * 2 * _QUAD_L)
    return jnp.clip(z, -_QUAD_L, _QUAD_L)


def _quad_breaks(points, scale, shift, *more):
    """Breakpoints in z: the ends, the fixed whitened points, where shift + scale * z meets the
    points, and any further mapped points (``more``), sorted."""
    z = _quad_mapped(points, scale, shift)
    fixed = jnp.asarray(_QUAD_Z, dtype=jnp.float64)
    fixed = jnp.broadcast_to(fixed, z.shape[:-1] + fixed.shape)
    return jnp.sort(jnp.concatenate([fixed, z, *more], axis=-1), axis=-1)


def _quad_pieces(breaks, x, w):
    """Nodes and weights of the composite rule (x, w) over sorted breaks (..., P + 1); x and w are
    tuples (arrays are made here, under jit as constants: importing a module builds none)."""
    x, w = jnp.asarray(x, dtype=jnp.float64), jnp.asarray(w, dtype=jnp.float64)
    lo, hi = breaks[..., :-1, None], breaks[..., 1:, None]
    half = (hi - lo) / 2
    return (lo + hi) / 2 + half * x, half * w
'''


def split_points(kinks: Iterable[float]) -> tuple:
    """Kinks plus the feature points ``±1, ±4, ±16``, sorted."""
    return tuple(sorted(set(kinks) | {p for f in FEATURE_POINTS for p in (-f, f)}))


@dataclasses.dataclass(frozen=True)
class QuadraturePlan:
    """What a quadrature rule for ``E[f(u) g(v)]`` integrates.

    ``f`` is integrated on the outer axis; ``reduction`` is ``E[g(μ + σZ)]`` in closed form (a
    one-dimensional rule) or ``None`` (a two-dimensional tensor rule). ``swapped``: ``f`` and
    ``g`` were exchanged to get there (the rule's ``a`` is then the caller's ``b``).
    """

    f: sp.Expr
    g: sp.Expr
    reduction: sp.Expr | None
    f_kinks: tuple[float, ...]
    g_kinks: tuple[float, ...]
    swapped: bool

    @property
    def dimension(self) -> int:
        return 1 if self.reduction is not None else 2

    @property
    def inner_continuous(self) -> bool:
        """Whether the inner factor is continuous (then ``∂K/∂c`` is the rule's own derivative)."""
        return self.reduction is not None or not self.g.has(sp.Heaviside, sp.sign, sp.Piecewise)

    def nodes_per_entry(self, n: int) -> int:
        """Nodes one evaluation uses with ``n`` nodes per piece."""
        pieces = 2 * (len(self.f_kinks) + len(self.g_kinks) + 8)  # breakpoints of the outer (and inner) axis
        return (pieces * n) ** self.dimension


def elementwise_source(name: str, expr: sp.Expr, what: str) -> str:
    """Source of ``def name(x)``: ``expr`` (in ``η``) elementwise, broadcast to ``x``'s shape."""
    return _elementwise_text(expr, what).replace("def _dekc_elementwise(", f"def {name}(", 1)


@functools.lru_cache(maxsize=256)
def _elementwise_text(expr: sp.Expr, what: str) -> str:
    """:func:`elementwise_source` under a fixed name (remembered: a kernel prints σ and ρ several times)."""
    try:
        return function_source(
            "_dekc_elementwise", ["x"], expr, {ETA: "x"}, result="jnp.broadcast_to({}, jnp.shape(x))"
        )
    except UnprintableError as exc:
        raise ExpressionError(f"{what} = {expr} cannot be evaluated numerically: {exc}") from None


def _nodes_literals(prefix: str, n: int, suffix: str = "") -> str:
    x, w = np.polynomial.legendre.leggauss(n)
    return f"{prefix}_X{suffix} = {tuple(float(v) for v in x)!r}\n{prefix}_W{suffix} = {tuple(float(v) for v in w)!r}"


def conditional_source(name: str, reduction: sp.Expr) -> str:
    """Source of ``def name(mu, sigma)``: a closed conditional expectation ``E[g(μ + σZ)]``
    (``σ`` floored at 1e-150)."""
    return function_source(
        name,
        ["mu", "sigma"],
        reduction,
        {MU: "mu", SIGMA: "sigma"},
        prelude=["sigma = jnp.maximum(sigma, 1e-150)"],
        doc="E[g(mu + sigma Z)], Z ~ N(0, 1).",
    )


def quadrature_functions(
    plan: QuadraturePlan, prefix: str, n: int, title: str = "", one_point_n: int | None = None
) -> str:
    """Source of ``prefix``, ``prefix_dc``, ``prefix_one_point``: composite Gauss–Legendre rules
    with ``n`` nodes per piece (``one_point_n`` for the one-point form, default ``n``; needs
    :data:`QUADRATURE_HELPERS`)."""
    p = f"_{prefix}"
    one_point_n = n if one_point_n is None else one_point_n
    one_point_nodes = f"{p}_X, {p}_W" if one_point_n == n else f"{p}_X1, {p}_W1"
    what = f" of {title}" if title else ""
    centers = tuple(sorted(set(plan.g_kinks) | {0.0}))
    outer = (
        f"_quad_breaks({split_points(plan.f_kinks)!r}, sa, jnp.zeros_like(sa), "
        f"_quad_mapped({split_points(plan.g_kinks)!r}, rho * sb, jnp.zeros_like(sb)), "
        f"_quad_smoothed({centers!r}, rho * sb, sb * jnp.sqrt(jnp.maximum(1 - rho * rho, 0.0))))"
    )
    if plan.reduction is not None:
        inner = f"{p}_G(mean, jnp.broadcast_to(spread, mean.shape))"
        conditional = conditional_source(f"{p}_G", plan.reduction) + "\n\n"
    else:
        inner = f"_{prefix}_inner(mean, spread)"
        conditional = f'''def {p}_inner(mean, spread):
    """E[g(mean + spread Z)] by the composite rule, split where the argument meets g's kinks."""
    zb2 = _quad_breaks({split_points(plan.g_kinks)!r}, jnp.broadcast_to(spread, mean.shape), mean)
    z2, w2 = _quad_pieces(zb2, {p}_X, {p}_W)
    gv = {p}_g(mean[..., None, None] + spread[..., None, None] * z2)
    return jnp.sum(w2 * _quad_phi(z2) * gv, axis=(-2, -1))


'''
    args = "b, a, c" if plan.swapped else "a, b, c"
    if plan.inner_continuous:
        dc_body = f"return jax.jvp(lambda cc: {prefix}(a, b, cc), (c,), (jnp.ones_like(c),))[1]"
    else:
        dc_body = (
            "h = 1e-5 * jnp.sqrt(jnp.maximum(a * b, 1e-300))\n"
            f"    return ({prefix}(a, b, c + h) - {prefix}(a, b, c - h)) / (2 * h)"
        )
    literals = _nodes_literals(p, n) + ("" if one_point_n == n else "\n" + _nodes_literals(p, one_point_n, "1"))
    return f'''{literals}


{elementwise_source(f"{p}_f", plan.f, "f")}

{elementwise_source(f"{p}_g", plan.g, "g")}

{conditional}def {p}_rule(a, b, c):
    """Composite Gauss-Legendre rule ({n} nodes per piece) in whitened coordinates; a is f's variance."""
    rho, sa, sb = _quad_correlation(a, b, c)
    zb = {outer}
    z1, w1 = _quad_pieces(zb, {p}_X, {p}_W)
    fu = {p}_f(sa[..., None, None] * z1)
    mean = (rho * sb)[..., None, None] * z1
    spread = (sb * jnp.sqrt(jnp.maximum(1 - rho * rho, 0.0)))[..., None, None]
    inner = {inner}
    return jnp.sum(w1 * _quad_phi(z1) * fu * inner, axis=(-2, -1))


def {prefix}(a, b, c):
    """E[f(u) g(v)]{what}, (u, v) ~ N(0, [[a, c], [c, b]]), by quadrature."""
    a, b, c = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.float64) for v in (a, b, c)))
    return {p}_rule({args})


def {prefix}_dc(a, b, c):
    """d/dc E[f(u) g(v)]{what}."""
    a, b, c = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.float64) for v in (a, b, c)))
    {dc_body}


def {prefix}_one_point(a):
    """E[f(u) g(u)]{what}, u ~ N(0, a), by quadrature ({one_point_n} nodes per piece)."""
    sa = jnp.sqrt(jnp.maximum(jnp.asarray(a, dtype=jnp.float64), 0.0))
    z, w = _quad_pieces(_quad_breaks({split_points(plan.f_kinks + plan.g_kinks)!r}, sa, jnp.zeros_like(sa)), {one_point_nodes})
    u = sa[..., None, None] * z
    return jnp.sum(w * _quad_phi(z) * {p}_f(u) * {p}_g(u), axis=(-2, -1))
'''


# -- closed forms ----------------------------------------------------------------------------------

_SHAPE3 = "jnp.broadcast_to({}, jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b), jnp.shape(c)))"
_INV_SAB = sp.Symbol("inv_sab", positive=True)


def closed_form_functions(prefix: str, form: ClosedForm, title: str = "") -> str:
    """Source of ``prefix(a, b, c)``, ``prefix_dc(a, b, c)`` and ``prefix_one_point(a)``.

    ``c/√(ab)`` is computed once and clipped to ``[−1, 1]`` (rounding can push it past 1);
    ``a`` or ``b`` equal to 0 uses the exact form where it is finite (``a^{m/2} = 0`` exactly) and
    the limit ``a → 0⁺`` along fixed ``ρ`` elsewhere. ``∂K/∂c = ∂K/∂c|_ρ + ∂K/∂ρ / √(ab)``.
    """
    names = {A: "a", B: "b", C: "c", RHO: "rho", _INV_SAB: "inv_sab"}
    what = f" of {title}" if title else ""
    parts = [
        function_source(
            f"_{prefix}_form",
            ["a", "b", "c"],
            form.pair,
            names,
            result=_SHAPE3,
            prelude=[
                "sab = jnp.sqrt(a * b)",
                "rho = jnp.where(sab > 0, jnp.clip(c / jnp.where(sab > 0, sab, 1.0), -1.0, 1.0), 0.0)",
            ],
        ),
        f"""def {prefix}(a, b, c):
    \"\"\"E[f(u) g(v)]{what}, (u, v) ~ N(0, [[a, c], [c, b]]).\"\"\"
    exact = _{prefix}_form(a, b, c)
    floored = _{prefix}_form(jnp.maximum(a, {VARIANCE_FLOOR!r}), jnp.maximum(b, {VARIANCE_FLOOR!r}), c)
    return jnp.where(jnp.isfinite(exact), exact, floored)
""",
        function_source(
            f"{prefix}_dc",
            ["a", "b", "c"],
            form.dc(_INV_SAB),
            names,
            result=_SHAPE3,
            doc=f"d/dc E[f(u) g(v)]{what} (Price: E[f'(u) g'(v)]).",
            prelude=[
                f"a = jnp.maximum(a, {VARIANCE_FLOOR!r})",
                f"b = jnp.maximum(b, {VARIANCE_FLOOR!r})",
                "sab = jnp.sqrt(a * b)",
                "rho = jnp.clip(c / sab, -1.0, 1.0)",
                "inv_sab = 1.0 / sab",
            ],
        ),
        function_source(
            f"{prefix}_one_point",
            ["a"],
            form.one_point,
            {A: "a"},
            result="jnp.broadcast_to({}, jnp.shape(a))",
            doc=f"E[f(u) g(u)]{what}, u ~ N(0, a).",
            prelude=[f"a = jnp.maximum(a, {VARIANCE_FLOOR!r})"],
        ),
    ]
    return "\n\n".join(parts)


def expectation_module(functions: str, *, quadrature: bool) -> str:
    """A complete module around the functions of one expectation (imports and helpers)."""
    parts = [IMPORTS, helpers_for(functions)] + ([QUADRATURE_HELPERS] if quadrature else []) + [functions]
    return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"


# -- kernel modules --------------------------------------------------------------------------------

#: the expectation pairs of a kernel module
PAIRS = (("sigma", "sigma"), ("sigma", "rho"), ("rho", "rho"))


@dataclasses.dataclass(frozen=True)
class ExpectationText:
    """What a kernel module needs from one expectation: how it is computed, its functions' source,
    and (closed forms only) the forms the fused update is assembled from."""

    method: str
    description: str
    error_bound: float
    nodes_per_entry: int
    functions: Callable[[str, str], str]  # (prefix, title) -> source
    closed: ClosedForm | None


def _elementwise(name: str, expr: sp.Expr, doc: str) -> str:
    return function_source(name, ["eta"], expr, {ETA: "eta"}, doc=doc, result="jnp.broadcast_to({}, jnp.shape(eta))")


def kernel_module(
    *,
    title: str,
    sigma: sp.Expr,
    rho: sp.Expr,
    R: sp.Expr,
    digest: str,
    expectations: Mapping[tuple[str, str], ExpectationText],
    metadata: dict,
) -> str:
    """The sealed text of a kernel module for the activation ``sigma`` and ``rho``.

    It defines, for each pair ``(σ, σ)``, ``(σ, ρ)``, ``(ρ, ρ)``, ``K_sigma_sigma(a, b, c)``,
    ``K_sigma_sigma_dc`` and ``K_sigma_sigma_one_point(a)``; ``update(p, a, b, c, mu_x, mu_y, lam)``
    (the off-diagonal map ``G``) and ``update_dp``; ``diagonal_update(a, c, mu, lam)`` (the diagonal
    map ``D``) and ``diagonal_update_da``; the fused ``update_and_dp`` and
    ``diagonal_update_and_da`` the solver calls; ``sigma``, ``rho``; and the constants
    ``DEKC_VERSION``, ``INPUT_HASH``, ``METADATA``, ``METHODS``, ``ERROR_BOUNDS``, ``NODES_PER_ENTRY``.

    When some pair has no closed form, also ``SERIES`` (those pairs, which the runtime sums as
    Mehler series once the diagonal is known, see :mod:`dekc.series`), ``KINKS`` (the kinks of
    ``sigma`` and ``rho``) and ``update_and_dp_closed``, the closed-form pairs' part of the update.
    """
    names = {pair: f"K_{pair[0]}_{pair[1]}" for pair in expectations}
    header = [
        f'"""Autogenerated by dekc {__version__} -- do not edit.',
        "",
        title,
        "",
        f"    R(eta)     = {R}",
        f"    sigma(eta) = {sigma}      (A o R)'",
        f"    rho(eta)   = {rho}      R'",
        "",
        "Expectations, (u, v) ~ N(0, [[a, c], [c, b]]):",
    ]
    for pair, E in expectations.items():
        header.append(f"    {names[pair]} = E[{pair[0]}(u) {pair[1]}(v)]: {E.description}")
    header += [
        "",
        "Update for one entry, p = Psi(x, x'), a = Psi(x, x), b = Psi(x', x'), c = c(x, x'),",
        "mu_x = mu(x), mu_y = mu(x'):",
        "    G(p) = (K_sigma_sigma(a, b, p) - mu_y K_sigma_rho(a, b, p) - mu_x K_sigma_rho(b, a, p)",
        "            + c K_rho_rho(a, b, p)) / lam^2",
        "Diagonal, u ~ N(0, a):",
        "    D(a) = (E sigma(u)^2 - 2 mu E sigma(u) rho(u) + c E rho(u)^2) / lam^2",
        "",
        f"input hash: sha256:{digest}",
        '"""',
        "",
        IMPORTS,
        "",
    ]
    methods = {f"{f},{g}": E.method for (f, g), E in expectations.items()}
    bounds = {f"{f},{g}": float(E.error_bound) for (f, g), E in expectations.items()}
    nodes = max(E.nodes_per_entry for E in expectations.values())
    constants = [
        f"DEKC_VERSION = {__version__!r}",
        f"INPUT_HASH = {digest!r}",
        f"METADATA = {metadata!r}",
        f"METHODS = {methods!r}",
        f"ERROR_BOUNDS = {bounds!r}",
        f"NODES_PER_ENTRY = {nodes}",
    ]
    series = tuple(key for key, method in methods.items() if method == "quadrature")
    if series:
        kinks = {name: tuple(float(t) for t in kink_points(expr)) for name, expr in (("sigma", sigma), ("rho", rho))}
        constants += [f"SERIES = {series!r}", f"KINKS = {kinks!r}"]
    body = [E.functions(names[pair], f"{pair[0]}, {pair[1]}") for pair, E in expectations.items()]
    body.append(_elementwise("sigma", sigma, "The activation sigma = (A o R)'."))
    body.append(_elementwise("rho", rho, "rho = R'."))
    body.append(_UPDATES)
    body.append(_fused(expectations))
    parts = ["\n".join(header), "\n".join(constants), helpers_for("\n".join(body))]
    if series:
        parts.append(QUADRATURE_HELPERS)
    return seal("\n\n\n".join(p.strip("\n") for p in parts + body) + "\n")


_UPDATES = '''def update(p, a, b, c, mu_x, mu_y, lam):
    """G(p) for one off-diagonal entry (see the header); mu_x multiplies K_rho_sigma."""
    return (K_sigma_sigma(a, b, p) - mu_y * K_sigma_rho(a, b, p) - mu_x * K_sigma_rho(b, a, p)
            + c * K_rho_rho(a, b, p)) / (lam * lam)


def update_dp(p, a, b, c, mu_x, mu_y, lam):
    """dG/dp by Price's theorem: the same combination of d/dc expectations."""
    return (K_sigma_sigma_dc(a, b, p) - mu_y * K_sigma_rho_dc(a, b, p) - mu_x * K_sigma_rho_dc(b, a, p)
            + c * K_rho_rho_dc(a, b, p)) / (lam * lam)


def diagonal_update(a, c, mu, lam):
    """D(a) for one diagonal entry (see the header)."""
    return (K_sigma_sigma_one_point(a) - 2 * mu * K_sigma_rho_one_point(a) + c * K_rho_rho_one_point(a)) / (lam * lam)


def diagonal_update_da(a, c, mu, lam):
    """dD/da (forward-mode derivative of the one-point forms)."""
    a = jnp.asarray(a, dtype=jnp.float64)
    return jax.jvp(lambda t: diagonal_update(t, c, mu, lam), (a,), (jnp.ones_like(a),))[1]'''


_P, _CIN, _MX, _MY, _MU, _LAM = sp.symbols("p c_in mu_x mu_y mu lam", real=True)


def _fused(expectations: Mapping[tuple[str, str], ExpectationText]) -> str:
    """``update_and_dp`` and ``diagonal_update_and_da``: value and derivative in one pass.

    For closed forms the update is assembled symbolically, so ``c/√(ab)``, its arcsine and
    ``√(1 − ρ²)`` are computed once per call and shared (``sympy.cse``); the Newton solver calls
    only these. Quadrature kernels call the functions above.
    """
    closed = {pair: E.closed for pair, E in expectations.items() if E.closed is not None}

    def form(pair, swap=False):
        """The pair form in ``p`` and its ``p``-derivative (``a`` and ``b`` exchanged for ``K_ρσ``);
        zero for a pair without a closed form."""
        if pair not in closed:
            return sp.Integer(0), sp.Integer(0)
        expectation = closed[pair]
        if swap:
            expectation = ClosedForm(swap_variances(expectation.pair), expectation.one_point)
        return expectation.pair.subs(C, _P), expectation.dc(_INV_SAB).subs(C, _P)

    (ss, dss), (sr, dsr), (rs, drs), (rr, drr) = (
        form(("sigma", "sigma")),
        form(("sigma", "rho")),
        form(("sigma", "rho"), swap=True),
        form(("rho", "rho")),
    )
    scale = 1 / _LAM**2
    G = scale * (ss - _MY * sr - _MX * rs + _CIN * rr)
    dG = scale * (dss - _MY * dsr - _MX * drs + _CIN * drr)
    names = {A: "a", B: "b", _P: "p", RHO: "rho", _INV_SAB: "inv_sab", _CIN: "c", _MX: "mu_x", _MY: "mu_y", _LAM: "lam"}
    prelude = [
        f"a = jnp.maximum(a, {VARIANCE_FLOOR!r})",
        f"b = jnp.maximum(b, {VARIANCE_FLOOR!r})",
        "sab = jnp.sqrt(a * b)",
        "rho = jnp.clip(p / sab, -1.0, 1.0)",
        "inv_sab = 1.0 / sab",
    ]
    shape = "jnp.broadcast_to({}, jnp.broadcast_shapes(*(jnp.shape(v) for v in (p, a, b, c, mu_x, mu_y))))"
    if len(closed) < len(expectations):
        partial = function_source(
            "update_and_dp_closed",
            ["p", "a", "b", "c", "mu_x", "mu_y", "lam"],
            (G, dG),
            names,
            doc="The closed-form pairs' part of (G(p), dG/dp); the series of the other pairs is added by the runtime.",
            prelude=prelude,
            result=shape,
        )
        return (
            '''def update_and_dp(p, a, b, c, mu_x, mu_y, lam):
    """(G(p), dG/dp) for one off-diagonal entry."""
    return update(p, a, b, c, mu_x, mu_y, lam), update_dp(p, a, b, c, mu_x, mu_y, lam)


def diagonal_update_and_da(a, c, mu, lam):
    """(D(a), dD/da) for one diagonal entry."""
    return diagonal_update(a, c, mu, lam), diagonal_update_da(a, c, mu, lam)'''
            + "\n\n\n"
            + partial
        )
    pair = function_source(
        "update_and_dp",
        ["p", "a", "b", "c", "mu_x", "mu_y", "lam"],
        (G, dG),
        names,
        doc="(G(p), dG/dp) for one off-diagonal entry, a and b > 0, fused.",
        prelude=prelude,
    )
    one = {pair: closed[pair].one_point for pair in closed}
    D = scale * (one[("sigma", "sigma")] - 2 * _MU * one[("sigma", "rho")] + _CIN * one[("rho", "rho")])
    diagonal = function_source(
        "diagonal_update_and_da",
        ["a", "c", "mu", "lam"],
        (D, sp.diff(D, A)),
        {A: "a", _CIN: "c", _MU: "mu", _LAM: "lam"},
        doc="(D(a), dD/da) for one diagonal entry, fused.",
        prelude=[f"a = jnp.maximum(a, {VARIANCE_FLOOR!r})"],
        result="jnp.broadcast_to({}, jnp.broadcast_shapes(jnp.shape(a), jnp.shape(c), jnp.shape(mu)))",
    )
    return pair + "\n\n" + diagonal


# -- sealing and loading ---------------------------------------------------------------------------


def text_digest(text: str) -> str:
    """SHA-256 of ``text`` (UTF-8), hexadecimal."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_SEAL = f"\n{END_MARKER}; sha256 of the text above: "


def seal(body: str) -> str:
    """``body`` followed by the end marker and the SHA-256 of ``body``: any later change to the
    text (an edit, a truncation, inserted code) no longer matches the digest."""
    head = body + "\n"
    return f"{head}{_SEAL}{text_digest(head)}\n"


def is_complete(text: str, digest: str) -> bool:
    """Whether ``text`` is exactly what dekc wrote for the input hash ``digest``: it carries that
    hash, ends with the end marker and the SHA-256 of everything above the marker matches."""
    body, sep, trailer = text.rpartition(_SEAL)
    if not sep or f"\nINPUT_HASH = {digest!r}\n" not in body:
        return False
    return trailer == text_digest(body) + "\n"


def load_module(text: str, name: str, path: str | None = None) -> types.ModuleType:
    """The module defined by generated ``text``, registered as ``sys.modules[name]``: the only
    place generated code runs. ``text`` comes from this module's emitters, or from a cache file
    whose seal was checked (what was checked is what runs: the file is not read again)."""
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = path or f"<{name}>"
    exec(compile(text, module.__file__, "exec"), module.__dict__)  # generated by dekc (see above)
    module.__dict__["TEXT_DIGEST"] = text_digest(text)  # what it was loaded from (names its compiled programs)
    sys.modules[name] = module
    return module
