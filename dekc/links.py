"""The link stage: a reparameterisation ``R`` or a target activation ``σ`` -> ``(σ, ρ, R)``.

From ``R``:  ``σ = (A∘R)' = A'(R) R'`` and ``ρ = R'``; ``R`` must map the real line into ``Θ``.

From ``σ``:  ``R = A⁻¹(S)``, ``S(η) = ∫₀^η σ + κ`` (so ``κ = S(0)``). Because ``R`` is non-decreasing and ``A`` convex,
``σ = A'(R) R'`` is ``≤ 0`` while ``R`` is left of the minimiser ``θ*`` of ``A`` and ``≥ 0`` right
of it: ``σ`` may change sign at most once, from negative to positive. Where ``σ ≥ 0``, ``R`` uses
the increasing branch of ``A⁻¹`` (on ``Θ₊ = {A' ≥ 0}``), where ``σ ≤ 0`` the decreasing one; at a
sign change ``S`` must equal ``A(θ*)``, which fixes ``κ``. For single-signed ``σ``, ``κ`` anchors
``S`` at the finite end of ``A(Θ±)`` (so ``R`` approaches the end of ``Θ±``); when that end is
not in ``Θ`` but ``S`` would reach it, ``κ`` is moved one unit inside (a warning says so; pass
``kappa=`` to choose). No valid ``κ`` raises :class:`LinkError`.

Expressions with one kink or sign change (``relu``, ``abs``, ``elu``, ...) are handled branch by
branch: each side is simplified with ``η = b ± t``, ``t > 0`` (``Max``/``Min`` resolved on it), and
reassembled in Heaviside form (a ``Piecewise`` where that form would cancel). A sign change found
numerically within 1e-20 of a kink is that kink. ``∫ softplus`` and ``∫ η·sigmoid`` need the
dilogarithm, ``negli2exp(x) = −Li₂(−e^x)`` (:class:`dekc.expressions.NegLi2Exp`).
Every result is checked numerically (mpmath, 40 digits) at sample points on ``[−1000, 1000]``.

σ and ρ are returned in forms that are accurate in float64 (see the float64 section below): the
kernel evaluates them at ``|η|`` up to 1e3 and beyond.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import mpmath
import numpy as np
import scipy.special
import sympy as sp
from sympy.codegen.cfunctions import expm1

from .budget import limited
from .errors import DekcWarning, ExpressionError, LinkError
from .expressions import (
    ETA,
    SHORTHANDS,
    NegLi2Exp,
    NormalCdf,
    as_eta_expression,
    kink_points,
    parse_number,
    to_mpmath,
)
from .printer import stabilise
from .registry import Family, interval_text
from .registry import family as lookup_family

_T = sp.Symbol("t", positive=True)
_DPS = 40
_MAGNITUDES = (0, 1e-3, 0.01, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 35, 60, 100, 300, 1000)
#: sample points in η used by every numerical check (sorted, symmetric)
ETA_SAMPLES = sorted({mpmath.mpf(s) * m for m in _MAGNITUDES for s in (-1, 1)})
_REL_TOL = mpmath.mpf(10) ** -25


@dataclasses.dataclass(frozen=True)
class Link:
    """A link reparameterisation and the activation pair it induces.

    ``sigma = (A∘R)'`` (the activation) and ``rho = R'``, all sympy expressions in ``eta``.
    ``route`` is ``"reparam"`` or ``"activation"``; ``kappa`` is the integration constant of the
    activation route (``None`` for the other); ``notes`` records choices and boundary contacts.
    """

    family: Family
    R: sp.Expr
    sigma: sp.Expr
    rho: sp.Expr
    route: str
    kappa: sp.Expr | None = None
    notes: tuple[str, ...] = ()

    @property
    def domain_check(self) -> str:
        """How ``R(η) ∈ Θ`` was established: a sympy proof, or the sampled check alone."""
        if _proves_inside(self.R, self.family.domain):
            return "proved by sympy"
        return f"checked at {len(ETA_SAMPLES)} points in [-1000, 1000] (sympy could not prove it)"

    def __str__(self) -> str:
        lines = [f"family     {self.family.name}", f"route      {self.route}"]
        for label, expr in (("R", self.R), ("sigma", self.sigma), ("rho", self.rho)):
            name = known_name(expr)
            lines.append(f"{label:<10} {expr}" + (f"   (= {name})" if name else ""))
        if self.kappa is not None:
            lines.append(f"kappa      {self.kappa}   (S(0) = kappa)")
        lines.append(f"R in Theta {self.domain_check}")
        lines.extend(f"note       {note}" for note in self.notes)
        return "\n".join(lines)


# -- numerical helpers -------------------------------------------------------------------------


def _evaluator(expr: sp.Expr, symbol: sp.Symbol = ETA) -> Callable:
    """An mpmath function of one variable; values lost to cancellation are redone at 12x, then 100x precision."""
    fn = to_mpmath(expr, symbol)

    def attempt(x):
        try:
            return mpmath.mpmathify(fn(x))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            return mpmath.nan

    def value(x):
        result = attempt(x)
        for factor in (12, 100):
            if _is_finite_real(result):
                break
            with mpmath.workdps(factor * mpmath.mp.dps):
                result = attempt(x)
        return result

    return value


def _is_finite_real(v) -> bool:
    return bool(mpmath.isfinite(v)) and mpmath.im(v) == 0


def _close(a, b) -> bool:
    return abs(a - b) <= _REL_TOL * (1 + abs(a) + abs(b))


def known_name(expr: sp.Expr) -> str | None:
    """The shorthand ``expr`` equals at every sample point, if any (``sigmoid``, ``relu``, ...)."""
    f = _evaluator(expr)
    with mpmath.workdps(_DPS):
        values = [f(x) for x in ETA_SAMPLES if x != 0]
        if not all(_is_finite_real(v) for v in values):
            return None
        for name, candidate in SHORTHANDS.items():
            g = _evaluator(candidate)
            if all(_close(v, g(x)) for v, x in zip(values, (x for x in ETA_SAMPLES if x != 0))):
                return name
    return None


# -- piecewise handling --------------------------------------------------------------------------


def _kinks(expr: sp.Expr) -> set:
    try:
        return kink_points(expr)
    except ExpressionError as exc:
        raise LinkError(str(exc)) from None


def _branch(expr: sp.Expr, point, side: int) -> sp.Expr:
    """``expr`` on one side of ``point`` (side −1 left, +1 right), as a smooth expression in η.

    A ``Max``/``Min`` that sympy cannot decide for ``t > 0`` (``Min(e^t − 1, 0)``) is resolved by
    the sign of its argument differences along the side: the kink analysis found no other
    switching point, so one argument wins on the whole side."""
    local = sp.simplify(expr.subs(ETA, point + side * _T))
    if local.has(sp.Max, sp.Min):
        local = sp.simplify(_resolve_min_max(local))
    return local.subs(_T, side * (ETA - point))


_SIDE_OFFSETS = tuple(mpmath.mpf(10) ** e for e in (-30, -12, -6, -3, -1, 0, 1, 2, 3))


def _resolve_min_max(local: sp.Expr) -> sp.Expr:
    """Replace each ``Max``/``Min`` in ``local`` (an expression in ``t > 0``) by the argument that wins
    at every sample ``t`` from ``1e-30`` to ``1e3``; left alone when the winner changes."""

    def winner(node):
        args = list(node.args)
        if any(a.free_symbols - {_T} for a in args):
            return node
        values = []
        for a in args:
            f = _evaluator(a, _T)
            with mpmath.workdps(_DPS):
                values.append([f(t) for t in _SIDE_OFFSETS])
        if not all(_is_finite_real(v) for row in values for v in row):
            return node
        pick = max if isinstance(node, sp.Max) else min
        chosen = {pick(range(len(args)), key=lambda i, j=j: values[i][j]) for j in range(len(_SIDE_OFFSETS))}
        return args[chosen.pop()] if len(chosen) == 1 else node

    return local.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), winner)


def _finite_beyond(branch: sp.Expr, point, side: int) -> bool:
    """Whether ``branch`` (used on ``side`` of ``point``) is finite and real on the other side."""
    probe = _evaluator(branch)
    with mpmath.workdps(_DPS):
        return all(_is_finite_real(probe(mpmath.mpf(sp.Float(point, _DPS)) - side * d)) for d in {0, abs(side)})


def _limit_at(expr: sp.Expr, point) -> sp.Expr:
    """The limit from the right at ``point``. Where ``expr`` visibly converges there (its values at
    ``point + 10^-12``, ``10^-24`` and ``10^-36`` agree to 1e-10), mpmath's extrapolation at 30
    digits, as a small rational where one lies within 1e-25 of it (sympy's series limit costs
    about a second for tanh-type branches); otherwise sympy's, checked against a value next to the
    point."""
    probe = _evaluator(expr)

    def numeric():
        with mpmath.workdps(_DPS):
            return sp.Float(mpmath.limit(probe, mpmath.mpf(sp.Float(point, _DPS))), 30)

    with mpmath.workdps(3 * _DPS):
        origin = mpmath.mpf(sp.Float(point, 3 * _DPS))
        try:
            near = [probe(origin + mpmath.mpf(10) ** -k) for k in (12, 24, 36)]
        except (ValueError, ZeroDivisionError, TypeError, OverflowError):
            near = []
        converges = (
            len(near) == 3
            and all(_is_finite_real(v) for v in near)
            and abs(near[0] - near[2]) <= mpmath.mpf(10) ** -10 * (1 + abs(near[2]))
        )
    if converges:
        value = numeric()
        if _is_finite_real(mpmath.mpf(value)):
            exact = sp.nsimplify(value, rational=True, tolerance=1e-25)
            return exact if exact.is_Rational and exact.q < 10**6 and abs(exact - value) < 1e-25 else value
    try:
        value = _limit(expr, ETA, point, "+")
    except LinkError:
        return numeric()
    if not value.is_finite:
        return value
    with mpmath.workdps(3 * _DPS):  # sympy has no series rules for some functions (negli2exp): check it
        near = probe(mpmath.mpf(sp.Float(point, 3 * _DPS)) + mpmath.mpf(10) ** -30)
        exact = mpmath.mpf(sp.Float(value, 3 * _DPS))
        if _is_finite_real(near) and abs(exact - near) > mpmath.mpf(10) ** -20 * (1 + abs(near)):
            return numeric()
    return value


def _differ(a: sp.Expr, b: sp.Expr, point) -> bool:
    """Whether ``a`` and ``b`` differ at a few finite sample points right of ``point`` (then
    ``simplify(a - b) == 0``, a slow test, need not be asked)."""
    fa, fb = _evaluator(a), _evaluator(b)
    with mpmath.workdps(_DPS):
        origin = mpmath.mpf(sp.Float(point, _DPS))
        for x in (mpmath.mpf("0.3"), mpmath.mpf("1.7"), mpmath.mpf(5)):
            try:
                va, vb = fa(origin + x), fb(origin + x)
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                continue
            if _is_finite_real(va) and _is_finite_real(vb) and not _close(va, vb):
                return True
    return False


def _assemble(left: sp.Expr, right: sp.Expr, point) -> sp.Expr:
    """Join two branches at ``point`` in Heaviside form (``Max`` for a ReLU shape)."""
    if not _differ(left, right, point) and sp.simplify(left - right) == 0:
        return sp.simplify(right)
    if not (_finite_beyond(left, point, -1) and _finite_beyond(right, point, +1)):
        # e.g. sqrt(η) right of 0: sqrt(η)·H(η) would be nan·0 in floating point
        pieces = [(left, ETA < point)]
        if not _finite_beyond(right, point, 0):  # 0/0 at the point itself: use the limit
            pieces.append((_limit_at(right, point), sp.Eq(ETA, point)))
        return sp.Piecewise(*pieces, (right, True))
    step = sp.Heaviside(ETA - point)
    if left == 0:
        if not _differ(right, ETA - point, point) and sp.simplify(right - (ETA - point)) == 0:
            return sp.Max(ETA - point, 0)
        return right * step
    joined = left + sp.simplify(right - left) * step
    if not _matches_branches(joined, left, right, point):
        # e.g. ELU's left branch −√(2(e^η − 1 − η)) is huge on the right: left + (right − left)·H cancels
        return sp.Piecewise((left, ETA < point), (right, True))
    return joined


def _matches_branches(joined: sp.Expr, left: sp.Expr, right: sp.Expr, point) -> bool:
    """Whether ``joined`` equals ``left`` left of ``point`` and ``right`` right of it at the sample points."""
    at = _evaluator(joined)
    with mpmath.workdps(_DPS):
        origin = mpmath.mpf(sp.Float(point, _DPS))
        for x in ETA_SAMPLES:
            if x == 0:
                continue
            branch = _evaluator(left if x < 0 else right)
            expected = branch(origin + x)
            if _is_finite_real(expected) and not _close(at(origin + x), expected):
                return False
    return True


def tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify branch by branch around a single kink; otherwise plain ``simplify``."""
    points = _kinks(expr)
    if len(points) != 1:
        return sp.simplify(expr) if sp.count_ops(expr) < 400 else expr
    (point,) = points
    return _assemble(_branch(expr, point, -1), _branch(expr, point, +1), point)


