"""A compiled kernel checked against the independent mpmath reference, item by item.

``verify(ker, dps)`` evaluates the generated module and :meth:`Kernel.from_moments`, computes
the same quantities with :mod:`dekc.reference` (nothing there shares a formula with the engine)
and returns a :class:`VerificationReport`: one :class:`VerificationItem` per comparison and a verdict.

**Expectations**, for each pair ``(σ, σ)``, ``(σ, ρ)``, ``(ρ, ρ)`` of the module:

* the pair form ``K(a, b, c)`` at the edges ``c = ±√(ab)``, ``c = 0``, ``a = 0`` and
  ``(a, b) = (1e-4, 1e4)`` with ``c = √(ab)``, which cost the reference one dimension only; at
  ``points`` 2-D covariances, in order: random with ``a = b`` and ``c < 0`` (``a, b``
  log-uniform in ``[0.1, 10]``, correlation uniform: the fixed points below only meet
  ``c ≥ 0``), near full correlation ``c = 0.999√(ab)``, ``(a, b) = (1e-4, 1e4)`` with
  ``c = 0.3√(ab)``, then random; and at the covariances met at the checked fixed points. At full
  correlation the module is handed the float ``fl(√(fl(ab)))`` and the reference the exact
  ``√(ab)``: the correlation a kernel sees at identical inputs. Reference:
  ``reference.expectation`` at ``dps`` digits; at ``c = 0`` the product ``E f(u) · E g(v)`` of
  one-point references (independence: the same number from two 1-D integrals instead of one
  2-D integral).
* ``∂K/∂c`` at the fixed-point covariances and near full correlation (``c = 0.999√(ab)``):
  reference, a central difference of the reference pair form with step ``h = 1e-8√(ab)``, for a
  pair with kinks also at most 1e-7 of the distance ``d = √(ab) − |c|`` to the edge, where
  ``K`` is singular (truncation error ``~(h/d)² ≤ 1e-14``, elsewhere ``h² K'''/6``, below
  1e-15 of the scale); its references carry ``max(dps, 14 + log10(√(ab)/h))`` digits, so the
  difference keeps 14, and the upper one is also the pair-form item there. At covariances
  given explicitly, Price's theorem ``E[f'(u) g'(v)]`` instead where ``f'`` and ``g'`` are
  ordinary functions (no ``δ``): one integral instead of two. Not at ``|c| = √(ab)`` itself:
  for a Heaviside ``ρ``, ``∂K_ρρ/∂c = 1/(2π√(ab − c²))`` is infinite there (and for other pairs
  only one-sided); the point at ``0.999`` tests the approach to it.
* the one-point form ``E[f(u) g(u)]`` at the random variances and at ``a = 1e-4, 1, 1e4``; not
  at ``a = 0``, where it depends on the convention for a jump at 0 (``E[H(u)²] → 1/2`` as
  ``a → 0⁺``, while ``H(0)² = 1/4``).

**Fixed points** of ``ker.from_moments(c, μ, lam)`` with ``c``, ``μ`` the moments of ReLU
features of a few inputs ``x̃ ∈ R²`` (feature scale 1, in closed form:
``c = |x||x'|(sin θ + (π − θ) cos θ)/(2π)``, ``μ = |x|/√(2π)``, computed in mpmath and rounded
once; both sides then solve the same equations). The off-diagonal entries checked are, in
order: a nearly collinear pair (angle 1e-3, equal norms, random direction), an orthogonal pair
with norms in ratio 2 to 4, then pairs with Gaussian random inputs; and every diagonal entry of
the inputs involved.

* Diagonal ``a = D(a)``, ``D`` built from ``reference.one_point``: ``reference.fixed_point``
  (``mpmath.findroot``) started at dekc's value (in the variable ``a/a*``, so the secant's
  first step is relative); the root is then confirmed by its residual ``|D(a) − a|`` and its
  slope ``D'(a) < 1`` (attracting).
* Off-diagonal ``p = G(p)``, ``G`` built from ``reference.expectation`` (the DEKer update, ``μ(x)``
  with ``K_ρσ``). A 2-D reference costs seconds and findroot needs several evaluations of four
  of them, so instead ``G − p`` is evaluated at ``p* ± h`` around dekc's root ``p*``
  (``h = 1e-8√(ab)``, at most half the distance to the edge): a sign change certifies a
  reference root within ``h``, one secant step gives it to ``O(h²)`` (far below the
  tolerance), and the secant slope checks ``G' < 1`` (the attracting root). The same
  eight integrals are the pair-form items at ``p* + h`` and, for each pair where ``h`` is also
  a good difference step (above), the ``∂K/∂c`` items at ``p*``. The reference equation takes
  dekc's diagonal values (checked on their own).

**Errors** are relative to a scale: the Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` for the
pair and one-point forms (an absolute error where it is 0), that scale over ``√(ab)`` for
``∂K/∂c``, and ``√(ab)`` (``a`` on the diagonal) for fixed points. **Tolerances**: closed forms
:data:`~dekc.expectations.CLOSED_FORM_TOLERANCE` (1e-12); quadrature ``max(10·error_bound,
1e-12)`` with the module's ``ERROR_BOUNDS``; fixed points the larger of
:data:`FIXED_POINT_TOLERANCE` (1e-11) and the expectation tolerances carried through the
equation, ``(δG + 1e-13√(ab)) / ((1 − G')√(ab))`` with ``δG = λ⁻²Σ|coefficient|·tol·scale``
(1e-13 is the solver's own residual).

**Cost.** Almost all of it is the two-dimensional reference integrals (pure-Python mpmath): three
per random or scale point, six near full correlation and eight per off-diagonal fixed point;
everything else is one-dimensional. The 2-D integrals run in ``workers`` processes (default: one
per CPU, started with ``spawn``: a script calling :func:`verify` needs the usual
``if __name__ == "__main__":`` guard, or ``workers=1``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import numbers
import os
import time
import warnings
from collections.abc import Callable, Sequence

import mpmath
import numpy as np
import sympy as sp

from . import reference
from .errors import DekcWarning, VerifyError
from .expectations import CLOSED_FORM_TOLERANCE
from .expressions import ETA, as_eta_expression, kink_points
from .kernel import Kernel

#: the smallest fixed-point tolerance, relative to √(ab) (to a on the diagonal)
FIXED_POINT_TOLERANCE = 1e-11
#: the solver's own accuracy: |G(p) − p| ≤ 1e-13·√(ab) at a converged entry (dekc.kernel)
SOLVER_RESIDUAL = 1e-13
#: half-width of differences and brackets, relative to √(ab)
STEP = 1e-8
#: a difference over a step h (relative to √(ab)) loses log10(1/h) digits: its references are
#: computed with at least this many digits more than that (1e-12 checked with two to spare)
DIFFERENCE_DIGITS = 14
PAIRS = (("sigma", "sigma"), ("sigma", "rho"), ("rho", "rho"))
MIN_DPS = 15  # below this the reference cannot resolve a 1e-12 tolerance
_NEAR_EDGE = 0.999
_SCALES = (1e-4, 1e4)


@dataclasses.dataclass(frozen=True)
class VerificationItem:
    """One comparison.

    ``name`` is the generated function (``K_sigma_rho_dc``, ...) or ``fixed_point[i,j]``;
    ``case`` says what the point covers; ``arguments`` are the float inputs both sides got;
    ``value`` is dekc's, ``reference`` the mpmath value; ``rel_error = |value − reference| /
    scale``; ``ok`` is ``rel_error ≤ tolerance`` (and, for fixed points, the root is bracketed
    and attracting); ``note`` adds what else was learnt (slope, residual, a failure).
    """

    name: str
    case: str
    arguments: dict
    value: float
    reference: mpmath.mpf
    scale: float
    rel_error: float
    tolerance: float
    ok: bool
    note: str = ""


@dataclasses.dataclass(frozen=True)
class VerificationReport:
    """The result of :func:`verify`: ``ok`` when every item is within its tolerance.

    ``items`` is a tuple of :class:`VerificationItem`; ``max_rel_error`` the largest ``rel_error`` (each
    item's own tolerance decides ``ok``); ``kernel`` describes the kernel, ``dps`` the
    reference precision, ``seconds`` the run time. ``str(report)`` is an aligned table and a
    summary line.
    """

    kernel: str
    dps: int
    items: tuple
    seconds: float
    ok: bool = dataclasses.field(init=False)
    max_rel_error: float = dataclasses.field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "ok", bool(self.items) and all(item.ok for item in self.items))
        object.__setattr__(self, "max_rel_error", max((item.rel_error for item in self.items), default=0.0))

    @property
    def failures(self) -> tuple:
        """The items that are not ok."""
        return tuple(item for item in self.items if not item.ok)

    @property
    def worst(self):
        """The item closest to (or furthest past) its tolerance, or ``None`` for no items."""
        return max(self.items, key=lambda item: item.rel_error / item.tolerance, default=None)

    def __str__(self) -> str:
        rows = [["item", "case", "arguments", "value", "reference", "rel error", "tol", "ok", "note"]]
        for item in self.items:
            rows.append(
                [
                    item.name,
                    item.case,
                    _format_arguments(item.arguments),
                    f"{item.value:.16g}",
                    mpmath.nstr(item.reference, 17),
                    f"{item.rel_error:.1e}",
                    f"{item.tolerance:.0e}",
                    "ok" if item.ok else "FAIL",
                    item.note,
                ]
            )
        return _table(rows) + "\n" + self.summary()

    def summary(self) -> str:
        """One line: the kernel, the count, the verdict, the worst item and the time."""
        head = f"verify {self.kernel} at {self.dps} digits: {len(self.items)} items"
        worst = self.worst
        where = f" ({worst.name}, {worst.case}, tolerance {worst.tolerance:.0e})" if worst is not None else ""
        if self.ok:
            verdict = f"all within tolerance, max rel error {self.max_rel_error:.1e}{where}"
        elif not self.items:
            verdict = "nothing was checked"
        else:
            names = sorted({item.name for item in self.failures})
            verdict = f"{len(self.failures)} FAIL ({', '.join(names)}); max rel error {self.max_rel_error:.1e}{where}"
        return f"{head}, {verdict}; {self.seconds:.1f} s"


def _format_arguments(arguments: dict) -> str:
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in arguments.items())


def _table(rows: list) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- reference values ------------------------------------------------------------------------------


def _reference_value(key):
    """The reference value of a key (module level: it runs in worker processes)."""
    if key[0] == "expectation":
        _, f, g, a, b, c, dps = key
        return reference.expectation(f, g, a, b, c, dps=dps)
    _, f, g, a, dps = key
    return reference.one_point(f, g, a, dps=dps)


def _two_dimensional(key) -> bool:
    """Whether a reference integral is 2-D (costly): ``a, b > 0`` and ``c² < ab`` (at ``c = ±√(ab)``
    or ``a = 0`` the inner integral is a single evaluation)."""
    if key[0] != "expectation":
        return False
    _, _, _, a, b, c, _ = key
    with mpmath.workdps(60):
        a, b, c = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)
        return bool(a > 0 and b > 0 and c * c < a * b)


class _ReferenceFailure(Exception):
    pass


class _References:
    """Reference values by key (``("expectation", f, g, a, b, c, dps)`` or ``("one_point", f, g, a,
    dps)``), each computed once: the 2-D ones in worker processes, the rest here on demand."""

    def __init__(self):
        self.values: dict = {}
        self.wanted: list = []

    def expectation(self, f, g, a, b, c, dps):
        return self._want(("expectation", f, g, a, b, c, dps))

    def one_point(self, f, g, a, dps):
        return self._want(("one_point", f, g, a, dps))

    def _want(self, key):
        if key not in self.values and key not in self.wanted:
            self.wanted.append(key)
        return key

    def __getitem__(self, key):
        if key not in self.values:
            try:
                self.values[key] = _reference_value(key)
            except Exception as exc:
                self.values[key] = exc
        value = self.values[key]
        if isinstance(value, Exception):
            raise _ReferenceFailure(f"reference failed: {type(value).__name__}: {value}")
        return value

    def compute(self, workers: int, meanwhile: Callable[[], None]) -> None:
        """Compute the wanted 2-D integrals in ``workers`` processes while ``meanwhile()`` runs here."""
        heavy = [key for key in self.wanted if key not in self.values and _two_dimensional(key)]
        if workers <= 1 or len(heavy) <= 1:
            meanwhile()
            return
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(heavy)), mp_context=context)
        broken = None
        try:
            futures = {key: pool.submit(_reference_value, key) for key in heavy}
            meanwhile()
            for key, future in futures.items():
                try:
                    self.values[key] = future.result()
                except concurrent.futures.process.BrokenProcessPool as exc:
                    broken = exc  # left for this process
                except Exception as exc:
                    self.values[key] = exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if broken is not None:
            warnings.warn(
                f"the reference worker processes failed ({broken}); computing in this process instead. "
                "A script that calls verify needs an `if __name__ == '__main__':` guard (or workers=1).",
                DekcWarning,
                stacklevel=3,
            )


# -- the plan --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Resolved:
    """What an item learns from the references."""

    reference: mpmath.mpf
    scale: mpmath.mpf
    ok: bool = True  # conditions besides the error (fixed points: bracketed, attracting)
    note: str = ""
    tolerance: float | None = None  # derived tolerances (fixed points)


@dataclasses.dataclass(frozen=True)
class _Pending:
    """An item whose reference is still to be computed: ``resolve(refs) -> _Resolved``; ``keys``
    are the reference values it reads."""

    name: str
    case: str
    arguments: dict
    value: float
    tolerance: float
    keys: tuple
    resolve: Callable

    def item(self, refs: _References, dps: int) -> VerificationItem:
        with mpmath.workdps(dps + 10):
            try:
                got = self.resolve(refs)
            except _ReferenceFailure as exc:
                return VerificationItem(
                    self.name,
                    self.case,
                    self.arguments,
                    self.value,
                    mpmath.nan,
                    math.nan,
                    math.inf,
                    self.tolerance,
                    False,
                    str(exc),
                )
            scale, note = got.scale, got.note
            if not scale > 0:
                scale, note = mpmath.mpf(1), (note + "; " if note else "") + "scale 0: absolute error"
            tolerance = self.tolerance if got.tolerance is None else got.tolerance
            finite = math.isfinite(self.value)
            rel_error = float(abs(mpmath.mpf(self.value) - got.reference) / scale) if finite else math.inf
            if not finite and _overflows(got.reference) and self.value == float(mpmath.sign(got.reference)) * math.inf:
                # beyond float64 (e.g. E[e^u e^v] = e^{2a} at a = 1e4): ±inf is its correct rounding
                rel_error, note = 0.0, (note + "; " if note else "") + "beyond the float64 range: inf is exact"
            return VerificationItem(
                self.name,
                self.case,
                self.arguments,
                self.value,
                +got.reference,
                float(scale),
                rel_error,
                tolerance,
                bool(rel_error <= tolerance and got.ok),
                note,
            )


def _float(x) -> float:
    return float(np.asarray(x))


def _overflows(x) -> bool:
    """Whether the mpmath number ``x`` lies beyond the largest float64."""
    return bool(mpmath.isfinite(x) and abs(x) > mpmath.mpf(np.finfo(np.float64).max))


@functools.lru_cache(maxsize=64)
def _has_kinks(f: sp.Expr) -> bool:
    return bool(kink_points(f))


def _derivative(f: sp.Expr):
    """``f'`` when it is an ordinary function (no ``δ``), else ``None``."""
    d = sp.diff(f, ETA)
    return None if d.has(sp.DiracDelta, sp.Derivative, sp.Subs) else d


class _Plan:
    """Collects the items of one :func:`verify` run and the reference values they need."""

    def __init__(self, ker, dps: int):
        self.ker = ker
        self.module = ker.module
        self.dps = dps
        self.fns = {"sigma": as_eta_expression(ker.sigma, what="sigma"), "rho": as_eta_expression(ker.rho, what="rho")}
        self.tolerances = {pair: _tolerance(ker, pair) for pair in PAIRS}
        self.refs = _References()
        self.pending: list[_Pending] = []

    def _digits(self, step: float) -> int:
        """Reference digits for a difference over ``step·√(ab)``: ``dps``, or more when the step is small."""
        return max(self.dps, DIFFERENCE_DIGITS + math.ceil(-math.log10(step)))

    def _add(self, name, case, arguments, value, tolerance, keys, resolve):
        self.pending.append(_Pending(name, case, arguments, value, tolerance, tuple(keys), resolve))

    def _function(self, pair, suffix=""):
        name = f"K_{pair[0]}_{pair[1]}{suffix}"
        return name, getattr(self.module, name), self.fns[pair[0]], self.fns[pair[1]]

    def _scale_keys(self, f, g, a, b):
        return self.refs.one_point(f, f, a, self.dps), self.refs.one_point(g, g, b, self.dps)

    @staticmethod
    def _scale(refs, keys):
        """The Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` from its one-point references."""
        return mpmath.sqrt(abs(refs[keys[0]] * refs[keys[1]]))

    # -- expectations -----------------------------------------------------------------------------
    def pair(self, pair, case, a, b, c, c_ref=None, key=None):
        """``K(a, b, c)`` against the reference at ``(a, b, c_ref or c)``, or against ``key``."""
        name, fn, f, g = self._function(pair)
        value = _float(fn(a, b, c))
        if key is not None:
            keys = (key,)
            ref_of = lambda refs: refs[key]
        elif c == 0 and c_ref is None and a > 0 and b > 0:
            keys = (self.refs.one_point(f, 1, a, self.dps), self.refs.one_point(g, 1, b, self.dps))
            ref_of = lambda refs: refs[keys[0]] * refs[keys[1]]
        else:
            keys = (self.refs.expectation(f, g, a, b, c if c_ref is None else c_ref, self.dps),)
            ref_of = lambda refs: refs[keys[0]]
        scale_keys = self._scale_keys(f, g, a, b)
        self._add(
            name,
            case,
            {"a": a, "b": b, "c": c},
            value,
            self.tolerances[pair],
            keys + scale_keys,
            lambda refs: _Resolved(ref_of(refs), self._scale(refs, scale_keys)),
        )

    def _step(self, f, g, a, b, c) -> float:
        """Half-width of a central difference of ``K_fg`` at ``c``: ``1e-8√(ab)``; for a pair with
        kinks also at most 1e-7 of the distance ``d = √(ab) − |c|`` to the edge, where ``K`` is
        singular (``K' ∝ d^{-1/2}`` for a Heaviside pair: the truncation error is then ~(h/d)²)."""
        sab = math.sqrt(a * b)
        distance = sab - abs(c)
        h = STEP * sab
        if _has_kinks(f) or _has_kinks(g):
            h = min(h, 1e-7 * distance)
        return min(h, distance / 2)

    def _bracket(self, f, g, a, b, c, h):
        """Reference keys of ``K_fg`` at ``c − h`` and ``c + h``, and the two points."""
        lo, hi = c - h, c + h
        digits = self._digits(h / math.sqrt(a * b))
        return self.refs.expectation(f, g, a, b, lo, digits), self.refs.expectation(f, g, a, b, hi, digits), lo, hi

    def dc(self, pair, case, a, b, c, bracket=None):
        """``∂K/∂c`` against a central difference of the reference pair form (``bracket`` from
        :meth:`_bracket`, made here when not given) or, when not given and ``f'``, ``g'`` are
        ordinary functions, against Price's theorem ``E[f'(u) g'(v)]``."""
        name, fn, f, g = self._function(pair, "_dc")
        value = _float(fn(a, b, c))
        df, dg = _derivative(f), _derivative(g)
        if bracket is None and df is not None and dg is not None:
            keys = (self.refs.expectation(df, dg, a, b, c, self.dps),)
            ref_of, how = (lambda refs: refs[keys[0]]), "Price"
        else:
            low, high, lo, hi = bracket or self._bracket(f, g, a, b, c, self._step(f, g, a, b, c))
            keys = (low, high)
            ref_of, how = (lambda refs: (refs[high] - refs[low]) / (mpmath.mpf(hi) - mpmath.mpf(lo))), "difference"
        scale_keys = self._scale_keys(f, g, a, b)
        self._add(
            name,
            case,
            {"a": a, "b": b, "c": c},
            value,
            self.tolerances[pair],
            keys + scale_keys,
            lambda refs: _Resolved(
                ref_of(refs), self._scale(refs, scale_keys) / mpmath.sqrt(mpmath.mpf(a) * b), note=how
            ),
        )

    def difference_point(self, case, a, b, c):
        """Every pair's ``∂K/∂c`` at ``(a, b, c)`` by a central difference, and its pair form at the
        difference's upper point (the same reference value)."""
        for pair in PAIRS:
            f, g = (self.fns[k] for k in pair)
            bracket = self._bracket(f, g, a, b, c, self._step(f, g, a, b, c))
            self.pair(pair, case, a, b, bracket[3], key=bracket[1])
            self.dc(pair, case, a, b, c, bracket=bracket)

    def one_point(self, pair, case, a):
        name, fn, f, g = self._function(pair, "_one_point")
        value = _float(fn(a))
        key = self.refs.one_point(f, g, a, self.dps)
        scale_keys = self._scale_keys(f, g, a, a)
        self._add(
            name,
            case,
            {"a": a},
            value,
            self.tolerances[pair],
            (key, *scale_keys),
            lambda refs: _Resolved(refs[key], self._scale(refs, scale_keys)),
        )

    def covariance(self, case, a, b, c, edge=0):
        """Every pair's form at ``(a, b, c)``; ``edge = ±1`` puts ``c`` at ``±√(ab)``."""
        c_ref = None
        if edge:
            c = edge * float(np.sqrt(np.float64(a) * np.float64(b)))  # what a kernel computes as √(ab)
            with mpmath.workdps(self.dps + 20):
                c_ref = edge * mpmath.sqrt(mpmath.mpf(a) * mpmath.mpf(b))
        for pair in PAIRS:
            self.pair(pair, case, a, b, c, c_ref)

    # -- fixed points -----------------------------------------------------------------------------
    def fixed_points(self, X, entries, lam):
        """Diagonal and off-diagonal fixed points of ``from_moments`` for ReLU features of ``X``."""
        c, mu = _relu_moments(X)
        K = np.asarray(self.ker.from_moments(c, mu, lam=lam))
        for i in sorted({k for entry in entries for k in entry[:2]}):
            self._diagonal(i, float(K[i, i]), float(c[i, i]), float(mu[i]), lam)
        for i, j, case in entries:
            self._off_diagonal(i, j, case, *(float(v) for v in (K[i, i], K[j, j], K[i, j], c[i, j], mu[i], mu[j])), lam)

    def _diagonal(self, i, a_star, cd, mu, lam):
        fns, dps = self.fns, self.dps
        tol_ss, tol_sr, tol_rr = (self.tolerances[p] for p in PAIRS)

        def D(a, digits=dps):
            """``λ⁻²[E σ(u)² − 2μ E σ(u)ρ(u) + c E ρ(u)²]``, ``u ~ N(0, a)``."""
            one = lambda f, g: reference.one_point(fns[f], fns[g], a, dps=digits)
            return (one("sigma", "sigma") - 2 * mu * one("sigma", "rho") + cd * one("rho", "rho")) / lam**2

        def resolve(refs):
            if not a_star > 0:
                raise _ReferenceFailure(f"dekc's diagonal value {a_star!r} is not positive")
            try:  # in t = a/a*: the secant's first step (+0.25) is relative
                t = reference.fixed_point(lambda t: D(a_star * t) / a_star, 1, dps=dps, tol=mpmath.mpf(10) ** (2 - dps))
            except (ValueError, ZeroDivisionError) as exc:
                raise _ReferenceFailure(f"reference findroot failed: {exc}") from None
            root = a_star * t
            h = STEP * root
            slope = (D(root + h, self._digits(STEP)) - D(root - h, self._digits(STEP))) / (2 * h)
            residual = abs(D(root) - root) / root
            scales = [
                mpmath.sqrt(
                    reference.one_point(fns[f], fns[f], root, dps=dps)
                    * reference.one_point(fns[g], fns[g], root, dps=dps)
                )
                for f, g in PAIRS
            ]
            spread = (tol_ss * scales[0] + 2 * abs(mu) * tol_sr * scales[1] + abs(cd) * tol_rr * scales[2]) / lam**2
            tolerance = max(FIXED_POINT_TOLERANCE, float((spread + SOLVER_RESIDUAL * root) / (abs(1 - slope) * root)))
            attracting, is_root = slope < 1, residual <= mpmath.mpf(10) ** (4 - dps)
            note = (
                f"D'={mpmath.nstr(slope, 3)}, residual {mpmath.nstr(residual, 2)}"
                + ("" if attracting else ", REPELLING")
                + ("" if is_root else ", NOT A ROOT")
            )
            return _Resolved(root, root, bool(attracting and is_root), note, tolerance)

        self._add(
            f"fixed_point[{i},{i}]",
            "diagonal",
            {"c": cd, "mu": mu, "lam": lam},
            a_star,
            FIXED_POINT_TOLERANCE,
            (),
            resolve,
        )

    def _off_diagonal(self, i, j, case, a, b, p_star, c, mu_x, mu_y, lam):
        """``p = G(p)`` bracketed at ``p* ± h``; the eight integrals double as pair-form and
        ``∂K/∂c`` items at that covariance."""
        sab = math.sqrt(a * b)
        # G = λ⁻²[K_σσ(a, b) − μ(x') K_σρ(a, b) − μ(x) K_σρ(b, a) + c K_ρρ(a, b)]   (K_ρσ(a, b) = K_σρ(b, a))
        terms = (
            (("sigma", "sigma"), (a, b), 1.0),
            (("sigma", "rho"), (a, b), -mu_y),
            (("sigma", "rho"), (b, a), -mu_x),
            (("rho", "rho"), (a, b), c),
        )
        # one bracket for all four terms, wide enough to hold a root that is off by the tolerance;
        # a term's d/dc item comes from it where it is also a good difference step for that pair
        h = min(STEP * sab, (sab - abs(p_star)) / 2)
        points = (p_star - h, p_star + h)
        keys, scale_keys = {}, {}
        for k, (pair, (u, v), _) in enumerate(terms):
            f, g = (self.fns[name] for name in pair)
            bracket = self._bracket(f, g, u, v, p_star, h)
            keys[k] = bracket[:2]
            scale_keys[k] = self._scale_keys(f, g, u, v)
            self.pair(pair, f"fixed point ({i},{j}), p*+h", u, v, points[1], key=bracket[1])
            if self._step(f, g, u, v, p_star) >= h:
                self.dc(pair, f"fixed point ({i},{j})", u, v, p_star, bracket=bracket)

        def resolve(refs):
            lo, hi = (mpmath.mpf(x) for x in points)
            F = [
                sum(coef * refs[keys[k][side]] for k, (_, _, coef) in enumerate(terms)) / lam**2 - x
                for side, x in enumerate((lo, hi))
            ]
            slope_F = (F[1] - F[0]) / (hi - lo)
            root = lo - F[0] / slope_F  # one secant step: exact to O(h²)
            slope = 1 + slope_F
            bracketed, attracting = F[0] * F[1] <= 0, slope < 1
            spread = (
                sum(
                    abs(coef) * self.tolerances[pair] * self._scale(refs, scale_keys[k])
                    for k, (pair, _, coef) in enumerate(terms)
                )
                / lam**2
            )
            tolerance = max(FIXED_POINT_TOLERANCE, float((spread + SOLVER_RESIDUAL * sab) / (abs(1 - slope) * sab)))
            note = (
                f"G'={mpmath.nstr(slope, 3)}"
                + (", bracketed" if bracketed else ", NOT BRACKETED")
                + ("" if attracting else ", REPELLING")
            )
            return _Resolved(root, mpmath.sqrt(mpmath.mpf(a) * b), bool(bracketed and attracting), note, tolerance)

        every = tuple(key for pair in keys.values() for key in pair) + tuple(k for s in scale_keys.values() for k in s)
        self._add(
            f"fixed_point[{i},{j}]",
            case,
            {"a": a, "b": b, "c": c, "mu_x": mu_x, "mu_y": mu_y, "lam": lam},
            p_star,
            FIXED_POINT_TOLERANCE,
            every,
            resolve,
        )

    # -- run --------------------------------------------------------------------------------------
    def items(self, workers: int) -> list:
        """Compute the references (the 2-D ones in worker processes, meanwhile the items that
        need none of them here) and return the items in the order they were planned."""
        done: dict = {}

        def light_items():
            for k, pending in enumerate(self.pending):
                if not any(_two_dimensional(key) for key in pending.keys):
                    done[k] = pending.item(self.refs, self.dps)

        self.refs.compute(workers, light_items)
        return [done[k] if k in done else pending.item(self.refs, self.dps) for k, pending in enumerate(self.pending)]


def _tolerance(ker, pair) -> float:
    key = f"{pair[0]},{pair[1]}"
    if ker.methods[key] == "closed-form":
        return CLOSED_FORM_TOLERANCE
    return max(10 * float(ker.error_bounds[key]), CLOSED_FORM_TOLERANCE)


def _relu_moments(X):
    """``c = |x||x'|(sin θ + (π − θ) cos θ)/(2π)`` and ``μ = |x|/√(2π)`` (ReLU features, scale 1),
    in mpmath and rounded once to float64."""
    n = len(X)
    c, mu = np.empty((n, n)), np.empty(n)
    with mpmath.workdps(40):
        rows = [[mpmath.mpf(float(v)) for v in x] for x in X]
        norms = [mpmath.sqrt(sum(v * v for v in x)) for x in rows]
        for i in range(n):
            mu[i] = float(norms[i] / mpmath.sqrt(2 * mpmath.pi))
            for j in range(n):
                if i == j:
                    c[i, j] = float(norms[i] ** 2 / 2)
                    continue
                cos = sum(u * v for u, v in zip(rows[i], rows[j])) / (norms[i] * norms[j])
                theta = mpmath.acos(max(-1, min(1, cos)))
                c[i, j] = float(norms[i] * norms[j] * (mpmath.sin(theta) + (mpmath.pi - theta) * cos) / (2 * mpmath.pi))
    return c, mu


def _inputs(rng, count: int):
    """Inputs ``x̃ ∈ R²`` and the ``count`` off-diagonal entries to check, ``[(i, j, case), ...]``.

    ``x0`` has a random direction and norm in ``[0.5, 2]``; ``x1`` is ``x0`` turned by 1e-3
    (nearly collinear, same norm); ``x2`` is orthogonal to ``x0`` with 2 to 4 times its norm;
    further inputs are Gaussian, each checked against the one before.
    """
    angle, norm, ratio = rng.uniform(0, 2 * math.pi), 10 ** rng.uniform(-0.3, 0.3), rng.uniform(2, 4)
    direction = lambda t: np.array([math.cos(t), math.sin(t)])
    X = [norm * direction(angle), norm * direction(angle + 1e-3), ratio * norm * direction(angle + math.pi / 2)]
    entries = [(0, 1, "nearly collinear (angle 1e-3)"), (0, 2, f"orthogonal, norms {norm:.2g} and {ratio * norm:.2g}")]
    while len(entries) < count:
        X.append(rng.normal(size=2) * 10 ** rng.uniform(-0.3, 0.3))
        entries.append((len(X) - 2, len(X) - 1, "random input"))
    return np.array(X), entries[:count]


def _random_covariance(rng, same: bool, sign: int):
    a = float(10 ** rng.uniform(-1, 1))
    b = a if same else float(10 ** rng.uniform(-1, 1))
    return a, b, float(sign * rng.uniform(0, 0.95) * math.sqrt(a * b))


def _describe(ker) -> str:
    meta = getattr(ker.module, "METADATA", {})
    family = meta.get("family", getattr(ker, "family", "kernel"))
    if "route" in meta:
        return f"{family} ({meta['route']} {meta['spec']})"
    return str(family)


def _check_arguments(dps, points, fixed_points, lam, workers):
    if isinstance(dps, bool) or not isinstance(dps, (int, np.integer)) or dps < MIN_DPS:
        raise VerifyError(
            f"dps must be an integer >= {MIN_DPS} (the reference must resolve a 1e-12 tolerance), got {dps!r}"
        )
    if isinstance(points, (int, np.integer)) and not isinstance(points, bool):
        if points < 0:
            raise VerifyError(f"points must be a non-negative count or a sequence of (a, b, c), got {points!r}")
    else:
        try:
            triples = [tuple(float(v) for v in p) for p in points]
        except (TypeError, ValueError):
            triples = None
        if triples is None or any(len(t) != 3 for t in triples):
            raise VerifyError("points must be a non-negative count or a sequence of (a, b, c) covariances")
        for a, b, c in triples:
            if not (a >= 0 and b >= 0 and c * c <= a * b):
                raise VerifyError(f"({a}, {b}, {c}) is not a covariance: need a, b >= 0 and c^2 <= ab")
    if isinstance(fixed_points, bool) or not isinstance(fixed_points, (int, np.integer)) or fixed_points < 0:
        raise VerifyError(f"fixed_points must be a non-negative number of off-diagonal entries, got {fixed_points!r}")
    if isinstance(lam, bool) or not (isinstance(lam, numbers.Real) and math.isfinite(lam) and lam > 0):
        raise VerifyError(f"lam must be a positive number, got {lam!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise VerifyError(f"workers must be a positive integer or None, got {workers!r}")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def verify(
    ker: Kernel,
    dps: int = 30,
    *,
    seed: int = 0,
    points: int | Sequence = 3,
    fixed_points: int = 2,
    lam: float = 2.0,
    workers: int | None = None,
) -> VerificationReport:
    """Check every generated expectation and a set of fixed points of ``ker`` against
    :mod:`dekc.reference` at ``dps`` digits (see the module docstring for what, how and the cost).

    ``points``: how many 2-D covariances to check the pair forms at, in order: random with
    ``a = b`` and ``c < 0``; ``c = 0.999√(ab)`` (with ``∂K/∂c``); ``a = 1e-4, b = 1e4``; then
    random. The 1-D edge cases (``c = ±√(ab)``, ``c = 0``, ``a = 0``, one-point forms) are always
    checked; ``points=0`` checks only those (seconds). Or a sequence of ``(a, b, c)`` to check
    (pair form, ``∂K/∂c`` and one-point form) instead of all of these. ``fixed_points``: how many
    off-diagonal entries of ``ker.from_moments(c, mu, lam=lam)`` to check (nearly collinear,
    orthogonal with different norms, then random inputs), with their diagonal entries.
    ``seed`` fixes the random points; ``workers`` the processes for the 2-D reference integrals
    (default: one per CPU; 1 computes everything in this process).

    ``ker`` is a :class:`~dekc.kernel.Kernel` (or any object with its ``module``, ``sigma``,
    ``rho``, ``methods``, ``error_bounds`` and ``from_moments``).
    """
    _check_arguments(dps, points, fixed_points, lam, workers)
    started = time.perf_counter()
    dps = int(dps)
    rng = np.random.default_rng(seed)
    plan = _Plan(ker, dps)
    if isinstance(points, (int, np.integer)):
        ea, eb, _ = _random_covariance(rng, same=False, sign=1)
        small, large = _SCALES
        plan.covariance("c = +sqrt(ab)", ea, eb, 0.0, edge=1)
        plan.covariance("c = -sqrt(ab)", ea, eb, 0.0, edge=-1)
        plan.covariance("c = 0", ea, eb, 0.0)
        plan.covariance("a = 0", 0.0, eb, 0.0)
        plan.covariance("scales 1e-4, 1e4, c = +sqrt(ab)", small, large, 0.0, edge=1)
        variances = {ea, eb, small, 1.0, large}
        for k in range(int(points)):
            if k == 1:
                plan.difference_point(f"near edge, c = {_NEAR_EDGE}*sqrt(ab)", ea, eb, _NEAR_EDGE * math.sqrt(ea * eb))
            elif k == 2:
                plan.covariance("scales 1e-4, 1e4", small, large, 0.3 * math.sqrt(small * large))
            else:
                a, b, c = _random_covariance(rng, same=(k == 0), sign=-1 if k % 2 == 0 else 1)
                plan.covariance("random, a = b" if k == 0 else "random", a, b, c)
                variances.update((a, b))
        variances = sorted(variances)
    else:
        triples = [tuple(float(v) for v in p) for p in points]
        for a, b, c in triples:
            plan.covariance("given", a, b, c)
            if a > 0 and b > 0 and c * c < a * b:
                for pair in PAIRS:
                    plan.dc(pair, "given", a, b, c)
        variances = sorted({v for a, b, _ in triples for v in (a, b) if v > 0})
    for a in variances:
        for pair in PAIRS:
            plan.one_point(pair, "variance", a)
    if fixed_points:
        X, entries = _inputs(rng, int(fixed_points))
        plan.fixed_points(X, entries, float(lam))
    items = plan.items(_cpu_count() if workers is None else workers)
    return VerificationReport(_describe(ker), dps, tuple(items), time.perf_counter() - started)
