"""Quadrature for Gaussian expectations that have no closed form.

Whitened coordinates: ``u = √a z₁``, ``v = ρ√b z₁ + √b√(1 − ρ²) z₂``, ``z ~ N(0, I)``.

* **One-dimensional reduction** when one factor (say ``g``) has a closed conditional
  expectation ``G(μ, σ) = E[g(μ + σZ)]`` (:func:`dekc.gaussian.conditional_expectation`):
  ``K = ∫ φ(z) f(√a z) G(ρ√b z, √b√(1 − ρ²)) dz``.
* Otherwise a **two-dimensional** tensor rule, the inner integral split where ``g`` has kinks.

Each axis is a composite Gauss–Legendre rule on ``|z| ≤ 10``, split at fixed whitened points
``±1.5, ±3, ±5, ±7.5`` (so the Gaussian weight is integrated exactly enough at any variance), at
the kinks of the function and at the feature points ``±1, ±4, ±16`` in the function's own
variable; the outer axis also where the inner mean meets ``g``'s kinks and features and, since the
inner factor is ``g`` smoothed by the conditional spread ``s``, where it meets ``g``'s kinks (and
0) plus ``±s, ±2s, ±4s, ±8s``. The node count per piece is the smallest ``n`` in 16, 24, 32, …, 128
with ``|Q_n − Q_{3n/2}|`` below ``tol/10`` times the Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)``
on probe covariances with ``a, b`` from 1e-4 to 1e4 and ``ρ`` in ``±1, ±0.999, −0.4, 0.3, 0.9``
(a probe that meets the target is not evaluated at larger ``n``); ``error_bound`` is the largest
scaled difference seen. The one-point form gets its own ``n`` the same way at variances
``10^-4 … 10^4``. The search evaluates the rules on the host (:class:`dekc.probes.HostRule`: the
same rules in numpy around compiled integrands), so that no node count compiles a program.
The rules are generated source (:func:`dekc.codegen.quadrature_functions`): the same text runs
here, in kernel modules and under ``jit``/``grad``.
"""

from __future__ import annotations

import functools
import warnings

import mpmath
import numpy as np
import sympy as sp

from . import codegen
from ._jax import jax, jnp
from .errors import DekcWarning, ExpressionError, NoExpectationError, NotClosedForm
from .expressions import ETA, kink_points, to_mpmath
from .gaussian import conditional_expectation
from .probes import HostRule
from .validate import is_traced

#: node counts per piece tried in turn (each checked against :func:`comparison_nodes`, 3n/2)
NODE_COUNTS = (16, 24, 32, 48, 64, 96, 128)
#: the node count is chosen for ``tol / SAFETY`` on the probes, a margin for the covariances between
SAFETY = 10.0
_PROBE_VARIANCE_PAIRS = [(a, b) for a in (1e-4, 1.0, 1e4) for b in (1e-4, 1.0, 1e4)] + [
    (1e-2, 1e-2),
    (1e2, 1e2),
    (1e-2, 1e2),
    (1e2, 1e-2),
]
_PROBE_CORRELATIONS = (-1.0, -0.999, -0.4, 0.3, 0.9, 0.999, 1.0)
#: probe covariances ``(a, b, ρ√(ab))``: variances from 1e-4 to 1e4, correlations up to ``|ρ| = 1``
PROBES = [(a, b, r * np.sqrt(a * b)) for a, b in _PROBE_VARIANCE_PAIRS for r in _PROBE_CORRELATIONS]
_CHUNK = 4096
_ONE_POINT_VARIANCES = tuple(10.0**k for k in range(-4, 5))


def plan(f: sp.Expr, g: sp.Expr) -> codegen.QuadraturePlan:
    """The rule's layout: a one-dimensional reduction when either factor has a closed conditional
    expectation, else a two-dimensional rule with a discontinuous factor outside (where its
    breakpoints do not move with ``c``)."""
    for first, second, swapped in ((f, g, False), (g, f, True)):
        reduction = _reduction(second)
        if reduction is not None:
            return _plan(first, second, reduction, swapped)
    jumpy = lambda e: e.has(sp.Heaviside, sp.sign, sp.Piecewise)
    swapped = jumpy(g) and not jumpy(f)
    return _plan(g, f, None, True) if swapped else _plan(f, g, None, False)