# -- float64 forms -------------------------------------------------------------------------------
#
# The kernel evaluates σ and ρ in float64 at |η| up to 1e3 and beyond. A form that is exact in
# mpmath can still overflow (e^{η²/2}/(e^{η²/2} − 1)), cancel (e^η − 1 near 0) or divide 0 by 0
# (at a sign change; in a far tail where σ and A'(R) both underflow). Each link keeps the form
# sympy gives where it is accurate in float64 at FLOAT_PROBE_OFFSETS, measured against 60-digit
# values, and otherwise takes the first rewritten form that is: expm1/Φ/logistic groupings,
# ρ = σ/A'(A⁻¹(S)) with S expanded so that no growing exponential is left, Chebyshev
# interpolants of ρ within 1/4 (1/2, 1) of a sign change, and the leading term c·e^{αη} of ρ in a
# far tail.

#: |η − breakpoint| at which float64 forms are measured against 60-digit values
FLOAT_PROBE_OFFSETS = tuple(
    sorted({s * m for m in (1e-8, 1e-3, 0.1, 0.3, 1, 3, 10, 30, 100, 1e3, 1e4) for s in (-1, 1)})
)
#: largest relative error of a float64 form that counts as accurate
FLOAT_REL_TOL = 1e-13
_TINY = 1e-290  # below this a reference value is compared in absolute terms (float64 underflow)


