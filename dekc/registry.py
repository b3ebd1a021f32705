"""Exponential families as data: TOML declarations, validation and the registry.

A family is ``p(y | θ) = h(y) exp(θ T(y) − A(θ))`` with natural parameter ``θ ∈ Θ``. Family
files are parsed with the whitelist of :mod:`dekc.expressions`; nothing in them is executed.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib.resources
import math
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path

import mpmath
import sympy as sp

from .budget import limited
from .errors import ExpressionError, FamilyError, InputError, UnknownFamilyError
from .expressions import CONSTANTS, ETA, FUNCTIONS, parse_expression, to_mpmath

Y = sp.Symbol("y", real=True)

REQUIRED_KEYS = ("name", "log_partition", "natural_domain", "sufficient_statistic", "support")
OPTIONAL_KEYS = ("description", "natural_parameter", "base_measure", "parameters")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_RESERVED = {"y", "eta"} | set(CONSTANTS) | set(FUNCTIONS)
_MAX_FILE_BYTES = 64 * 1024
_SAMPLES = 201
OBJECT_SOURCE = "<Family object>"
_NOT_ANALYTIC = (sp.Heaviside, sp.Max, sp.Min, sp.Abs, sp.sign, sp.Piecewise, sp.DiracDelta)
# set while families are built whose sampled convexity check may wait (see convexity_deferred)
_DEFER_CONVEXITY = contextvars.ContextVar("dekc_defer_convexity", default=False)


def interval_text(interval: sp.Interval) -> str:
    """An interval as text, e.g. ``(0, oo)`` or ``[0, 1]``."""
    left = "(" if interval.left_open else "["
    right = ")" if interval.right_open else "]"
    return f"{left}{interval.start}, {interval.end}{right}"


def parse_interval(text: str, symbols: Mapping[str, sp.Symbol], *, source: str, field: str) -> sp.Interval:
    """``"(-oo, 0]"`` and the like -> a sympy Interval; infinite ends must be open."""
    match = re.fullmatch(r"\s*([\(\[])(.*),(.*)([\)\]])\s*", text) if isinstance(text, str) else None
    if match is None:
        raise FamilyError(source, field, f'{text!r} is not an interval; write e.g. "(-oo, oo)" or "(-oo, 0]"')
    left, lo_text, hi_text, right = match.groups()
    try:
        lo = parse_expression(lo_text, symbols, what="lower end", allow_infinite=True)
        hi = parse_expression(hi_text, symbols, what="upper end", allow_infinite=True)
    except ExpressionError as exc:
        raise FamilyError(source, field, str(exc)) from None
    for end, bracket in ((lo, left), (hi, right)):
        if end.is_infinite and bracket in "[]":
            raise FamilyError(source, field, f"an infinite end must be open: write '(' or ')' next to {end}")
    if (lo < hi) == sp.false:
        raise FamilyError(source, field, f"lower end {lo} must be below upper end {hi}")
    return sp.Interval(lo, hi, left_open=left == "(", right_open=right == ")")


def _interior_samples(domain: sp.Interval, count: int = _SAMPLES) -> list[mpmath.mpf]:
    """Points spread over the interior of ``domain`` on a log scale towards each end."""
    lo, hi = domain.start, domain.end
    grid = [mpmath.mpf(-12) + 24 * mpmath.mpf(k) / (count - 1) for k in range(count)]
    if lo == -sp.oo and hi == sp.oo:
        return [mpmath.sinh(g / 2) for g in grid]
    if lo == -sp.oo:
        top = mpmath.mpf(sp.Float(hi, 30))
        return [top - mpmath.exp(g / 2) for g in grid]
    if hi == sp.oo:
        bottom = mpmath.mpf(sp.Float(lo, 30))
        return [bottom + mpmath.exp(g / 2) for g in grid]
    a, b = mpmath.mpf(sp.Float(lo, 30)), mpmath.mpf(sp.Float(hi, 30))
    return [a + (b - a) / (1 + mpmath.exp(-g)) for g in grid]


def _positive_reparam(theta: sp.Symbol, domain: sp.Interval):
    """An expression in a positive symbol ``t`` that sweeps the interior of ``domain``."""
    t = sp.Symbol("t", positive=True)
    lo, hi = domain.start, domain.end
    if lo == -sp.oo and hi == sp.oo:
        return theta
    if lo == -sp.oo:
        return hi - t
    if hi == sp.oo:
        return lo + t
    return lo + (hi - lo) / (1 + t)


@dataclasses.dataclass(frozen=True, eq=True)
class Family:
    """An exponential family ``h(y) exp(θ T(y) − A(θ))`` declared by data.

    ``log_partition``, ``sufficient_statistic``, ``base_measure`` and the ends of
    ``natural_domain`` may use the parameter symbols; ``parameters`` gives their values.
    The properties ``A``, ``domain``, ``T`` and ``h`` have those values substituted.
    Construction validates everything (convexity of ``A`` on sampled interior points);
    :attr:`convexity` says how convexity is established (whether sympy also proves it, decided on
    first access).
    """

    name: str
    log_partition: sp.Expr
    natural_domain: sp.Interval
    sufficient_statistic: sp.Expr = Y
    base_measure: sp.Expr = sp.Integer(1)
    support: str = ""
    description: str = ""
    theta: sp.Symbol = sp.Symbol("theta", real=True)
    parameters: Mapping[str, sp.Expr] = dataclasses.field(default_factory=dict)
    source: str = dataclasses.field(default=OBJECT_SOURCE, compare=False)
    _convexity_pending: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "parameters", dict(self.parameters))
        object.__setattr__(self, "_convexity_pending", _DEFER_CONVEXITY.get())
        with limited(f"validating the family '{str(self.name)[:64]}' ({self.source})"):
            _validate(self, convexity=not self._convexity_pending)

    def check_convexity(self) -> None:
        """Run the sampled convexity check if it was deferred (:func:`convexity_deferred`); a
        no-op once it has passed. Raises :class:`~dekc.errors.FamilyError` where ``A`` is not
        finite, real and convex at the sampled interior points."""
        if self._convexity_pending:
            with limited(f"validating the family '{self.name}' ({self.source})"):
                _check_convexity(self.A, self.theta, self.domain, self.source)
            object.__setattr__(self, "_convexity_pending", False)

    @functools.cached_property
    def convexity(self) -> str:
        """How convexity of ``A`` on ``Θ`` is established: ``"symbolic ..."`` when sympy proves
        ``A'' ≥ 0`` there, else ``"sampled ..."`` (the check every family passes at construction)."""
        with limited(f"proving convexity of the family '{self.name}'"):
            return _convexity_proof(self.A, self.theta, self.domain)

    def __hash__(self):
        return hash((self.name, self.log_partition, tuple(sorted(self.parameters.items()))))

    # -- values with the parameters substituted ------------------------------------------------
    @property
    def parameter_symbols(self) -> dict[str, sp.Symbol]:
        return {name: sp.Symbol(name, real=True) for name in self.parameters}

    def _subs(self, expr):
        symbols = self.parameter_symbols
        return expr.subs({symbols[k]: v for k, v in self.parameters.items()})

    @property
    def A(self) -> sp.Expr:
        """The log-partition function ``A(θ)`` in :attr:`theta`."""
        return self._subs(self.log_partition)

    @property
    def domain(self) -> sp.Interval:
        """The natural domain ``Θ``."""
        return self._subs(self.natural_domain)

    @property
    def domain_text(self) -> str:
        return interval_text(self.domain)

    @property
    def T(self) -> sp.Expr:
        return self._subs(self.sufficient_statistic)

    @property
    def h(self) -> sp.Expr:
        return self._subs(self.base_measure)

    @property
    def canonical_sigma(self) -> sp.Expr:
        """``A'(η)``: the activation of the canonical link ``R = id`` (the mean function)."""
        return sp.diff(self.A, self.theta).subs(self.theta, ETA)

    @property
    def canonical_link_admissible(self) -> bool:
        """Whether ``R = id`` maps the real line into ``Θ`` (only when ``Θ = ℝ``)."""
        return self.domain == sp.Interval(-sp.oo, sp.oo)

    def with_parameters(self, **values: str | float) -> Family:
        """The same family with some parameter values changed (validated again)."""
        unknown = set(values) - set(self.parameters)
        if unknown:
            have = ", ".join(self.parameters) or "none"
            raise FamilyError(
                self.source,
                "parameters",
                f"unknown parameter(s) {sorted(unknown)} for family '{self.name}'; it has: {have}",
            )
        new = dict(self.parameters)
        for key, value in values.items():
            new[key] = _parameter_value(value, self.source, f"parameters.{key}")
        return dataclasses.replace(self, parameters=new)

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        return f"Family({self.name}{', ' + params if params else ''}: A({self.theta}) = {self.A} on {self.domain_text})"


