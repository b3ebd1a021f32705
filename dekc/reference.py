"""An independent arbitrary-precision path (mpmath) for checking everything dekc computes.

Nothing here uses the engine's formulas: expectations are integrals done by ``mpmath.quad``
in whitened coordinates (``u = √a z₁``, ``v = ρ√b z₁ + √b√(1 − ρ²) z₂``), each axis split at
the kinks of its function (``H(0) = 1/2``), and fixed points are roots found by
``mpmath.findroot``. Inputs are converted exactly (``mpf(float)``) and results returned as
``mpf`` at the requested number of digits (default 30).
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import sympy as sp

from .errors import InputError
from .expressions import ETA, as_eta_expression, kink_points, to_mpmath

DEFAULT_DPS = 30


def _function(spec):
    expr = as_eta_expression(spec)
    return to_mpmath(expr, ETA), sorted(mpmath.mpf(sp.Float(p, 50)) for p in kink_points(expr))


#: where a function's argument is split (besides its kinks): saturation and its exponential tails
_FEATURES = (0.5, 2, 8, 32)
#: multiples of the conditional spread around g's kinks and 0 where the smoothed inner factor bends
_SPREADS = (1, 3, 9)


def _marks(values):
    return [sign * mpmath.mpf(x) for x in values for sign in (-1, 1)]


def _gaussian_integral(h: Callable, points, scale, shift=0):
    """``E[h(Z)]`` where ``h`` evaluates a function at ``shift + scale·z``, ``Z ~ N(0, 1)``;
    split where that argument hits ``points``.

    Gauss–Legendre on ``|z| ≤ 14`` (the mass beyond is below 1e-44) split at the points, where
    the argument passes ``±0.5, ±2, ±8, ±32`` (so saturating functions and their
    exponential tails are resolved at any scale); it converges geometrically on each smooth
    piece.
    """
    cut = mpmath.mpf(14)
    points = list(points) + _marks(_FEATURES)
    splits = {(p - shift) / scale for p in points} if scale != 0 else set()
    nodes = [-cut, *sorted(z for z in splits if abs(z) < cut), cut]
    density = lambda z: mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)
    return mpmath.quad(lambda z: h(z) * density(z), nodes, method="gauss-legendre")


def expectation(f, g, a, b, c, dps: int = DEFAULT_DPS):
    """``E[f(u) g(v)]``, ``(u, v) ~ N(0, [[a, c], [c, b]])``, to about ``dps`` digits."""
    fn, f_kinks = _function(f)
    gn, g_kinks = _function(g)
    with mpmath.workdps(dps + 10):
        a, b, c = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)
        if a < 0 or b < 0 or c * c > a * b * (1 + mpmath.mpf(10) ** (-dps)):
            raise InputError(f"not a covariance: a={a}, b={b}, c={c}; need a, b >= 0 and c^2 <= ab")
        sa, sb = mpmath.sqrt(a), mpmath.sqrt(b)
        rho = mpmath.mpf(0) if a * b == 0 else max(-1, min(1, c / (sa * sb)))
        spread = sb * mpmath.sqrt(1 - rho * rho)

        def inner(z1):
            mean = rho * sb * z1
            if spread == 0:
                return gn(mean)
            return _gaussian_integral(lambda z2: gn(mean + spread * z2), g_kinks, spread, mean)

        # the inner mean ρ√b z₁ crossing g's kinks and features (and, once smoothed by the
        # conditional spread, those ± a few spreads) is where the outer integrand bends
        g_marks = g_kinks + _marks(_FEATURES)
        if spread < abs(rho) * sb / 2:  # the smoothed factor bends within half a unit of z₁
            g_marks += [k + spread * m for k in [*g_kinks, mpmath.mpf(0)] for m in _marks(_SPREADS)]
        outer_points = f_kinks + ([p / (rho * sb) * sa for p in g_marks] if rho * sb != 0 else [])
        result = (
            _gaussian_integral(lambda z1: fn(sa * z1) * inner(z1), outer_points, sa) if sa != 0 else fn(0) * inner(0)
        )
    with mpmath.workdps(dps):
        return +result


def one_point(f, g, a, dps: int = DEFAULT_DPS):
    """``E[f(u) g(u)]``, ``u ~ N(0, a)``."""
    fn, f_kinks = _function(f)
    gn, g_kinks = _function(g)
    with mpmath.workdps(dps + 10):
        sa = mpmath.sqrt(mpmath.mpf(a))
        if sa == 0:
            result = fn(0) * gn(0)
        else:
            result = _gaussian_integral(lambda z: fn(sa * z) * gn(sa * z), f_kinks + g_kinks, sa)
    with mpmath.workdps(dps):
        return +result


def fixed_point(update: Callable, start, dps: int = DEFAULT_DPS, tol=None):
    """A root of ``p = update(p)`` near ``start`` by ``mpmath.findroot`` (secant), to ``dps`` digits."""
    with mpmath.workdps(dps + 10):
        root = mpmath.findroot(lambda p: update(p) - p, mpmath.mpf(start), tol=tol)
    with mpmath.workdps(dps):
        return +root