def _float_functions() -> dict:
    """Float64 (numpy/scipy) meanings of the functions the printer emits, by sympy name."""
    neg_li2 = np.vectorize(lambda x: float(mpmath.mpf(sp.Float(NegLi2Exp(sp.Float(float(x), 30)).evalf(30)))))
    return {
        "Heaviside": lambda x, *_: np.heaviside(x, 0.5),
        "erf": scipy.special.erf,
        "erfc": scipy.special.erfc,
        "NormalCdf": scipy.special.ndtr,
        "NegLi2Exp": neg_li2,
        "_Expit": scipy.special.expit,
        "_Softplus": lambda x: np.logaddexp(0.0, x),
        "_Log1p": np.log1p,
        "expm1": np.expm1,
        "log1p": np.log1p,
    }


def float64_values(expr: sp.Expr, points) -> np.ndarray:
    """``expr`` at ``points`` in float64, in the printer's stabilised form (as the kernel evaluates it)."""
    fn = sp.lambdify(ETA, stabilise(expr), modules=[_float_functions(), "numpy"])
    x = np.asarray(points, dtype=float)
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(fn(x), dtype=float), x.shape)


def _probe_points(point) -> list:
    """``FLOAT_PROBE_OFFSETS`` around the breakpoint (0 without one), and the breakpoint itself."""
    origin = 0.0 if point is None else float(point)
    return sorted([origin + d for d in FLOAT_PROBE_OFFSETS] + [origin])


def reference_values(exact, points) -> list:
    """Values of an exact expression (or the first finite one of a list of equal expressions: a
    well-conditioned form first) at ``points``, settled at 60 digits or more (see :func:`_settled`)."""
    forms = [_evaluator(e) for e in (exact if isinstance(exact, (list, tuple)) else [exact])]
    values = []
    with mpmath.workdps(60):
        for x in points:
            value = mpmath.nan
            for form in forms:
                value = _settled(form, mpmath.mpf(x))
                if _is_finite_real(value):
                    break
            values.append(value)
    return values


def float64_error(expr: sp.Expr, exact, points, reference: list | None = None) -> float:
    """Largest relative error of ``expr`` in float64 against ``exact`` (see :func:`reference_values`;
    or the precomputed ``reference``) over ``points``. Points where the exact value is not finite
    are skipped; values below 1e-290 are compared in absolute terms. ``inf`` when ``expr`` is not
    finite where the exact value is."""
    values = float64_values(expr, points)
    reference = reference_values(exact, points) if reference is None else reference
    worst = 0.0
    with mpmath.workdps(60):
        for v, r in zip(values, reference):
            if not _is_finite_real(r):
                continue
            if not np.isfinite(v):
                return float("inf")
            if abs(r) < _TINY:
                worst = max(worst, 0.0 if abs(v) <= 1e-280 else float("inf"))
            else:
                worst = max(worst, float(abs(mpmath.mpf(v) - r) / abs(r)))
    return worst


def _settled(f, x):
    """``f(x)`` at 60, 240 and 1000 digits until two agree to 30 digits (``1 + erf(−21)`` is 0 at 60)."""
    previous = None
    for dps in (60, 240, 1000):
        with mpmath.workdps(dps):
            value = f(x)
        if previous is not None and _is_finite_real(value) and _is_finite_real(previous):
            if abs(value - previous) <= mpmath.mpf(10) ** -30 * abs(value):
                return value
        previous = value
    return previous


def _group_add(add: sp.Add) -> sp.Expr:
    """Within one sum, ``t − t e^x`` → ``−t expm1(x)``, ``t ± t erf(x)`` → ``2t Φ(±√2 x)``,
    ``t ± t tanh(x)`` → ``2t/(1 + e^{∓2x})`` and ``t − t tanh(x)²`` → ``t/cosh(x)²`` for any
    pair of terms (``Φ`` is printed as ``ndtr``, accurate in the lower tail where ``1 + erf`` cancels
    to 0; ``η² erf(x)/4 + η²/4`` has the pair ``t = η²/4``)."""
    terms = list(add.args)
    for i, first in enumerate(terms):
        if not first.has(sp.exp, sp.erf, sp.tanh):
            continue
        for j, second in enumerate(terms):
            if i == j:
                continue
            ratio = first / second
            sign = -1 if ratio.could_extract_minus_sign() else 1
            core = -ratio if sign < 0 else ratio
            if isinstance(core, sp.exp) and sign < 0:
                grouped = -second * expm1(core.args[0])
            elif isinstance(core, sp.erf):
                grouped = 2 * second * NormalCdf(sign * sp.sqrt(2) * core.args[0])
            elif isinstance(core, sp.tanh):  # 1 ± tanh(x) = 2/(1 + e^{∓2x})
                grouped = 2 * second / (1 + sp.exp(-sign * 2 * core.args[0]))
            elif sign < 0 and core.is_Pow and core.exp == 2 and isinstance(core.base, sp.tanh):
                grouped = second / sp.cosh(core.base.args[0]) ** 2  # 1 − tanh² = sech², no cancellation
            else:
                continue
            rest = [t for k, t in enumerate(terms) if k not in (i, j)]
            return _group_add(sp.Add(grouped, *rest)) if rest else grouped
    return add


def numeric_form(expr: sp.Expr, expand: bool = True) -> sp.Expr:
    """``expr`` with ``e^x − 1``, ``1 ± erf``, ``1 ± tanh`` grouped into ``expm1``, ``Φ``, logistic
    terms (logarithms of positive products split), after expanding
    (``expand``: products of exponentials combine, ``e^{η²}·e^{−η²}`` → 1) or as it stands."""
    if expand:
        expr = sp.expand(expr, log=False, power_base=False, power_exp=False)
    grouped = expr.replace(lambda e: isinstance(e, sp.Add), _group_add)
    # log(2/(1 + e^{−2η})) → log 2 − log(1 + e^{−2η}), which the printer takes as logaddexp
    return sp.expand_log(grouped) if grouped.has(sp.log) else grouped


def _chebyshev_piece(expr: sp.Expr, point, side: int, delta) -> sp.Expr | None:
    """A polynomial equal to ``expr`` to 1e-28 (relative to its size) on the side ``side`` of
    ``point`` within ``delta``, in Horner form in ``(η − point)/delta``; ``None`` if none of degree
    below 48 does. ``expr`` is evaluated only inside the interval (Chebyshev nodes), so a ``0/0`` at
    ``point`` itself does no harm."""
    f = _evaluator(expr)
    origin = mpmath.mpf(sp.Float(point, 60))
    for n in (16, 24, 32, 40, 48):
        with mpmath.workdps(60):
            try:
                coefficients, error = mpmath.chebyfit(lambda s: f(origin + side * delta * s), [0, 1], n, error=True)
            except (ValueError, ZeroDivisionError, TypeError):
                return None
            size = max(abs(c) for c in coefficients)
            if not (_is_finite_real(error) and size > 0):
                return None
            if error <= mpmath.mpf(10) ** -28 * size:
                break
    else:
        return None
    s = side * (ETA - point) / sp.Float(delta, 30)
    horner = sp.Float(coefficients[0], 30)
    for c in coefficients[1:]:
        horner = sp.Float(c, 30) + s * horner
    return horner


