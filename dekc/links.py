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

Expressions with one kink or sign change (``relu``, ``abs``, ...) are handled branch by branch:
each side is simplified with ``η = b ± t``, ``t > 0``, and reassembled in Heaviside form.
Every result is checked numerically (mpmath, 40 digits) at sample points on ``[−1000, 1000]``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import mpmath
import sympy as sp

from .budget import limited
from .errors import DekcWarning, ExpressionError, LinkError
from .expressions import ETA, SHORTHANDS, as_eta_expression, kink_points, parse_number, to_mpmath
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
    """``expr`` on one side of ``point`` (side −1 left, +1 right), as a smooth expression in η."""
    local = sp.simplify(expr.subs(ETA, point + side * _T))
    return local.subs(_T, side * (ETA - point))


def _finite_beyond(branch: sp.Expr, point, side: int) -> bool:
    """Whether ``branch`` (used on ``side`` of ``point``) is finite and real on the other side."""
    probe = _evaluator(branch)
    with mpmath.workdps(_DPS):
        return all(_is_finite_real(probe(mpmath.mpf(sp.Float(point, _DPS)) - side * d)) for d in {0, abs(side)})


def _limit_at(expr: sp.Expr, point) -> sp.Expr:
    """The limit from the right at ``point``: sympy's, else a 30-digit mpmath extrapolation."""
    try:
        return _limit(expr, ETA, point, "+")
    except LinkError:
        probe = _evaluator(expr)
        with mpmath.workdps(_DPS):
            return sp.Float(mpmath.limit(probe, mpmath.mpf(sp.Float(point, _DPS))), 30)


def _assemble(left: sp.Expr, right: sp.Expr, point) -> sp.Expr:
    """Join two branches at ``point`` in Heaviside form (``Max`` for a ReLU shape)."""
    if sp.simplify(left - right) == 0:
        return sp.simplify(right)
    if not (_finite_beyond(left, point, -1) and _finite_beyond(right, point, +1)):
        # e.g. sqrt(η) right of 0: sqrt(η)·H(η) would be nan·0 in floating point
        pieces = [(left, ETA < point)]
        if not _finite_beyond(right, point, 0):  # 0/0 at the point itself: use the limit
            pieces.append((_limit_at(right, point), sp.Eq(ETA, point)))
        return sp.Piecewise(*pieces, (right, True))
    step = sp.Heaviside(ETA - point)
    if left == 0:
        if sp.simplify(right - (ETA - point)) == 0:
            return sp.Max(ETA - point, 0)
        return right * step
    return left + sp.simplify(right - left) * step


def tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify branch by branch around a single kink; otherwise plain ``simplify``."""
    points = _kinks(expr)
    if len(points) != 1:
        return sp.simplify(expr) if sp.count_ops(expr) < 400 else expr
    (point,) = points
    return _assemble(_branch(expr, point, -1), _branch(expr, point, +1), point)


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
    sigma = tidy(sp.diff(fam.A.subs(fam.theta, R), ETA))
    rho = tidy(sp.diff(R, ETA))
    _check_not_constant(R, rho)
    _check_identities(fam, R, sigma, rho, "reparam")
    return Link(fam, tidy(R), sigma, rho, "reparam", None, tuple(notes))


# -- the activation route ----------------------------------------------------------------------


def _limit(expr, x, point, direction="+"):
    try:
        value = sp.limit(expr, x, point, direction)
    except (NotImplementedError, ValueError, TypeError):
        value = sp.nan
    if value.is_extended_real is False or value.has(sp.AccumBounds, sp.Limit) or value is sp.nan:
        raise LinkError(f"cannot find the limit of {expr} as {x} -> {point}; give R directly with reparam=")
    return value


def _antiderivative(expr: sp.Expr, point) -> sp.Expr:
    """``∫_point^η expr`` for a smooth expression."""
    primitive = sp.integrate(expr, ETA)
    if primitive.has(sp.Integral):
        raise LinkError(f"sympy cannot integrate the activation branch {expr}; give R directly with reparam=")
    at_point = primitive.subs(ETA, point)
    if not at_point.is_finite:
        at_point = _limit(primitive, ETA, point)
    return sp.simplify(primitive - at_point)


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
    F_minus_inf = _limit(F_left, ETA, -sp.oo)
    F_plus_inf = _limit(F_right, ETA, sp.oo)

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
        # S ranges over [S_min, S_max] + κ; A over [A_min, A_max] on this part of Θ
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
    for note in notes:
        if note.startswith("kappa"):
            warnings.warn(note, DekcWarning, stacklevel=3)
    return Link(fam, R, tidy(sigma), rho, "activation", sp.nsimplify(k), tuple(notes))


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