def _parameter_value(value, source: str, field: str) -> sp.Expr:
    if isinstance(value, bool) or not isinstance(value, (int, float, sp.Number)):
        raise FamilyError(source, field, f"expected a real number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FamilyError(source, field, f"expected a finite number, got {value!r}")
        return sp.Rational(repr(value))
    number = value if isinstance(value, sp.Number) else sp.Integer(value)
    if not number.is_finite or not number.is_real:
        raise FamilyError(source, field, f"expected a finite real number, got {value!r}")
    return number


def _validate(fam: Family, convexity: bool = True) -> None:
    """Check a Family's fields (and, unless deferred, convexity of ``A`` on sampled interior points)."""
    src = fam.source
    if not isinstance(fam.name, str) or not _NAME.match(fam.name):
        raise FamilyError(
            src,
            "name",
            f"{fam.name!r} is not a valid name: use lower-case letters, digits and '_', starting with a letter",
        )
    if not isinstance(fam.theta, sp.Symbol) or fam.theta.name in _RESERVED:
        raise FamilyError(
            src, "natural_parameter", f"{fam.theta!r} must be a symbol not named y, eta, a constant or a function"
        )
    for key, value in fam.parameters.items():
        if not isinstance(key, str) or not _IDENT.match(key) or key in _RESERVED or key == fam.theta.name:
            raise FamilyError(
                src,
                f"parameters.{key}",
                "parameter names must be identifiers other than y, eta, the natural parameter, constants and function names",
            )
        fam.parameters[key] = _parameter_value(value, src, f"parameters.{key}")  # type: ignore[index]
    params = set(fam.parameter_symbols.values())
    expected = {
        "log_partition": (fam.log_partition, {fam.theta} | params),
        "sufficient_statistic": (fam.sufficient_statistic, {Y} | params),
        "base_measure": (fam.base_measure, {Y} | params),
    }
    for field, (expr, allowed) in expected.items():
        if not isinstance(expr, sp.Expr):
            raise FamilyError(src, field, f"expected a sympy expression, got {type(expr).__name__}")
        extra = {s.name for s in expr.free_symbols} - {s.name for s in allowed}
        if extra:
            raise FamilyError(src, field, f"uses undeclared symbol(s) {sorted(extra)}; declare them under [parameters]")
    if not isinstance(fam.support, str) or not isinstance(fam.description, str):
        raise FamilyError(src, "support", "support and description must be strings")
    if not fam.sufficient_statistic.has(Y):
        raise FamilyError(src, "sufficient_statistic", "T(y) must depend on y")
    if not fam.log_partition.has(fam.theta):
        raise FamilyError(src, "log_partition", f"A must depend on the natural parameter {fam.theta}")
    kinked = [type(e).__name__ for e in sp.preorder_traversal(fam.log_partition) if isinstance(e, _NOT_ANALYTIC)]
    if kinked:
        raise FamilyError(
            src,
            "log_partition",
            f"A uses {', '.join(sorted(set(kinked)))}, but the log-partition "
            "function of an exponential family is analytic inside its natural domain; write A without "
            "kinks or steps and restrict natural_domain instead",
        )

    if not isinstance(fam.natural_domain, sp.Interval):
        raise FamilyError(src, "natural_domain", f"expected a sympy Interval, got {fam.natural_domain!r}")
    domain = fam.domain
    if (
        not isinstance(domain, sp.Interval)
        or domain.measure == 0
        or not all(e.is_extended_real for e in (domain.start, domain.end))
    ):
        raise FamilyError(
            src, "natural_domain", f"{fam.natural_domain} is not a non-empty real interval with these parameters"
        )
    if not domain.start < domain.end:
        raise FamilyError(src, "natural_domain", f"lower end {domain.start} must be below upper end {domain.end}")
    if convexity:
        _check_convexity(fam.A, fam.theta, domain, src)


@contextlib.contextmanager
def convexity_deferred():
    """Families built inside this block skip the sampled convexity check (about 50 ms in a fresh
    process) until :meth:`Family.check_convexity` runs it; every other check runs at once. For
    callers that find evidence of the check elsewhere: a sealed cached kernel, whose hash covers
    ``A`` and ``Θ``, was generated only after its family passed. Built-in families loaded this way
    are not registered, so no other caller receives an unchecked one."""
    token = _DEFER_CONVEXITY.set(True)
    try:
        yield
    finally:
        _DEFER_CONVEXITY.reset(token)


def _check_convexity(A: sp.Expr, theta: sp.Symbol, domain: sp.Interval, src: str) -> None:
    """``A'' ≥ 0`` on ``Θ`` at sampled interior points (and ``A`` finite and real there)."""
    # Differentiating in a symbol without assumptions skips sympy's real-number reasoning (half
    # the cost); the derivative is the same function.
    plain = sp.Dummy("theta")
    values_at = to_mpmath(sp.diff(A.xreplace({theta: plain}), plain, 2), plain)
    a_at = to_mpmath(A, theta)
    samples = _interior_samples(domain)
    with mpmath.workdps(30):
        curvature = []
        for point in samples:
            try:
                a_value, d2_value = a_at(point), values_at(point)
            except (ValueError, ZeroDivisionError, OverflowError, TypeError):
                a_value = d2_value = mpmath.nan
            if not (mpmath.isfinite(a_value) and mpmath.isfinite(d2_value)) or mpmath.im(a_value) != 0:
                raise FamilyError(
                    src,
                    "log_partition",
                    f"A is not finite and real at θ = {mpmath.nstr(point, 8)} inside Θ = {interval_text(domain)}; check A or narrow natural_domain",
                )
            curvature.append(mpmath.re(d2_value))
    worst = min(range(len(samples)), key=lambda k: curvature[k])
    if curvature[worst] < -(mpmath.mpf(10) ** -20) * (1 + max(abs(c) for c in curvature)):
        raise FamilyError(
            src,
            "log_partition",
            f"A is not convex on Θ: A''({mpmath.nstr(samples[worst], 8)}) = {mpmath.nstr(curvature[worst], 8)} < 0",
        )
    if max(curvature) <= 0:
        raise FamilyError(src, "log_partition", "A is linear on Θ (A'' = 0): the family would have zero variance")


def _convexity_proof(A: sp.Expr, theta: sp.Symbol, domain: sp.Interval) -> str:
    """Whether sympy proves ``A'' ≥ 0`` on ``Θ`` (as text)."""
    d2 = sp.diff(A, theta, 2)
    samples = _interior_samples(domain)
    try:
        decided = sp.simplify(d2.subs(theta, _positive_reparam(theta, domain))).is_nonnegative
    except (TypeError, ValueError, NotImplementedError, RecursionError):
        decided = None
    if decided:
        return "symbolic (sympy proves A'' >= 0 on the domain)"
    return f"sampled (A'' >= 0 at {len(samples)} interior points; sympy could not decide)"


def family_from_mapping(data: Mapping, source: str = "<mapping>") -> Family:
    """Build a validated Family from the contents of a family file."""
    if not isinstance(data, Mapping):
        raise FamilyError(source, "<top level>", "expected a table of keys")
    allowed = REQUIRED_KEYS + OPTIONAL_KEYS
    for key in data:
        if key not in allowed:
            raise FamilyError(source, key, f"unknown key; allowed keys are {', '.join(allowed)}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise FamilyError(source, key, "required field is missing")
    for key in allowed:
        if key in data and key != "parameters" and not isinstance(data[key], str):
            raise FamilyError(source, key, f"expected a string, got {type(data[key]).__name__}")

    raw_params = data.get("parameters", {})
    if not isinstance(raw_params, Mapping):
        raise FamilyError(source, "parameters", "expected a table such as [parameters] n = 1")
    theta_name = data.get("natural_parameter", "theta").strip()
    if not _IDENT.match(theta_name) or theta_name in _RESERVED:
        raise FamilyError(
            source,
            "natural_parameter",
            f"{theta_name!r} must be an identifier other than y, eta, constants and function names",
        )
    theta = sp.Symbol(theta_name, real=True)
    values = {}
    for key, value in raw_params.items():
        if not _IDENT.match(key) or key in _RESERVED or key == theta_name:
            raise FamilyError(
                source,
                f"parameters.{key}",
                "parameter names must be identifiers other than y, eta, the natural parameter, constants and function names",
            )
        values[key] = _parameter_value(value, source, f"parameters.{key}")
    psyms = {k: sp.Symbol(k, real=True) for k in values}

    def parse(field, symbols):
        try:
            return parse_expression(data[field], symbols, what=field)
        except ExpressionError as exc:
            raise FamilyError(source, field, str(exc)) from None

    return Family(
        name=data["name"].strip(),
        log_partition=parse("log_partition", {theta_name: theta, **psyms}),
        natural_domain=parse_interval(data["natural_domain"], psyms, source=source, field="natural_domain"),
        sufficient_statistic=parse("sufficient_statistic", {"y": Y, **psyms}),
        base_measure=parse("base_measure", {"y": Y, **psyms}) if "base_measure" in data else sp.Integer(1),
        support=data["support"].strip(),
        description=data.get("description", "").strip(),
        theta=theta,
        parameters=values,
        source=source,
    )


def load_family_file(path) -> Family:
    """Read and validate one TOML family file (never executed)."""
    path = Path(path)
    source = str(path)
    if path.suffix != ".toml":
        raise FamilyError(source, "<file>", "family files are TOML: the name must end in .toml")
    if not path.is_file():
        raise FamilyError(source, "<file>", "no such file; give the path of a .toml family file")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise FamilyError(source, "<file>", f"larger than {_MAX_FILE_BYTES} bytes; a family file is a few lines")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FamilyError(source, "<file>", f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise FamilyError(source, "<file>", f"cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FamilyError(source, "<toml>", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise FamilyError(
            source, "<toml>", "nested too deeply; a family file is a flat table with an optional [parameters] table"
        ) from None
    return family_from_mapping(data, source)


# -- the registry --------------------------------------------------------------------------------

_registry: dict[str, Family] = {}
_lock = threading.RLock()
_builtins_loaded = False
_lazily_loaded: set[str] = set()  # built-in files loaded alone, before the others were needed


def _builtin(name: str) -> Family | None:
    """The built-in family ``name`` loaded from its own file alone, while the other files are not
    needed yet (not when ``DEKC_FAMILY_PATH`` may override it)."""
    if _builtins_loaded or os.environ.get("DEKC_FAMILY_PATH"):
        return None
    path = next((p for p in builtin_family_files() if p.stem == name), None)
    if path is None:
        return None
    fam = load_family_file(path)
    if fam.name != name:
        return None
    if fam._convexity_pending:
        return fam
    _registry[name] = fam
    _lazily_loaded.add(name)
    return fam


def builtin_family_files() -> list[Path]:
    """The TOML files shipped with dekc (the repository's ``families/`` folder).

    Installed, they are the package ``dekc.builtin_families``; from a source tree that is not
    installed, the folder beside the package.
    """
    try:
        packaged = importlib.resources.files("dekc.builtin_families")
        files = sorted(Path(str(p)) for p in packaged.iterdir() if p.name.endswith(".toml"))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        files = []
    return files or sorted((Path(__file__).resolve().parent.parent / "families").glob("*.toml"))


def _ensure_loaded() -> None:
    global _builtins_loaded
    with _lock:
        if _builtins_loaded:
            return
        for path in builtin_family_files():
            if path.stem in _lazily_loaded:
                continue
            fam = load_family_file(path)
            _registry[fam.name] = fam
        for folder in filter(None, os.environ.get("DEKC_FAMILY_PATH", "").split(os.pathsep)):
            for path in sorted(Path(folder).glob("*.toml")):
                fam = load_family_file(path)
                _registry[fam.name] = fam
        _builtins_loaded = True


def families() -> list[str]:
    """Names of the registered families, sorted."""
    _ensure_loaded()
    with _lock:
        return sorted(_registry)


def family(name: str | Family, **parameters: str | float) -> Family:
    """The registered family ``name`` (or a Family, passed through), with optional parameter values."""
    if isinstance(name, Family):
        fam = name
    elif not isinstance(name, str):
        raise InputError(f"family must be a registered name (a string) or a dekc.Family, got {type(name).__name__}")
    else:
        with _lock:
            fam = _registry.get(name) or _builtin(name)
        if fam is None:
            _ensure_loaded()
            with _lock:
                fam = _registry.get(name)
        if fam is None:
            raise UnknownFamilyError(
                f"no family named {name!r}; registered: {', '.join(families())}. "
                "Register one with dekc.register_family('path/to/family.toml')."
            )
    return fam.with_parameters(**parameters) if parameters else fam


def register_family(source: str | os.PathLike | Family, *, replace: bool = False) -> Family:
    """Validate a family (a TOML path or a :class:`Family`) and register it under its name.

    Registering the same declaration twice is harmless; a different family under a taken name
    is refused unless ``replace=True``.
    """
    if isinstance(source, Family):
        fam = dataclasses.replace(source)  # re-runs validation
    elif isinstance(source, (str, os.PathLike)):
        fam = load_family_file(source)
    else:
        raise InputError(f"register_family takes a path to a .toml file or a dekc.Family, got {type(source).__name__}")
    _ensure_loaded()
    with _lock:
        existing = _registry.get(fam.name)
        if existing is not None and existing != fam and not replace:
            raise FamilyError(
                fam.source,
                "name",
                f"a different family named '{fam.name}' is already registered (from {existing.source}); "
                "rename it or pass replace=True",
            )
        _registry[fam.name] = fam
    return fam