def _exponential_tail(expr: sp.Expr, direction: int):
    """``(c·e^{αη}, T)`` with ``expr = c·e^{αη}(1 + O(1e-17))`` for ``direction·η > T``, or ``None``.

    In the far tails σ and ``A'(R)`` can both underflow (``softplus(η)/(−Li₂(−e^η))`` at η = −1000
    is 0/0 in float64 although it tends to 1); their ratio is then evaluated by its leading term.
    ``α`` must be a rational with a small denominator, and ``c`` is read off at 60 digits."""
    f = _evaluator(expr)
    for T in (40, 80, 160, 320):
        xs = [mpmath.mpf(direction * T * m) for m in (1, 2, 4)]
        values = [_settled(f, x) for x in xs]
        if not all(_is_finite_real(v) and v != 0 for v in values) or len({mpmath.sign(v) for v in values}) > 1:
            return None
        with mpmath.workdps(60):
            slope = (mpmath.log(abs(values[1])) - mpmath.log(abs(values[0]))) / (xs[1] - xs[0])
            alpha = sp.nsimplify(sp.Float(slope, 30), tolerance=1e-12, rational=True)
            if alpha.q > 12:
                return None
            alpha_mp = mpmath.mpf(alpha.p) / alpha.q
            scaled = [v * mpmath.exp(-alpha_mp * x) for v, x in zip(values, xs)]
            if all(abs(v - scaled[-1]) <= mpmath.mpf(10) ** -17 * abs(scaled[-1]) for v in scaled):
                return sp.Float(scaled[-1], 30) * (sp.exp(alpha * ETA) if alpha != 0 else 1), T
    return None


def _tail_pieces(left_exact: sp.Expr, right_exact: sp.Expr) -> list:
    """``(value, condition)`` pieces from :func:`_exponential_tail` for the tails where one exists."""
    pieces = []
    for exact, direction in ((left_exact, -1), (right_exact, +1)):
        tail = _exponential_tail(exact, direction)
        if tail is not None:
            value, T = tail
            pieces.append((value, ETA < -T if direction < 0 else ETA > T))
    return pieces


def _with_tails(expr: sp.Expr, pieces: list) -> sp.Expr | None:
    """``expr`` with its far tails replaced by ``pieces`` (``None`` without any)."""
    if not pieces:
        return None
    rest = list(expr.args) if isinstance(expr, sp.Piecewise) else [(expr, True)]
    return sp.Piecewise(*pieces, *rest)


def _best(exact: sp.Expr, candidates, points, tried: list | None = None, references=()) -> tuple[sp.Expr, float]:
    """``exact`` if it is accurate in float64 (``FLOAT_REL_TOL``), else the first candidate that is,
    else the most accurate of them all (``exact`` on a tie). Exact values come from ``references``
    (better-conditioned equal forms) and then ``exact``. ``tried`` collects what was measured."""
    reference = reference_values([*references, exact], points)
    best, best_error = exact, float("inf")
    for candidate in (exact, *candidates) if isinstance(candidates, tuple) else _chain(exact, candidates):
        if candidate is None:
            continue
        if tried is not None:
            tried.append(candidate)
        try:
            error = float64_error(candidate, exact, points, reference)
        except (TypeError, ValueError, NameError, ZeroDivisionError, OverflowError):
            continue
        if error <= FLOAT_REL_TOL:
            return candidate, error
        if error < best_error:
            best, best_error = candidate, error
    return best, best_error


def _float_form(exact: sp.Expr, candidates: tuple, points) -> sp.Expr:
    """:func:`_best` of ``exact`` and ``candidates``; if none is accurate, the same with their far
    tails replaced by leading exponential terms (``e^{2η}/(1 + e^η)³`` is ``∞/∞`` at η = 400)."""
    tried: list = []
    form, error = _best(exact, candidates, points, tried)
    if error > FLOAT_REL_TOL:
        pieces = _tail_pieces(exact, exact)
        tailed, tailed_error = _best(exact, [_with_tails(c, pieces) for c in tried[1:] + tried[:1]], points)
        if tailed_error < error:
            form = tailed
    return form


def _chain(first, rest):
    yield first
    yield from rest


# -- checks ----------------------------------------------------------------------------------


def _proves_inside(R: sp.Expr, domain: sp.Interval) -> bool:
    """Whether sympy's assumptions alone show ``R(η) ∈ Θ`` for every real η."""
    facts = [R.is_extended_real and R.is_finite]
    if domain.start != -sp.oo:
        gap = R - domain.start
        facts.append(gap.is_positive if domain.left_open else gap.is_nonnegative)
    if domain.end != sp.oo:
        gap = domain.end - R
        facts.append(gap.is_positive if domain.right_open else gap.is_nonnegative)
    return all(fact is True for fact in facts)


def _check_maps_into_domain(R: sp.Expr, fam: Family, what: str) -> list[str]:
    """``R(η) ∈ Θ`` at every sample point (values near an end recomputed at 12x precision).

    Sampling cannot see an excursion between samples; :func:`_proves_inside` adds a proof where
    sympy can give one, and the Link records which of the two established membership.
    """
    domain = fam.domain
    notes = []
    r_at = _evaluator(R)
    a_at = _evaluator(fam.A.subs(fam.theta, R))
    lo, hi = domain.start, domain.end
    lo_mp = None if lo == -sp.oo else mpmath.mpf(sp.Float(lo, _DPS))
    hi_mp = None if hi == sp.oo else mpmath.mpf(sp.Float(hi, _DPS))

    def outside(r):
        return (lo_mp is not None and r < lo_mp) or (hi_mp is not None and r > hi_mp)

    with mpmath.workdps(_DPS):
        values = []
        for x in ETA_SAMPLES:
            r = r_at(x)
            if not _is_finite_real(r):
                raise LinkError(
                    f"{what} R = {R} is not finite and real at eta = {mpmath.nstr(x, 6)}; "
                    f"R must map every real eta into Θ = {fam.domain_text}"
                )
            if outside(r):
                with mpmath.workdps(12 * _DPS):  # a value just past the end may be rounding
                    r = r_at(x)
            if outside(r):
                raise LinkError(
                    f"{what} R = {R} leaves Θ = {fam.domain_text} of family '{fam.name}': "
                    f"R({mpmath.nstr(x, 6)}) = {mpmath.nstr(r, 8)}. Choose R with values in Θ, "
                    f"e.g. {_suggestion(fam)}"
                )
            values.append(r)
        for x, r in zip(ETA_SAMPLES, values):
            on_open_end = (domain.left_open and r == lo_mp) or (domain.right_open and r == hi_mp)
            if on_open_end:  # exact contact, or only rounding? decide with exact arithmetic
                on_open_end = R.subs(ETA, sp.Rational(str(x))) in (lo, hi)
            if on_open_end:
                if not _is_finite_real(a_at(x)):
                    raise LinkError(
                        f"{what} R = {R} reaches the open end {mpmath.nstr(r, 8)} of Θ = "
                        f"{fam.domain_text} at eta = {mpmath.nstr(x, 6)}, where A is infinite"
                    )
                note = (
                    f"R reaches the boundary {mpmath.nstr(r, 8)} of the open domain Θ = {fam.domain_text} "
                    f"(A is finite there, so the closure is used)"
                )
                if note not in notes:
                    notes.append(note)
                    warnings.warn(note, DekcWarning, stacklevel=3)
    return notes


