"""Quadrature for Gaussian expectations that have no closed form.

Whitened coordinates: ``u = √a z₁``, ``v = ρ√b z₁ + √b√(1 − ρ²) z₂``, ``z ~ N(0, I)``.

* **One-dimensional reduction** when one factor (say ``g``) has a closed conditional
  expectation ``G(μ, σ) = E[g(μ + σZ)]`` (:func:`dekc.gaussian.conditional_expectation`):
  ``K = ∫ φ(z) f(√a z) G(ρ√b z, √b√(1 − ρ²)) dz``.
* Otherwise a **two-dimensional** tensor rule, the inner integral split where ``g`` has kinks.

Each axis is a composite Gauss–Legendre rule on ``|z| ≤ 10``, split at the kinks of the function
and at the feature points ``±1, ±4, ±16`` in the function's own variable. The node count per
piece is the smallest ``n`` in 8, 16, …, 128 with ``|Q_n − Q_2n|`` below ``tol`` times the
Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` on probe covariances with ``a, b ∈ {1e-2, 1, 1e2}``
and ``ρ ∈ {−0.95, −0.3, 0.4, 0.9}``; ``error_bound`` is the largest scaled ``|Q_n − Q_2n|`` seen.
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
NODE_COUNTS = (8, 16, 32, 64, 128)
_PROBE_VARIANCES = (1e-2, 1.0, 1e2)
_PROBE_CORRELATIONS = (-0.95, -0.3, 0.4, 0.9)
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
    ``error_bound`` (scaled ``|Q_n − Q_2n|`` on the probes), ``tol``.
    """

    def __init__(self, f: sp.Expr, g: sp.Expr, *, tol: float = 1e-9):
        self.tol = tol
        self.plan = plan(f, g)
        self.n, self.error_bound = self._choose_nodes()
        self.one_point_n, self.one_point_error = self._choose_one_point_nodes()

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
        one_point_n = getattr(self, "one_point_n", n) if one_point_n is None else one_point_n
        return codegen.quadrature_functions(self.plan, prefix, n, title, one_point_n)

    # -- node count ------------------------------------------------------------------------------
    def _scale(self, a, b):
        """Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` (128 nodes per piece)."""
        square_f, square_g = _load(codegen.second_moment_functions(self.plan), "_sq_f", "_sq_g")
        return jnp.sqrt(square_f(a) * square_g(b))

    def _rule(self, n: int):
        """The generated rule with ``n`` nodes (``a`` is the variance of ``f``'s argument)."""
        (rule,) = _load(self.source("probe", n=n), "_probe_rule")
        return rule

    def _choose_nodes(self):
        """Smallest ``n`` with ``|Q_n − Q_2n| ≤ tol·scale`` on every probe; the bound is for ``Q_n``."""
        grid = [
            (a, b, r * np.sqrt(a * b)) for a in _PROBE_VARIANCES for b in _PROBE_VARIANCES for r in _PROBE_CORRELATIONS
        ]
        a, b, c = (jnp.asarray(col) for col in zip(*grid))
        scale = jnp.maximum(self._scale(a, b), 1e-300)
        estimate = np.inf
        coarse = self._rule(NODE_COUNTS[0])
        for n in NODE_COUNTS:
            fine = self._rule(2 * n)
            if self.dimension == 1:
                diff = jnp.abs(fine(a, b, c) - coarse(a, b, c)) / scale
            else:  # one probe at a time keeps the 2-D tensors small
                diff = (
                    jnp.stack([jnp.abs(fine(a[i], b[i], c[i]) - coarse(a[i], b[i], c[i])) for i in range(len(grid))])
                    / scale
                )
            estimate = float(jnp.max(diff))
            if not np.isfinite(estimate):
                raise NoExpectationError(
                    f"E[{self.plan.f} * {self.plan.g}] evaluates to NaN or infinity in float64 on the probe covariances "
                    "(an intermediate overflows or cancels, e.g. exp(eta**2) against sqrt(exp(eta**2))); "
                    "rewrite the expression in a numerically stable form"
                )
            if estimate <= self.tol:
                return n, estimate
            coarse = fine
        warnings.warn(
            f"quadrature for E[{self.plan.f} * {self.plan.g}] reaches only {estimate:.1e} (scaled) on the "
            f"probe covariances, above the requested {self.tol:.0e}",
            DekcWarning,
            stacklevel=4,
        )
        return NODE_COUNTS[-1], estimate

    def _choose_one_point_nodes(self):
        """Smallest ``n`` with ``|Q_n − Q_2n| ≤ tol·scale`` for the one-point form at variances
        ``10^-4 … 10^4`` (the scale is ``√(E f² E g²)`` at the same variance)."""
        var = jnp.asarray(_ONE_POINT_VARIANCES)
        scale = jnp.maximum(self._scale(var, var), 1e-300)
        estimate = np.inf

        def rule(n):
            (fn,) = _load(self.source("probe", n=n, one_point_n=n), "probe_one_point")
            return fn(var)

        coarse = rule(NODE_COUNTS[0])
        for n in NODE_COUNTS:
            fine = rule(2 * n)
            estimate = float(jnp.max(jnp.abs(fine - coarse) / scale))
            if estimate <= self.tol:
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