def _plan(f, g, reduction, swapped) -> codegen.QuadraturePlan:
    return codegen.QuadraturePlan(
        f=f, g=g, reduction=reduction, swapped=swapped, f_kinks=_rule_kinks(f), g_kinks=_rule_kinks(g)
    )


# a kernel's three pairs share σ and ρ: what is derived from one function is derived once
@functools.lru_cache(maxsize=128)
def _reduction(expr: sp.Expr) -> sp.Expr | None:
    """``E[expr(μ + sZ)]`` in closed form, or ``None``."""
    try:
        return conditional_expectation(expr)
    except NotClosedForm:
        return None


@functools.lru_cache(maxsize=128)
def _rule_kinks(expr: sp.Expr) -> tuple[float, ...]:
    """The kinks a rule is split at: ``expr``'s, less its smooth joins."""
    return tuple(float(p) for p in sorted(kink_points(expr) - smooth_joins(expr)))


#: one-sided derivatives 0 … 4 at a Piecewise boundary must agree to these (relative) for the
#: boundary not to be a kink. The link stage's near-zero polynomial pieces meet their neighbours
#: with jumps below 1e-28 in value and 2e-17 in the fourth derivative (gaussian + tanh, silu, gelu,
#: erf, elu), its far-tail forms within 1e-18 in every derivative; a genuine kink (ELU's ρ at 0)
#: jumps by 0.3 in its first derivative
_JOIN_TOLERANCES = (1e-16, 1e-14, 1e-12, 1e-10, 1e-8)


def smooth_joins(expr: sp.Expr) -> set:
    """Boundaries of ``expr``'s ``Piecewise`` conditions where the formulas on either side agree
    in value and first four derivatives (to :data:`_JOIN_TOLERANCES`) and no other kink lies: the
    link stage's polynomial pieces near a ``0/0`` point join the exact formula there. A rule need
    not be split at them; splitting would only cost nodes. Derivatives are mpmath's differences
    of each side's formula at 60 digits."""
    if not expr.has(sp.Piecewise):
        return set()
    bare = expr.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: sp.Add(*(branch for branch, _ in e.args)))
    others = kink_points(bare)
    joins = set()
    for point in kink_points(expr) - others:
        if point.is_real and _joins_smoothly(expr, sp.Rational(point) if point.is_Float else point):
            joins.add(point)
    return joins


def _side(expr: sp.Expr, at: sp.Expr) -> sp.Expr | None:
    """``expr`` with each ``Piecewise`` replaced by its branch active at ``at``."""

    def branch(node):
        for value, cond in node.args:
            truth = cond.subs(ETA, at)
            if truth is sp.true:
                return value
            if truth is not sp.false:
                raise ValueError
        raise ValueError

    try:
        return expr.replace(lambda e: isinstance(e, sp.Piecewise), branch)
    except (ValueError, TypeError):
        return None


def _joins_smoothly(expr: sp.Expr, point: sp.Expr) -> bool:
    delta = sp.Rational(1, 10**30)
    left, right = _side(expr, point - delta), _side(expr, point + delta)
    if left is None or right is None:
        return False
    with mpmath.workdps(60):  # mpmath's differences at 60 digits: derivatives to about 1e-40
        at = mpmath.mpf(sp.Float(point, 60))
        try:
            fl, fr = to_mpmath(left, ETA), to_mpmath(right, ETA)
        except ExpressionError:
            return False
        for k, tol in enumerate(_JOIN_TOLERANCES):
            try:
                lv, rv = mpmath.diff(fl, at, k), mpmath.diff(fr, at, k)
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                return False
            if not all(mpmath.isfinite(v) and mpmath.im(v) == 0 for v in (lv, rv)):
                return False
            if abs(lv - rv) > tol * max(1, abs(lv), abs(rv)):
                return False
    return True


def _module(functions: str):
    text = codegen.expectation_module(functions, quadrature=True)
    return codegen.load_module(text, f"dekc_quadrature_{codegen.text_digest(text)[:16]}")


def _load(functions: str, *names: str) -> list:
    module = _module(functions)
    return [jax.jit(getattr(module, name)) for name in names]