def _check_not_constant(R: sp.Expr, rho: sp.Expr) -> None:
    """Refuse a constant ``R``: then ``ρ = R' = 0`` and ``σ = 0``, and every feature is zero."""
    if rho == 0:
        constant = True
    else:
        f = _evaluator(rho)
        with mpmath.workdps(_DPS):
            constant = all(f(x) == 0 for x in ETA_SAMPLES)
    if constant:
        raise LinkError(
            f"reparameterisation R = {R} is constant: rho = R' = 0 and sigma = (A o R)' = 0, so the "
            "features never move from zero and the kernel is 0; choose an R that depends on eta"
        )


def _suggestion(fam: Family) -> str:
    lo, hi = fam.domain.start, fam.domain.end
    if lo == -sp.oo and hi != sp.oo:
        return f"R = {hi} - exp(-eta)"
    if hi == sp.oo and lo != -sp.oo:
        return f"R = {lo} + exp(eta)"
    return "a bounded R such as a scaled sigmoid"


def _check_identities(fam: Family, R, sigma, rho, what: str) -> None:
    """``σ = A'(R)·ρ`` and ``ρ ≥ 0`` where required, at the sample points off the kinks."""
    a_prime = sp.diff(fam.A, fam.theta)
    lhs = _evaluator(sigma)
    rhs = _evaluator(a_prime.subs(fam.theta, R) * rho)
    kinks = {float(p) for e in (R, sigma, rho) for p in _kinks(e)}  # values there are conventions

    def disagree(x):
        """``(σ, A'(R)ρ)`` at ``x`` when they differ at every precision tried, else ``None``: ``R``
        may reach its domain's end through a cancellation (``(1 − e^{−η²/2}) − 1``) that more
        digits resolve."""
        for factor in (1, 4, 16):
            with mpmath.workdps(factor * _DPS):
                left, right = lhs(x), rhs(x)
                if not (_is_finite_real(left) and _is_finite_real(right)):
                    return None
                if abs(left - right) <= mpmath.mpf(10) ** -12 * (1 + abs(left)):
                    return None
        return left, right

    with mpmath.workdps(_DPS):
        for x in (x for x in ETA_SAMPLES if abs(x) <= 20 and float(x) not in kinks):  # far out, rounding swamps it
            wrong = disagree(x)
            if wrong is not None:
                left, right = wrong
                raise LinkError(
                    f"{what}: internal check failed, sigma != A'(R) rho at eta = {mpmath.nstr(x, 6)} "
                    f"({mpmath.nstr(left, 12)} vs {mpmath.nstr(right, 12)})"
                )


# -- the reparameterisation route ------------------------------------------------------------


def _from_reparam(fam: Family, reparam) -> Link:
    R = as_eta_expression(reparam, what="reparam")
    if R.has(sp.Integral):
        raise ExpressionError(f"reparam {R} contains an unevaluated integral")
    notes = _check_maps_into_domain(R, fam, "reparameterisation")
    raw_sigma, raw_rho = sp.diff(fam.A.subs(fam.theta, R), ETA), sp.diff(R, ETA)
    sigma, rho = tidy(raw_sigma), tidy(raw_rho)
    _check_not_constant(R, rho)
    _check_identities(fam, R, sigma, rho, "reparam")
    points = _kinks(R)
    probes = _probe_points(next(iter(points)) if len(points) == 1 else None)
    sigma_out = _float_form(sigma, (numeric_form(raw_sigma, expand=False), numeric_form(sigma)), probes)
    rho_out = _float_form(rho, (numeric_form(raw_rho, expand=False), numeric_form(rho)), probes)
    if (sigma_out, rho_out) != (sigma, rho):
        _check_identities(fam, R, sigma_out, rho_out, "reparam (float64 form)")
        sigma, rho = sigma_out, rho_out
    return Link(fam, tidy(R), sigma, rho, "reparam", None, tuple(notes))


# -- the activation route ----------------------------------------------------------------------


def _dilog_asymptotics(expr, point):
    """``expr`` with ``negli2exp(u)`` replaced by its expansion as η → ``point`` = ±∞ (sympy has no
    limit rules for it): ``e^u − e^{2u}/4 + e^{3u}/9`` where ``u → −∞``, and by the inversion
    ``u²/2 + π²/6 − negli2exp(−u)`` where ``u → +∞``."""
    if not expr.has(NegLi2Exp) or point not in (sp.oo, -sp.oo):
        return expr

    def expansion(node):
        u = node.args[0]
        slope = sp.diff(u, ETA)
        if not (slope.is_number and slope != 0):
            return node
        grows = (slope > 0) == (point == sp.oo)
        v = -u if grows else u
        small = sp.exp(v) - sp.exp(2 * v) / 4 + sp.exp(3 * v) / 9
        return u**2 / 2 + sp.pi**2 / 6 - small if grows else small

    return expr.replace(lambda e: isinstance(e, NegLi2Exp), expansion)


def _limit(expr, x, point, direction="+"):
    expr = _dilog_asymptotics(expr, point)
    value = sp.nan
    if point in (sp.oo, -sp.oo) and expr.has(sp.tanh, sp.cosh, sp.sinh):
        # at ±∞ sympy's series machinery is several times faster on the exponential form
        try:
            value = sp.limit(expr.rewrite(sp.exp), x, point, direction)
        except (NotImplementedError, ValueError, TypeError):
            value = sp.nan
    if value is sp.nan or value.has(sp.Limit, sp.AccumBounds):
        try:
            value = sp.limit(expr, x, point, direction)
        except (NotImplementedError, ValueError, TypeError):
            value = sp.nan
    if value.is_extended_real is False or value.has(sp.AccumBounds, sp.Limit) or value is sp.nan:
        raise LinkError(f"cannot find the limit of {expr} as {x} -> {point}; give R directly with reparam=")
    return value


def _antiderivative(expr: sp.Expr, point) -> sp.Expr:
    """``∫_point^η expr`` for a smooth expression (sympy, else the dilogarithm ansatz of
    :func:`_dilog_primitive` for softplus- and sigmoid-type branches)."""
    primitive = _dilog_primitive(expr)
    if primitive is None:
        primitive = sp.integrate(expr, ETA)
    if primitive.has(sp.Integral):
        raise LinkError(
            f"cannot integrate the activation branch {expr} in closed form (sympy finds no antiderivative, "
            "and it is not a combination of softplus(a*eta + b), eta*sigmoid(a*eta + b) and polynomials "
            "of degree <= 2 that the dilogarithm negli2exp covers); give R directly with reparam="
        )
    at_point = primitive.subs(ETA, point)
    if not at_point.is_finite:
        at_point = _limit(primitive, ETA, point)
    return sp.simplify(primitive - at_point)


