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
0) plus ``±s, ±2s, ±4s, ±8s``. The node count per piece is the smallest ``n`` in 16, 32, …, 128
with ``|Q_n − Q_2n|`` below ``tol/10`` times the Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` on
probe covariances with ``a, b`` from 1e-4 to 1e4 and ``ρ`` in ``±1, ±0.999, −0.4, 0.3, 0.9``;
``error_bound`` is the largest scaled ``|Q_n − Q_2n|`` seen. The one-point form gets its own
``n`` the same way at variances ``10^-4 … 10^4``.
The rules are generated source (:func:`dekc.codegen.quadrature_functions`): the same text runs
here, in kernel modules and under ``jit``/``grad``.
"""

from __future__ import annotations

import warnings

import numpy as np
import sympy as sp

from . import codegen
from ._jax import jax, jnp
from .errors import DekcWarning, NoExpectationError, NotClosedForm
from .expressions import kink_points
from .gaussian import conditional_expectation
from .validate import is_traced

#: node counts per piece tried in turn (each is compared with twice as many)
NODE_COUNTS = (16, 32, 64, 128)
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
#: probes evaluated together by a two-dimensional rule (bounds the size of its node tensors)
_PROBE_CHUNK = 7
_CHUNK = 4096
_ONE_POINT_VARIANCES = tuple(10.0**k for k in range(-4, 5))


def plan(f: sp.Expr, g: sp.Expr) -> codegen.QuadraturePlan:
    """The rule's layout: a one-dimensional reduction when either factor has a closed conditional
    expectation, else a two-dimensional rule with a discontinuous factor outside (where its
    breakpoints do not move with ``c``)."""
    for first, second, swapped in ((f, g, False), (g, f, True)):
        try:
            reduction = conditional_expectation(second)
        except NotClosedForm:
            continue
        return _plan(first, second, reduction, swapped)
    jumpy = lambda e: e.has(sp.Heaviside, sp.sign, sp.Piecewise)
    swapped = jumpy(g) and not jumpy(f)
    return _plan(g, f, None, True) if swapped else _plan(f, g, None, False)


def _plan(f, g, reduction, swapped) -> codegen.QuadraturePlan:
    return codegen.QuadraturePlan(
        f=f,
        g=g,
        reduction=reduction,
        swapped=swapped,
        f_kinks=tuple(float(p) for p in kink_points(f)),
        g_kinks=tuple(float(p) for p in kink_points(g)),
    )


def _load(functions: str, *names: str) -> list:
    text = codegen.expectation_module(functions, quadrature=True)
    module = codegen.load_module(text, f"dekc_quadrature_{codegen.text_digest(text)[:16]}")
    return [jax.jit(getattr(module, name)) for name in names]


class QuadratureExpectation:
    """The numerical path behind :class:`dekc.expectations.GaussianExpectation`.

    Attributes: ``plan`` (:class:`dekc.codegen.QuadraturePlan`), ``n`` (nodes per piece),
    ``error_bound`` (scaled ``|Q_n − Q_2n|`` on the probes), ``one_point_n`` and
    ``one_point_error`` (the same for the one-point form), ``tol``.
    """

    def __init__(self, f: sp.Expr, g: sp.Expr, *, tol: float = 1e-9):
        self.tol = tol
        self.plan = plan(f, g)
        self.one_point_n: int | None = None
        pair_scale, one_point_scale = self._scales()
        self.n, self.error_bound = self._choose_nodes(pair_scale)
        self.one_point_n, self.one_point_error = self._choose_one_point_nodes(one_point_scale)

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
    def _scales(self):
        """Cauchy–Schwarz scales ``√(E f(u)² E g(v)²)`` (128 nodes per piece) at the probes and at
        the one-point variances (one call of each function)."""
        square_f, square_g = _load(codegen.second_moment_functions(self.plan), "_sq_f", "_sq_g")
        a, b, _ = (np.asarray(col) for col in zip(*PROBES))
        var = np.asarray(_ONE_POINT_VARIANCES)
        scale = jnp.sqrt(
            square_f(jnp.asarray(np.concatenate([a, var]))) * square_g(jnp.asarray(np.concatenate([b, var])))
        )
        scale = jnp.maximum(scale, 1e-300)
        return scale[: len(a)], scale[len(a) :]

    def _rule(self, n: int):
        """The generated rule with ``n`` nodes (``a`` is the variance of ``f``'s argument)."""
        (rule,) = _load(self.source("probe", n=n), "_probe_rule")
        return rule

    def _choose_nodes(self, scale):
        """Smallest ``n`` with ``|Q_n − Q_2n| ≤ tol·scale/SAFETY`` on every probe; the bound is for ``Q_n``."""
        a, b, c = (jnp.asarray(col) for col in zip(*PROBES))
        target = self.tol / SAFETY
        estimate = np.inf
        coarse = _probe_values(self._rule(NODE_COUNTS[0]), a, b, c, self.dimension)
        finite = self._finite_probes(coarse)
        for n in NODE_COUNTS:
            fine = _probe_values(self._rule(2 * n), a, b, c, self.dimension)
            estimate = float(jnp.max(jnp.where(finite, jnp.abs(fine - coarse) / scale, 0.0)))
            if not np.isfinite(estimate):
                raise self._overflow("on the probe covariances")
            if estimate <= target:
                return n, estimate
            coarse = fine
        warnings.warn(
            f"quadrature for E[{self.plan.f} * {self.plan.g}] reaches only {estimate:.1e} (scaled) on the "
            f"probe covariances, above the requested {self.tol:.0e}",
            DekcWarning,
            stacklevel=4,
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
                stacklevel=4,
            )
        return jnp.asarray(finite)

    def _choose_one_point_nodes(self, scale):
        """Smallest ``n`` with ``|Q_n − Q_2n| ≤ tol·scale/SAFETY`` for the one-point form at variances
        ``10^-4 … 10^4`` (the scale is ``√(E f² E g²)`` at the same variance)."""
        var = jnp.asarray(_ONE_POINT_VARIANCES)
        estimate = np.inf

        def rule(n):
            (fn,) = _load(self.source("probe", n=n, one_point_n=n), "probe_one_point")
            return fn(var)

        coarse = rule(NODE_COUNTS[0])
        central = (np.asarray(_ONE_POINT_VARIANCES) >= 1e-2) & (np.asarray(_ONE_POINT_VARIANCES) <= 1e2)
        finite = np.isfinite(np.asarray(coarse))
        if not finite[central].all():
            raise self._overflow("in its one-point form")
        for n in NODE_COUNTS:
            fine = rule(2 * n)
            estimate = float(jnp.max(jnp.where(jnp.asarray(finite), jnp.abs(fine - coarse) / scale, 0.0)))
            if estimate <= self.tol / SAFETY:
                return n, estimate
            coarse = fine
        return NODE_COUNTS[-1], estimate

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
        """Value with the chosen ``n`` nodes and ``|Q_n − Q_2n|`` per point."""
        a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c)))
        aa, bb = (b, a) if self.plan.swapped else (a, b)
        args = (jnp.asarray(aa), jnp.asarray(bb), jnp.asarray(c))
        value = np.asarray(self._rule(self.n)(*args))
        finer = np.asarray(self._rule(2 * self.n)(*args))
        return value, np.abs(finer - value)


def _probe_values(rule, a, b, c, dimension: int):
    """``rule`` at the probes: all at once in one dimension, in chunks of equal size in two."""
    if dimension == 1:
        return rule(a, b, c)
    k = _PROBE_CHUNK
    return jnp.concatenate([rule(a[i : i + k], b[i : i + k], c[i : i + k]) for i in range(0, a.shape[0], k)])


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