class QuadratureExpectation:
    """The numerical path behind :class:`dekc.expectations.GaussianExpectation`.

    Attributes: ``plan`` (:class:`dekc.codegen.QuadraturePlan`), ``n`` (nodes per piece),
    ``error_bound`` (scaled ``|Q_n − Q_{3n/2}|`` on the probes), ``one_point_n`` and
    ``one_point_error`` (the same for the one-point form), ``tol``.
    """

    def __init__(self, f: sp.Expr, g: sp.Expr, *, tol: float = 1e-9):
        self.tol = tol
        self.plan = plan(f, g)
        self.one_point_n: int | None = None
        host = HostRule(self.plan)
        a, b, c = (np.asarray(col) for col in zip(*PROBES))
        var = np.asarray(_ONE_POINT_VARIANCES)
        # Cauchy–Schwarz scales √(E f(u)² E g(v)²) at the probes and at the one-point variances
        sq_f, sq_g = host.second_moments(np.concatenate([a, var]), np.concatenate([b, var]))
        scale = np.maximum(np.sqrt(sq_f * sq_g), 1e-300)

        def pair(n, which):
            return host.pair(n, a[which], b[which], c[which]), host.pair(
                comparison_nodes(n), a[which], b[which], c[which]
            )

        def one_point(n, which):
            return host.one_point(n, var[which]), host.one_point(comparison_nodes(n), var[which])

        first = pair(NODE_COUNTS[0], np.arange(len(a)))
        self.n, self.error_bound = self._select(
            pair, first, self._finite_probes(first[0]), scale[: len(a)], "on the probe covariances"
        )
        first = one_point(NODE_COUNTS[0], np.arange(len(var)))
        finite = np.isfinite(first[0])
        central = (var >= 1e-2) & (var <= 1e2)
        if not finite[central].all():
            raise self._overflow("in its one-point form")
        self.one_point_n, self.one_point_error = self._select(
            one_point, first, finite, scale[len(a) :], "in its one-point form", warn=False
        )

    @property
    def dimension(self) -> int:
        return self.plan.dimension

    @property
    def nodes_per_entry(self) -> int:
        return self.plan.nodes_per_entry(self.n)

    def source(self, prefix: str, title: str = "", n: int | None = None, one_point_n: int | None = None) -> str:
        """Source of ``prefix``, ``prefix_dc``, ``prefix_one_point`` with ``n`` nodes per piece
        (default: the chosen ``n``) and ``one_point_n`` for the one-point form (default: its own
        choice)."""
        n = self.n if n is None else n
        one_point_n = (self.one_point_n or n) if one_point_n is None else one_point_n
        return codegen.quadrature_functions(self.plan, prefix, n, title, one_point_n)

    # -- node count ------------------------------------------------------------------------------
    def _rule(self, n: int):
        """The generated rule with ``n`` nodes (``a`` is the variance of ``f``)."""
        (rule,) = _load(self.source("probe", n=n), "_probe_rule")
        return rule

    def _select(self, values, first, finite, scale, where: str, warn: bool = True):
        """The node-count search shared by the pair and one-point forms.

        ``values(n, which)`` evaluates the rule with ``n`` and with :func:`comparison_nodes` ``(n)``
        nodes per piece at the probes ``which`` (:class:`dekc.probes.HostRule`, on the host);
        ``first`` is that pair at ``NODE_COUNTS[0]`` on every probe. A probe is compared at each node count until it meets the target, and is left
        out of the larger node counts after that (the error of a Gauss–Legendre rule falls with
        ``n``): the chosen ``n`` is the largest any probe needed, and the estimate the largest of
        the probes' last scaled differences. Probes where ``finite`` is False are not checked."""
        target = self.tol / SAFETY
        pending = np.flatnonzero(finite)
        last = np.zeros(len(finite))
        coarse, fine = (np.asarray(v)[pending] for v in first)
        for n in NODE_COUNTS:
            if n != NODE_COUNTS[0]:
                coarse, fine = values(n, pending)
            diff = np.abs(fine - coarse) / scale[pending]
            if not np.isfinite(diff).all():
                raise self._overflow(where)
            last[pending] = diff
            pending = pending[diff > target]
            if pending.size == 0:
                return n, float(last.max())
        estimate = float(last.max())
        if warn:
            warnings.warn(
                f"quadrature for E[{self.plan.f} * {self.plan.g}] reaches only {estimate:.1e} (scaled) on the "
                f"probe covariances, above the requested {self.tol:.0e}",
                DekcWarning,
                stacklevel=5,
            )
        return NODE_COUNTS[-1], estimate

    def _overflow(self, where: str) -> NoExpectationError:
        return NoExpectationError(
            f"E[{self.plan.f} * {self.plan.g}] evaluates to NaN or infinity in float64 {where} "
            "(an intermediate overflows or cancels, e.g. exp(eta**2) against sqrt(exp(eta**2)), or "
            "exp(-eta) against log(1 + exp(eta)) far out); rewrite the expression in a numerically stable form"
        )

    def _finite_probes(self, values):
        """Which probes the rule evaluates finitely. Every probe with both variances in
        ``[1e-2, 1e2]`` must; beyond that range a non-finite value is reported with a warning (the
        expression overflows there in float64) and those probes are left out of the estimate."""
        a, b, _ = (np.asarray(col) for col in zip(*PROBES))
        finite = np.isfinite(np.asarray(values))
        central = (a >= 1e-2) & (a <= 1e2) & (b >= 1e-2) & (b <= 1e2)
        if not finite[central].all():
            raise self._overflow("on the probe covariances")
        if not finite.all():
            bad = sorted({float(v) for v in np.concatenate([a[~finite], b[~finite]]) if not 1e-2 <= v <= 1e2})
            if any(v > 1e2 for v in bad):  # a pair (1e-4, 1e4) overflows through its large variance
                bad = [v for v in bad if v > 1e2]
            warnings.warn(
                f"E[{self.plan.f} * {self.plan.g}] evaluates to NaN or infinity in float64 at variance(s) "
                f"{', '.join(f'{v:g}' for v in bad)} (an intermediate overflows there); its quadrature is "
                "checked and accurate only where it is finite: rewrite the expression in a numerically stable "
                "form to use it at every scale",
                DekcWarning,
                stacklevel=5,
            )
        return finite

    # -- evaluation ------------------------------------------------------------------------------
    def functions(self) -> dict:
        """The jitted ``pair``, ``dc``, ``one_point`` functions (and ``positive``, the pair function
        for ``a, b > 0``), applied in chunks of bounded memory."""
        pair, dc, one_point = _load(self.source("K"), "K", "K_dc", "K_one_point")
        return {
            "pair": _chunked(pair),
            "dc": _chunked(dc),
            "one_point": _chunked(one_point),
            "positive": _chunked(pair),
        }

    def estimate(self, a, b, c):
        """Value with the chosen ``n`` nodes and ``|Q_n − Q_m|`` per point (``m`` = :func:`comparison_nodes`)."""
        a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c)))
        aa, bb = (b, a) if self.plan.swapped else (a, b)
        args = (jnp.asarray(aa), jnp.asarray(bb), jnp.asarray(c))
        value = np.asarray(self._rule(self.n)(*args))
        finer = np.asarray(self._rule(comparison_nodes(self.n))(*args))
        return value, np.abs(finer - value)