def _linear_exponents(expr: sp.Expr) -> list:
    """The distinct ``u = aη + b`` (``a > 0``) with ``exp(±u)`` in ``expr``."""
    found = []
    for node in expr.atoms(sp.exp):
        arg = sp.expand(node.args[0])
        a = arg.coeff(ETA, 1)
        if not a.is_number or a == 0 or (arg - a * ETA).has(ETA):
            continue
        u = arg if a > 0 else -arg
        if u not in found:
            found.append(u)
    return found


def _dilog_primitive(expr: sp.Expr) -> sp.Expr | None:
    """An antiderivative of ``expr`` among ``Σ c·B`` with ``B`` in ``negli2exp(u)``, ``η log(1 + e^u)``,
    ``log(1 + e^u)``, ``η``, ``η²``, ``η³`` (``u = aη + b`` from the exponentials of ``expr``), or ``None``.

    ``∫ log(1 + e^u) dη = −Li₂(−e^u)/a`` (the dilogarithm) and ``∫ η·sigmoid(u)`` follows by parts;
    sympy finds neither. The coefficients are solved at 50 digits at sample points, recognised as
    exact numbers and then checked at other points to 40 digits."""
    if not expr.has(sp.exp) or expr.has(sp.erf, sp.erfc, sp.Heaviside, sp.Piecewise, sp.Max, sp.Min):
        return None
    exponents = _linear_exponents(expr)
    if len(exponents) != 1:
        return None
    (u,) = exponents
    a = u.coeff(ETA, 1)
    softplus_u = sp.log(1 + sp.exp(u))
    basis = [NegLi2Exp(u) / a, ETA * softplus_u / a, softplus_u / a, ETA, ETA**2, ETA**3]
    derivatives = [_evaluator(sp.diff(b, ETA)) for b in basis]
    target = _evaluator(expr)
    fit_points = [mpmath.mpf(x) / 7 for x in (-23, -11, -5, -2, 1, 3, 8, 17, 29)]
    check_points = [mpmath.mpf(x) for x in ("-9.3", "-0.77", "0.41", "2.6", "12.5")]
    with mpmath.workdps(50):
        try:
            matrix = mpmath.matrix([[d(x) for d in derivatives] for x in fit_points])
            rhs = mpmath.matrix([target(x) for x in fit_points])
            solution, residual = mpmath.qr_solve(matrix, rhs)
        except (ZeroDivisionError, ValueError):
            return None
        if not _is_finite_real(residual) or residual > mpmath.mpf(10) ** -40:
            return None
        coefficients = []
        for c in solution:
            if abs(c) < mpmath.mpf(10) ** -40:
                coefficients.append(sp.Integer(0))
                continue
            exact = sp.nsimplify(sp.Float(c, 50), [sp.pi, sp.E], tolerance=1e-35, rational=False)
            coefficients.append(exact)
    primitive = sum((c * b for c, b in zip(coefficients, basis)), sp.Integer(0))
    check = _evaluator(sp.diff(primitive, ETA) - expr)
    scale = _evaluator(expr)
    with mpmath.workdps(_DPS):
        if not all(abs(check(x)) <= mpmath.mpf(10) ** -35 * (1 + abs(scale(x))) for x in check_points):
            return None
    return primitive if primitive.has(NegLi2Exp) else None


def _sign_pattern(sigma: sp.Expr) -> tuple[str, object | None]:
    """``("+", None)``, ``("-", None)`` or ``("-+", η0)``; refuse other patterns."""
    f = _evaluator(sigma)
    with mpmath.workdps(_DPS):
        values = [(x, f(x)) for x in ETA_SAMPLES]
    for x, v in values:
        if not _is_finite_real(v):
            raise LinkError(f"activation {sigma} is not finite and real at eta = {mpmath.nstr(x, 6)}")
    signs = [(x, 1 if v > 0 else -1) for x, v in values if v != 0]
    if not signs:
        raise LinkError(f"activation {sigma} is zero: it gives a constant R and no features")
    changes = [(a, b) for (a, sa), (b, sb) in zip(signs, signs[1:]) if sa != sb]
    if not changes:
        return ("+" if signs[0][1] > 0 else "-"), None
    if len(changes) > 1 or signs[0][1] > 0:
        raise LinkError(
            f"activation {sigma} changes sign {'more than once' if len(changes) > 1 else 'from + to -'}; "
            "with R non-decreasing and A convex, sigma = A'(R) R' must be <= 0 then >= 0 "
            "(at most one sign change, from - to +)"
        )
    a, b = changes[0]
    roots = list(_solve_real(sigma, a, b))
    if not roots:
        raise LinkError(f"cannot locate the zero of {sigma} between {mpmath.nstr(a, 6)} and {mpmath.nstr(b, 6)}")
    return "-+", roots[0]


def _snap(zero, kinks: set):
    """A numerically found zero (``1.8e-48`` for ELU) that agrees with an exact kink to 20 digits is
    that kink: the sign change happens at the switch of formula."""
    if zero is None or zero in kinks:
        return zero
    for kink in kinks:
        if abs(sp.Float(zero, 40) - sp.Float(kink, 40)) <= sp.Float(10) ** -20 * (1 + abs(sp.Float(kink, 40))):
            return kink
    return zero


def _solve_real(expr, a, b):
    """Exact real roots of ``expr`` in ``[a, b]``, else a 30-digit numerical one."""
    try:
        roots = [r for r in sp.solve(sp.Eq(expr, 0), ETA) if r.is_real and a <= r <= b]
    except (NotImplementedError, TypeError):
        roots = []
    if roots:
        return roots
    f = _evaluator(expr)
    with mpmath.workdps(_DPS):
        try:
            root = mpmath.findroot(f, (a, b), solver="anderson")
        except (ValueError, ZeroDivisionError):
            return []
    return [sp.Float(root, 30)]


def _domain_ends(fam: Family):
    """The minimiser ``θ*`` of A inside Θ (or None) and the increasing/decreasing parts of Θ."""
    A, theta, domain = fam.A, fam.theta, fam.domain
    a_prime = sp.diff(A, theta)
    try:
        critical = [r for r in sp.solve(sp.Eq(a_prime, 0), theta) if r.is_real and r in domain]
    except NotImplementedError:
        critical = []
    lo, hi = domain.start, domain.end
    if critical:
        star = critical[0]
        return star, sp.Interval(lo, star, domain.left_open, False), sp.Interval(star, hi, False, domain.right_open)
    probe = _evaluator(a_prime.subs(theta, ETA))
    if lo == -sp.oo:
        inside = sp.Integer(0) if hi == sp.oo else hi - 1
    else:
        inside = lo + 1 if hi == sp.oo else (lo + hi) / 2
    with mpmath.workdps(_DPS):
        increasing = probe(mpmath.mpf(sp.Float(inside, _DPS))) > 0
    return None, (sp.EmptySet if increasing else domain), (domain if increasing else sp.EmptySet)


def _value_at_end(A, theta, end, interval: sp.Interval):
    if (
        end.is_infinite
        or (end == interval.start and interval.left_open)
        or (end == interval.end and interval.right_open)
    ):
        return _limit(A, theta, end, "+" if end == interval.start else "-")
    return A.subs(theta, end)


