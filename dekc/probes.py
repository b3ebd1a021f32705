"""The node-count probes of a quadrature rule, evaluated on the host.

Choosing a rule's node count compares it at several node counts on many probe covariances. Doing
that with the generated JAX rules compiles a new XLA program for every node count (about a second
each for a two-dimensional rule). Here the same composite rules run in numpy: breakpoints, nodes,
weights and sums come from the generated helpers themselves (:data:`dekc.codegen.QUADRATURE_HELPERS`,
run with numpy in place of ``jax.numpy``), and only the integrands ``f``, ``g`` (and the closed
conditional expectation ``G(μ, s)`` of a one-dimensional reduction) run as compiled JAX functions,
on flat arrays of one fixed length: each is compiled once per process and shared by every pair,
node count and probe that uses it. Pieces of zero width (breakpoints clipped to the ends of the
range) are skipped: they contribute exactly 0 to the generated rule.

The values agree with the generated rules with the same node count to rounding (the sums run in
another order): the tests check them against each other.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from . import codegen
from ._jax import jax

#: points per call of a compiled integrand (the last call of a batch is padded)
CHUNK = 1 << 16
#: inner nodes of the probes evaluated together (bounds the host arrays' size)
_BATCH_POINTS = 1 << 22

# the generated helpers with numpy as their array module
_helpers = codegen.load_module(
    "import numpy as jnp\n\n\n" + codegen.QUADRATURE_HELPERS, "dekc_quadrature_helpers_numpy"
)
_breaks, _mapped, _smoothed = _helpers._quad_breaks, _helpers._quad_mapped, _helpers._quad_smoothed
_pieces, _phi = _helpers._quad_pieces, _helpers._quad_phi


@functools.lru_cache(maxsize=16)
def _nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


@functools.lru_cache(maxsize=64)
def _compiled(expr: sp.Expr, arguments: tuple[str, ...]):
    """``expr`` (in ``η``, or in ``μ, s`` for a conditional expectation) as a jitted JAX function
    of flat arrays of length :data:`CHUNK`."""
    if arguments == ("x",):
        source = codegen.elementwise_source("_probe_fn", expr, "f")
    else:
        source = codegen.conditional_source("_probe_fn", expr)
    text = codegen.expectation_module(source, quadrature=False)
    module = codegen.load_module(text, f"dekc_probe_{codegen.text_digest(text)[:16]}")
    return jax.jit(module._probe_fn)


def _apply(fn, *arrays: np.ndarray) -> np.ndarray:
    """``fn`` on flat float64 arrays of any length, in calls of :data:`CHUNK` points."""
    size = arrays[0].size
    out = np.empty(size)
    for start in range(0, size, CHUNK):
        parts = [x[start : start + CHUNK] for x in arrays]
        m = parts[0].size
        if m < CHUNK:
            parts = [np.concatenate([p, np.full(CHUNK - m, p[0])]) for p in parts]
        out[start : start + m] = np.asarray(fn(*parts))[:m]
    return out


class HostRule:
    """The composite rules of :func:`dekc.codegen.quadrature_functions` for ``plan``, in numpy,
    at any node count: :meth:`pair` (at probe covariances), :meth:`one_point` and
    :meth:`second_moments` (the Cauchy–Schwarz scales)."""

    def __init__(self, plan: codegen.QuadraturePlan):
        self.plan = plan
        self._f = _compiled(plan.f, ("x",))
        self._g = _compiled(plan.g, ("x",))
        self._G = None if plan.reduction is None else _compiled(plan.reduction, ("mu", "sigma"))
        self._f_splits = codegen.split_points(plan.f_kinks)
        self._g_splits = codegen.split_points(plan.g_kinks)
        self._centers = tuple(sorted(set(plan.g_kinks) | {0.0}))

    def f(self, x: np.ndarray) -> np.ndarray:
        return _apply(self._f, np.ravel(x)).reshape(np.shape(x))

    def g(self, x: np.ndarray) -> np.ndarray:
        return _apply(self._g, np.ravel(x)).reshape(np.shape(x))

    def pair(self, n: int, a, b, c) -> np.ndarray:
        """The rule with ``n`` nodes per piece at each covariance ``(a[i], b[i], c[i])`` (``a`` is
        the variance of the rule's ``f``). Probes are taken in batches of at most
        :data:`_BATCH_POINTS` inner nodes, each batch's integrands evaluated together."""
        x, w = _nodes(n)
        out = np.empty(len(a))
        batch: list = []
        size = 0
        for i, abc in enumerate(zip(a, b, c)):
            probe = self._layout(x, w, *abc)
            batch.append((i, probe))
            size += probe[-1].size
            if size >= _BATCH_POINTS or i == len(a) - 1:
                self._finish(batch, out)
                batch, size = [], 0
        return out

    def _layout(self, x, w, a: float, b: float, c: float):
        """Outer nodes ``f`` is evaluated at, their weights, and (two-dimensional rules) the inner
        nodes' weights, outer-node index and points ``g`` is evaluated at."""
        a, b = max(a, 0.0), max(b, 0.0)
        sab = np.sqrt(a * b)
        rho = float(np.clip(c / sab, -1.0, 1.0)) if sab > 0 else 0.0
        sa, sb = np.sqrt(a), np.sqrt(b)
        spread = sb * np.sqrt(max(1 - rho * rho, 0.0))
        one = np.ones(1)
        zb = _breaks(
            self._f_splits,
            sa * one,
            0 * one,
            _mapped(self._g_splits, rho * sb * one, 0 * one),
            _smoothed(self._centers, rho * sb * one, spread * one),
        )[0]
        z1, w1 = _flat_pieces(zb, x, w)
        mean = rho * sb * z1
        if self._G is not None:
            return sa * z1, w1 * _phi(z1), mean, np.full(mean.shape, spread)
        rows = np.arange(mean.size)
        if spread == 0:  # |ρ| = 1: g is evaluated at the inner mean only (the same nodes for every row)
            z2, w2 = _pieces(_breaks(self._g_splits, np.zeros(1), mean[:1])[0], x, w)
            return sa * z1, w1 * _phi(z1), np.full(mean.size, np.sum(w2 * _phi(z2))), rows, mean
        zb2 = _breaks(self._g_splits, np.full(mean.shape, spread), mean)
        z2, w2 = _pieces(zb2, x, w)  # (outer nodes, pieces, n)
        keep = np.broadcast_to(w2 != 0, z2.shape)
        rows = np.broadcast_to(rows[:, None, None], z2.shape)[keep]
        z2k = z2[keep]
        return sa * z1, w1 * _phi(z1), w2[keep] * _phi(z2k), rows, mean[rows] + spread * z2k

    def _finish(self, batch: list, out: np.ndarray) -> None:
        fu = np.split(self.f(np.concatenate([p[0] for _, p in batch])), np.cumsum([p[0].size for _, p in batch])[:-1])
        if self._G is not None:
            inner_all = _apply(
                self._G, np.concatenate([p[2] for _, p in batch]), np.concatenate([p[3] for _, p in batch])
            )
            inners = np.split(inner_all, np.cumsum([p[2].size for _, p in batch])[:-1])
            for (i, p), f_values, inner in zip(batch, fu, inners):
                out[i] = np.sum(p[1] * f_values * inner)
            return
        gv = np.split(self.g(np.concatenate([p[4] for _, p in batch])), np.cumsum([p[4].size for _, p in batch])[:-1])
        for (i, p), f_values, g_values in zip(batch, fu, gv):
            inner = np.bincount(p[3], weights=p[2] * g_values, minlength=p[0].size)
            out[i] = np.sum(p[1] * f_values * inner)

    def one_point(self, n: int, var) -> np.ndarray:
        """``E[f(u) g(u)]``, ``u ~ N(0, var)``, by the one-point rule with ``n`` nodes per piece."""
        splits = codegen.split_points(self.plan.f_kinks + self.plan.g_kinks)
        u, weights, index = _one_dimensional(n, splits, var)
        return np.bincount(index, weights=weights * self.f(u) * self.g(u), minlength=len(var))

    def second_moments(self, var_f, var_g, n: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """``E f(w)²`` at the variances ``var_f`` and ``E g(w)²`` at ``var_g``, ``w ~ N(0, var)``,
        by the one-dimensional composite rule with ``n`` nodes per piece."""
        out = []
        for fn, kinks, var in ((self.f, self.plan.f_kinks, var_f), (self.g, self.plan.g_kinks, var_g)):
            u, weights, index = _one_dimensional(n, codegen.split_points(kinks), var)
            out.append(np.bincount(index, weights=weights * fn(u) ** 2, minlength=len(var)))
        return out[0], out[1]


def _one_dimensional(n: int, splits: tuple, var) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points ``u``, weights (with the Gaussian density) and variance index of the one-dimensional
    composite rules at the variances ``var``, split at ``splits`` in ``u``."""
    x, w = _nodes(n)
    points, weights, index = [], [], []
    for i, v in enumerate(np.asarray(var, dtype=float)):
        s = np.sqrt(max(v, 0.0))
        z, wz = _flat_pieces(_breaks(splits, s * np.ones(1), np.zeros(1))[0], x, w)
        points.append(s * z)
        weights.append(wz * _phi(z))
        index.append(np.full(z.size, i))
    return np.concatenate(points), np.concatenate(weights), np.concatenate(index)


def _flat_pieces(breaks: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the composite rule over sorted ``breaks``, without zero-width pieces."""
    z, wz = _pieces(breaks[np.concatenate([[True], np.diff(breaks) > 0])], x, w)
    return z.reshape(-1), wz.reshape(-1)