def comparison_nodes(n: int) -> int:
    """The node count a rule with ``n`` nodes per piece is checked against: ``3n/2``. Gauss–Legendre
    errors fall geometrically with ``n`` for analytic pieces, so ``|Q_n − Q_{3n/2}|`` estimates the
    error of ``Q_n``; in two dimensions it costs 2.25 times ``Q_n`` where ``Q_2n`` would cost 4."""
    return n + n // 2


def _as_arrays(*args):
    return jnp.broadcast_arrays(*(jnp.asarray(x, dtype=jnp.float64) for x in args))


def _chunked(fn):
    """Apply ``fn`` to flattened broadcast inputs in chunks (bounded memory); JAX tracers pass through."""

    def run(*args):
        if is_traced(*args):
            return fn(*args)
        arrays = _as_arrays(*args)
        shape = arrays[0].shape
        flat = [x.reshape(-1) for x in arrays]
        size = flat[0].shape[0]
        if size <= _CHUNK:
            return fn(*flat).reshape(shape)
        pad = (-size) % _CHUNK
        padded = [jnp.concatenate([x, jnp.full((pad,), x[0])]) for x in flat]
        parts = [fn(*(x[i : i + _CHUNK] for x in padded)) for i in range(0, size + pad, _CHUNK)]
        return jnp.concatenate(parts)[:size].reshape(shape)

    return run