def _inverse(fam: Family, part: sp.Interval, sample_values) -> sp.Expr:
    """The branch of ``A⁻¹`` on ``part`` as an expression in a symbol ``s``; picked numerically."""
    A, theta = fam.A, fam.theta
    a_lo = _value_at_end(A, theta, part.start, part)
    a_hi = _value_at_end(A, theta, part.end, part)
    low, high = sp.Min(a_lo, a_hi), sp.Max(a_lo, a_hi)
    positive = True if low >= 0 else None
    negative = True if high <= 0 else None
    s = sp.Symbol("s", real=True, positive=positive, negative=negative)
    try:
        candidates = sp.solve(sp.Eq(A, s), theta)
    except NotImplementedError:
        candidates = []
    at_a = _evaluator(A, theta)
    for candidate in candidates:
        inv = _evaluator(candidate, s)
        with mpmath.workdps(_DPS):
            thetas = [inv(value) for value in sample_values]
            if all(
                _is_finite_real(th) and th in _MpInterval(part) and _close(at_a(th), value)
                for th, value in zip(thetas, sample_values)
            ):
                return candidate, s
    raise LinkError(f"cannot invert A = {A} on {interval_text(part)} symbolically; give R directly with reparam=")


class _MpInterval:
    def __init__(self, interval: sp.Interval):
        self.lo = -mpmath.inf if interval.start == -sp.oo else mpmath.mpf(sp.Float(interval.start, _DPS))
        self.hi = mpmath.inf if interval.end == sp.oo else mpmath.mpf(sp.Float(interval.end, _DPS))

    def __contains__(self, x) -> bool:
        return self.lo <= x <= self.hi


def _from_activation(fam: Family, activation, kappa) -> Link:
    sigma = as_eta_expression(activation, what="activation")
    pattern, zero = _sign_pattern(sigma)
    kinks = _kinks(sigma)
    zero = _snap(zero, kinks)
    points: set = kinks | ({zero} if zero is not None else set())
    if len(points) > 1:
        raise LinkError(
            f"activation {sigma} switches formula or sign at several points {sorted(points)}; "
            "the activation route handles at most one; give R directly with reparam="
        )
    point = next(iter(points)) if points else None
    star, minus_part, plus_part = _domain_ends(fam)
    A, theta = fam.A, fam.theta
    notes: list[str] = []

    # S = F + κ with F(point) = 0 on both sides (or a plain antiderivative without a point)
    if point is None:
        F_left = F_right = _antiderivative(sigma, 0)
    else:
        F_left = _antiderivative(_branch(sigma, point, -1), point)
        F_right = _antiderivative(_branch(sigma, point, +1), point)

    if pattern == "-+":
        if star is None:
            raise LinkError(
                f"activation {sigma} changes sign but A = {A} has no minimum inside "
                f"Θ = {fam.domain_text}: no non-decreasing R exists"
            )
        k = A.subs(theta, star) if kappa is None else kappa
        if kappa is not None and sp.simplify(k - A.subs(theta, star)) != 0:
            raise LinkError(f"with a sign change kappa must be A(theta*) = {A.subs(theta, star)}, got {kappa}")
        parts = (minus_part, plus_part)
    else:
        part = plus_part if pattern == "+" else minus_part
        if part is sp.EmptySet:
            raise LinkError(
                f"activation {sigma} is {'non-negative' if pattern == '+' else 'non-positive'} but A = {A} "
                f"is {'decreasing' if pattern == '+' else 'increasing'} on Θ = {fam.domain_text}: "
                "R would have to decrease; use an activation of the other sign"
            )
        # S ranges over [S_min, S_max] + κ; A over [A_min, A_max] on this part of Θ (only this
        # branch needs S at ±∞: sympy's limits there cost about a second for tanh-like σ)
        F_minus_inf = _limit(F_left, ETA, -sp.oo)
        F_plus_inf = _limit(F_right, ETA, sp.oo)
        f_low, f_high = (F_minus_inf, F_plus_inf) if pattern == "+" else (F_plus_inf, F_minus_inf)
        a_start = _value_at_end(A, theta, part.start, part)
        a_end = _value_at_end(A, theta, part.end, part)
        (a_low, low_end), (a_high, high_end) = sorted([(a_start, part.start), (a_end, part.end)], key=lambda p: p[0])
        if kappa is not None:
            k = kappa
        elif a_low.is_finite:
            k = _anchor(fam, sigma, pattern, part, f_low, a_low, low_end, +1, notes)
        elif a_high.is_finite:
            k = _anchor(fam, sigma, pattern, part, f_high, a_high, high_end, -1, notes)
        else:
            k = sp.Integer(0)
            notes.append(
                "kappa is free here (A is unbounded on both sides of its branch): "
                "S(0) = kappa = 0 was chosen; pass kappa= to choose another"
            )
        if (f_low + k) < a_low or (f_high + k) > a_high:
            raise LinkError(
                f"no valid R: S(eta) = ∫sigma + kappa ranges over [{f_low + k}, {f_high + k}], "
                f"outside A(Θ) = [{a_low}, {a_high}] for family '{fam.name}' with kappa = {k}"
            )
        parts = (part, part)

    def s_values(F, side):
        """S = F + κ at moderate η on one side of the breakpoint (both sides: side 0)."""
        probe = _evaluator(F + k)
        origin = point if point is not None else 0
        offsets = [mpmath.mpf(x) for x in (0.25, 1, 3)]
        signs = (-1, 1) if side == 0 else (side,)
        with mpmath.workdps(_DPS):
            values = [probe(origin + sg * d) for sg in signs for d in offsets]
        return [v for v in values if _is_finite_real(v)]

    if point is None:
        candidate, s = _inverse(fam, parts[0], s_values(F_left, 0))
        R = tidy(candidate.subs(s, F_left + k))
        rho = tidy(sp.diff(R, ETA))
    else:
        if pattern == "-+":
            left_inv, s_left = _inverse(fam, parts[0], s_values(F_left, -1))
            right_inv, s_right = _inverse(fam, parts[1], s_values(F_right, +1))
        else:
            left_inv, s_left = right_inv, s_right = _inverse(
                fam, parts[0], s_values(F_left, -1) + s_values(F_right, +1)
            )
        left = _branch(left_inv.subs(s_left, F_left + k), point, -1)
        right = _branch(right_inv.subs(s_right, F_right + k), point, +1)
        R = _assemble(left, right, point)
        # differentiate each smooth branch: the derivative of the joined form carries 0·∞ terms
        rho = _assemble(_branch(sp.diff(left, ETA), point, -1), _branch(sp.diff(right, ETA), point, +1), point)
    notes += _check_maps_into_domain(R, fam, "derived")
    _check_monotone(R)
    _check_identities(fam, R, sigma, rho, "activation")

    # float64 forms of σ and ρ (the exact ones where they are accurate in float64)
    probes = _probe_points(point)
    sigma_out, _ = _best(tidy(sigma), _sigma_candidates(sigma, point), probes, references=[numeric_form(sigma, False)])
    a_prime = sp.diff(A, theta)

    def stable_rho(branch_sigma, F, inv, s):
        g = numeric_form(sp.simplify(a_prime.subs(theta, inv)))
        return numeric_form(branch_sigma, expand=False) / g.subs(s, numeric_form(F + k))

    if point is None:
        sides = (stable_rho(sigma, F_left, candidate, s),) * 2
        references = [sides[0]]
    else:
        sides = (
            stable_rho(_branch(sigma, point, -1), F_left, left_inv, s_left),
            stable_rho(_branch(sigma, point, +1), F_right, right_inv, s_right),
        )
        at_point = rho.subs(ETA, point)  # the exact form carries the limit there (0/0 in the branches)
        middle = [(at_point, sp.Eq(ETA, point))] if at_point.is_number and at_point.is_finite else []
        references = [sp.Piecewise((sides[0], ETA < point), *middle, (sides[1], True))]

    def rho_candidates():
        if point is None:
            yield sides[0]
            return
        yield from _joined(*sides, point)
        if pattern == "-+":  # ρ = σ/A'(R) is 0/0 at the sign change: interpolate next to it
            exact_sides = (sp.diff(left, ETA), sp.diff(right, ETA))
            for delta in (sp.Rational(1, 4), sp.Rational(1, 2), sp.Integer(1)):
                yield _with_near_pieces(sides, exact_sides, point, delta)

    tried: list = []
    rho_out, error = _best(rho, rho_candidates(), probes, tried, references)
    if error > FLOAT_REL_TOL:  # the far tails may still divide an underflowed 0 by 0
        pieces = _tail_pieces(*sides)
        tailed, tailed_error = _best(
            rho, [_with_tails(c, pieces) for c in tried[1:] + tried[:1]], probes, references=references
        )
        if tailed_error < error:
            rho_out = tailed
    if rho_out is not rho:
        _check_identities(fam, R, sigma_out, rho_out, "activation (float64 form)")
    for note in notes:
        if note.startswith("kappa"):
            warnings.warn(note, DekcWarning, stacklevel=3)
    return Link(fam, R, sigma_out, rho_out, "activation", sp.nsimplify(k), tuple(notes))


def _joined(left: sp.Expr, right: sp.Expr, point):
    """Ways to join two float64 branch forms at ``point``: Heaviside forms, then a ``Piecewise``
    (which evaluates only the branch taken)."""
    step = sp.Heaviside(ETA - point)
    if left == 0:
        yield right * step
    elif right == 0:
        yield left * sp.Heaviside(point - ETA)
    else:
        yield left + (right - left) * step
    yield sp.Piecewise((left, ETA < point), (right, True))


def _with_near_pieces(sides, exact_sides, point, delta):
    """``Piecewise`` of the float64 branch forms ``sides`` with Chebyshev interpolants of the exact
    branches within ``delta`` of ``point`` (``None`` if an interpolant fails)."""
    near_left = _chebyshev_piece(exact_sides[0], point, -1, delta)
    near_right = _chebyshev_piece(exact_sides[1], point, +1, delta)
    if near_left is None or near_right is None:
        return None
    return sp.Piecewise(
        (near_left, (ETA > point - delta) & (ETA < point)),
        (near_right, (ETA >= point) & (ETA < point + delta)),
        (sides[0], ETA < point),
        (sides[1], True),
    )


def _sigma_candidates(sigma: sp.Expr, point):
    """Float64 forms of the activation: grouped as given, grouped after tidying, branch by branch."""
    yield numeric_form(sigma, expand=False)
    yield numeric_form(tidy(sigma), expand=False)
    yield numeric_form(sigma)
    if point is not None:
        yield from _joined(numeric_form(_branch(sigma, point, -1)), numeric_form(_branch(sigma, point, +1)), point)


def _anchor(fam, sigma, pattern, part, f_end, a_end, theta_end, inward: int, notes: list) -> sp.Expr:
    """κ that puts the end ``f_end`` of ``∫σ`` on the finite end ``a_end`` of ``A``'s range.

    ``inward`` is +1 for the lower end, −1 for the upper. When ``θ`` at that end is outside Θ
    and ``S`` would reach it at a finite η, κ moves one unit inside.
    """
    word = "below" if inward > 0 else "above"
    if not f_end.is_finite:
        raise LinkError(
            f"no valid R: S(eta) = ∫sigma + kappa is unbounded {word} but A is bounded {word} by "
            f"{a_end} on {interval_text(part)} (family '{fam.name}'); choose an activation whose "
            f"integral is bounded {word}"
        )
    k = a_end - f_end
    if theta_end not in fam.domain and _attains(sigma, pattern, low=inward > 0):
        k += inward
        notes.append(
            f"kappa is not fixed by the family: A({theta_end}) = {a_end} is outside Θ and S would "
            f"reach it, so kappa = {k} (one unit inside); pass kappa= to choose another"
        )
    return k


def _attains(sigma, pattern, low: bool) -> bool:
    """Whether S reaches its infimum (low) or supremum at a finite η: σ vanishes on a half-line."""
    f = _evaluator(sigma)
    far = ETA_SAMPLES[:2] if (pattern == "+") == low else ETA_SAMPLES[-2:]
    with mpmath.workdps(_DPS):
        return all(f(x) == 0 for x in far)


def _check_monotone(R):
    f = _evaluator(R)
    with mpmath.workdps(_DPS):
        values = [f(x) for x in ETA_SAMPLES]
        decreasing = [
            (x0, x1)
            for (x0, v0), (x1, v1) in zip(zip(ETA_SAMPLES, values), zip(ETA_SAMPLES[1:], values[1:]))
            if v1 < v0 - _REL_TOL * (1 + abs(v0))
        ]
    for x0, x1 in decreasing[:1]:
        raise LinkError(f"derived R = {R} decreases between eta = {mpmath.nstr(x0, 6)} and {mpmath.nstr(x1, 6)}")


def link(
    family: str | Family,
    reparam: str | sp.Expr | None = None,
    activation: str | sp.Expr | None = None,
    *,
    kappa: str | float | None = None,
    **parameters: str | float,
) -> Link:
    """Derive ``(σ, ρ, R)`` for ``family`` from a reparameterisation or a target activation.

    ``family`` is a registered name or a :class:`Family`; ``parameters`` override its parameter
    values (e.g. ``k=2`` for gamma). Give exactly one of ``reparam`` and ``activation`` (a
    shorthand such as ``"relu"``, an expression in ``eta``, or a sympy expression). ``kappa``
    overrides the integration constant of the activation route.
    """
    fam = lookup_family(family, **parameters)
    fam.check_convexity()  # a family from a cached kernel's load may still owe it
    if (reparam is None) == (activation is None):
        raise LinkError("give exactly one of reparam= (R, e.g. 'relu') or activation= (sigma, e.g. 'sigmoid')")
    if reparam is not None:
        if kappa is not None:
            raise LinkError("kappa= applies only to the activation route")
        with limited(f"the link of family '{fam.name}' with reparam = {str(reparam)[:80]}"):
            return _from_reparam(fam, reparam)
    kappa = None if kappa is None else parse_number(kappa, what="kappa")
    with limited(f"the link of family '{fam.name}' with activation = {str(activation)[:80]}"):
        return _from_activation(fam, activation, kappa)
