"""Quadrature for Gaussian expectations that have no closed form.

Whitened coordinates: ``u = √a z₁``, ``v = ρ√b z₁ + √b√(1 − ρ²) z₂``, ``z ~ N(0, I)``.

* **One-dimensional reduction** when one factor (say ``g``) has a closed conditional
  expectation ``G(μ, σ) = E[g(μ + σZ)]`` (piecewise polynomials, ``erf``, ``exp``, bumps):
  ``K = ∫ φ(z) f(√a z) G(ρ√b z, √b√(1 − ρ²)) dz``.
* Otherwise a **two-dimensional** tensor rule, the inner integral split where ``g`` has kinks.

Each axis is a composite Gauss–Legendre rule on ``|z| ≤ 10`` (the Gaussian mass beyond is below
1e-22), split at the kinks of the function and at fixed feature points ``±1, ±4, ±16`` in
the function's own variable, so that saturating functions (tanh, sigmoid) are resolved whatever
the variance; Gauss–Hermite across a kink converges like ``1/n`` and is never used.

The node count per piece is chosen at construction: ``n`` doubles until ``|Q_n − Q_2n|`` is
below ``tol`` times the Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` on probe covariances with
``a, b ∈ {1e-2, 1, 1e2}`` and ``ρ ∈ {−0.95, −0.3, 0.4, 0.9}``; evaluations use those ``n`` nodes
and ``error_bound`` is the largest scaled ``|Q_n − Q_2n|`` seen (an estimate of the error of
``Q_n``, conservative because ``Q_2n`` is far more accurate).
``∂K/∂c`` is the derivative of the rule with respect to ``c`` (JAX autodiff), exact for the rule
when the inner factor is continuous; otherwise a central difference.
"""

from __future__ import annotations

import warnings

import numpy as np
import sympy as sp

from ._jax import jax, jnp, jsp
from .errors import DekcWarning, ExpressionError
from .expectations import (
    Bump,
    CExp,
    Erf,
    Mono,
    NotClosedForm,
    _MU,
    _SIGMA,
    _shifted_mono,
    canonicalise,
)
from .expressions import ETA, kink_points
from .printer import UnprintableError, jax_source

_L = 10.0
_FEATURES = (1.0, 4.0, 16.0)
_NODE_COUNTS = (8, 16, 32, 64, 128)
_PROBE_VARIANCES = (1e-2, 1.0, 1e2)
_PROBE_CORRELATIONS = (-0.95, -0.3, 0.4, 0.9)
_CHUNK = 4096


def _elementwise(expr: sp.Expr, name: str):
    try:
        body = jax_source(expr, {ETA: "x"})
    except UnprintableError as exc:
        raise ExpressionError(f"{name} = {expr} cannot be evaluated numerically: {exc}") from None
    namespace = {"jnp": jnp, "jsp": jsp}
    exec(compile(f"def fn(x):\n    return jnp.broadcast_to({body}, jnp.shape(x))\n", f"<dekc {name}>", "exec"), namespace)
    return namespace["fn"]


def conditional_expectation(g: sp.Expr) -> sp.Expr:
    """``E[g(μ + σZ)]`` in the symbols ``mu``, ``sigma``; raises :class:`NotClosedForm`."""
    total = sp.Integer(0)
    for coef, atom in canonicalise(g):
        if isinstance(atom, Mono):
            term = sp.Integer(atom.s) ** atom.n * _shifted_mono(atom.n, atom.s * _MU, _SIGMA)
        elif isinstance(atom, CExp):
            term = sp.exp(atom.s * _MU + atom.s**2 * _SIGMA**2 / 2)
        elif isinstance(atom, Erf):
            term = sp.erf(atom.alpha * _MU / sp.sqrt(1 + 2 * atom.alpha**2 * _SIGMA**2))
        elif isinstance(atom, Bump):
            spread = 1 + 2 * atom.beta * _SIGMA**2
            term = sp.exp(-atom.beta * _MU**2 / spread) / sp.sqrt(spread)
        else:
            raise NotClosedForm(f"no conditional rule for {atom}")
        total += coef * term
    if total.has(sp.I):
        total = sp.simplify(sp.expand_complex(total))
        if total.has(sp.I):
            raise NotClosedForm("complex conditional expectation")
    return total


def _conditional_function(G: sp.Expr):
    body = jax_source(G, {_MU: "mu", _SIGMA: "sigma"})
    namespace = {"jnp": jnp, "jsp": jsp}
    exec(compile(f"def G(mu, sigma):\n    sigma = jnp.maximum(sigma, 1e-150)\n    return {body}\n",
                 "<dekc conditional>", "exec"), namespace)
    return namespace["G"]


def _gauss_legendre(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return jnp.asarray(x), jnp.asarray(w)


def _pieces(breaks, n):
    """Nodes and weights of a composite rule over sorted ``breaks`` (``(..., P+1)``)."""
    x, w = _gauss_legendre(n)
    lo, hi = breaks[..., :-1, None], breaks[..., 1:, None]
    half = (hi - lo) / 2
    return (lo + hi) / 2 + half * x, half * w


def _phi(z):
    return jnp.exp(-z * z / 2) / jnp.sqrt(2 * jnp.pi)


def _breaks(points, scale, shift=0.0):
    """Breakpoints in ``z`` for function-variable points ``p``: ``z = (p − shift)/scale``, clipped."""
    pts = jnp.asarray(sorted(set(points) | {p for f in _FEATURES for p in (-f, f)}), dtype=jnp.float64)
    safe = jnp.where(scale > 0, scale, 1.0)
    z = jnp.where(scale[..., None] > 0, (pts - shift[..., None]) / safe[..., None], jnp.sign(pts - shift[..., None]) * 2 * _L)
    z = jnp.clip(z, -_L, _L)
    ends = jnp.broadcast_to(jnp.asarray([-_L, _L]), z.shape[:-1] + (2,))
    return jnp.sort(jnp.concatenate([ends, z], axis=-1), axis=-1)


def _correlation(a, b, c):
    a, b = jnp.maximum(a, 0.0), jnp.maximum(b, 0.0)
    sab = jnp.sqrt(a * b)
    return jnp.where(sab > 0, jnp.clip(c / jnp.where(sab > 0, sab, 1.0), -1.0, 1.0), 0.0), jnp.sqrt(a), jnp.sqrt(b)


class QuadratureExpectation:
    """The numerical path behind :class:`dekc.expectations.GaussianExpectation`."""

    def __init__(self, f: sp.Expr, g: sp.Expr, *, tol: float = 1e-9):
        self.tol = tol
        self.swapped = False
        self.reduction = None
        for first, second, swapped in ((f, g, False), (g, f, True)):
            try:
                G = conditional_expectation(second)
            except NotClosedForm:
                continue
            self.f, self.g, self.swapped, self.reduction = first, second, swapped, G
            break
        else:
            # 2-D: put a discontinuous factor outside, where its breakpoints do not move with c
            jumpy = lambda e: e.has(sp.Heaviside, sp.sign, sp.Piecewise)  # noqa: E731
            self.swapped = jumpy(g) and not jumpy(f)
            self.f, self.g = (g, f) if self.swapped else (f, g)
        self._f = _elementwise(self.f, "f")
        self._g = _elementwise(self.g, "g")
        self._f_kinks = [float(p) for p in kink_points(self.f)]
        self._g_kinks = [float(p) for p in kink_points(self.g)]
        self._G = _conditional_function(self.reduction) if self.reduction is not None else None
        self.inner_continuous = self.reduction is not None or not self.g.has(sp.Heaviside, sp.sign, sp.Piecewise)
        self.dimension = 1 if self.reduction is not None else 2
        self.n, self.error_bound = self._choose_nodes()

    # -- rules -------------------------------------------------------------------------------
    def _rule(self, a, b, c, n):
        rho, sa, sb = _correlation(a, b, c)
        # outer splits: f's kinks and features, and where the mean of v crosses g's kinks
        zb = jnp.concatenate([_breaks(self._f_kinks, sa, jnp.zeros_like(sa)),
                              _breaks(self._g_kinks, rho * sb, jnp.zeros_like(sb))], axis=-1)
        zb = jnp.sort(zb, axis=-1)
        z1, w1 = _pieces(zb, n)  # (..., P, n)
        fu = self._f(sa[..., None, None] * z1)
        mean = (rho * sb)[..., None, None] * z1
        spread = (sb * jnp.sqrt(jnp.maximum(1 - rho * rho, 0.0)))[..., None, None]
        if self._G is not None:
            inner = self._G(mean, jnp.broadcast_to(spread, mean.shape))
        else:
            zb2 = _breaks(self._g_kinks, jnp.broadcast_to(spread, mean.shape), mean)
            z2, w2 = _pieces(zb2, n)  # (..., P, n, P2, n)
            gv = self._g(mean[..., None, None] + spread[..., None, None] * z2)
            inner = jnp.sum(w2 * _phi(z2) * gv, axis=(-2, -1))
        return jnp.sum(w1 * _phi(z1) * fu * inner, axis=(-2, -1))

    def _one_point_rule(self, a, n):
        sa = jnp.sqrt(jnp.maximum(a, 0.0))
        zb = _breaks(self._f_kinks + self._g_kinks, sa, jnp.zeros_like(sa))
        z, w = _pieces(zb, n)
        u = sa[..., None, None] * z
        return jnp.sum(w * _phi(z) * self._f(u) * self._g(u), axis=(-2, -1))

    def _scale(self, a, b):
        return jnp.sqrt(self._square(self._f, self._f_kinks, a) * self._square(self._g, self._g_kinks, b))

    @staticmethod
    def _square(fn, kinks, var):
        s = jnp.sqrt(var)
        z, w = _pieces(_breaks(kinks, s, jnp.zeros_like(s)), 128)
        return jnp.sum(w * _phi(z) * fn(s[..., None, None] * z) ** 2, axis=(-2, -1))

    def _choose_nodes(self):
        """Smallest ``n`` with ``|Q_n − Q_2n| ≤ tol·scale`` on every probe; the bound is for ``Q_n``."""
        grid = [(a, b, r * np.sqrt(a * b)) for a in _PROBE_VARIANCES for b in _PROBE_VARIANCES for r in _PROBE_CORRELATIONS]
        a, b, c = (jnp.asarray(col) for col in zip(*grid))
        if self.swapped:
            a, b = b, a
        scale = jnp.maximum(self._scale(a, b), 1e-300)
        estimate = np.inf
        for n in _NODE_COUNTS:
            if self.dimension == 1:
                diff = jnp.abs(self._rule(a, b, c, 2 * n) - self._rule(a, b, c, n)) / scale
            else:  # one probe at a time keeps the 2-D tensors small
                diff = jnp.stack([jnp.abs(self._rule(a[i], b[i], c[i], 2 * n) - self._rule(a[i], b[i], c[i], n))
                                  for i in range(len(grid))]) / scale
            estimate = float(jnp.max(diff))
            if estimate <= self.tol:
                return n, estimate
        warnings.warn(f"quadrature for E[{self.f} * {self.g}] reaches only {estimate:.1e} (scaled) on the probe "
                      f"covariances, above the requested {self.tol:.0e}", DekcWarning, stacklevel=4)
        return _NODE_COUNTS[-1], estimate

    # -- evaluation ------------------------------------------------------------------------------
    def functions(self) -> dict:
        n = self.n

        def pair(a, b, c):
            a, b, c = _as_arrays(a, b, c)
            if self.swapped:
                a, b = b, a
            return self._rule(a, b, c, n)

        def one_point(a):
            return self._one_point_rule(jnp.asarray(a, dtype=jnp.float64), n)

        if self.inner_continuous:
            def dc(a, b, c):
                a, b, c = _as_arrays(a, b, c)
                return jax.jvp(lambda cc: pair(a, b, cc), (c,), (jnp.ones_like(c),))[1]
        else:
            def dc(a, b, c):
                a, b, c = _as_arrays(a, b, c)
                h = 1e-5 * jnp.sqrt(jnp.maximum(a * b, 1e-300))
                return (pair(a, b, c + h) - pair(a, b, c - h)) / (2 * h)

        return {"pair": _chunked(jax.jit(pair)), "dc": _chunked(jax.jit(dc)), "one_point": _chunked(jax.jit(one_point))}

    def estimate(self, a, b, c):
        """Value with the chosen ``n`` nodes and ``|Q_n − Q_2n|`` per point."""
        a, b, c = (np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c))))
        aa, bb = (b, a) if self.swapped else (a, b)
        value = np.asarray(self._rule(jnp.asarray(aa), jnp.asarray(bb), jnp.asarray(c), self.n))
        finer = np.asarray(self._rule(jnp.asarray(aa), jnp.asarray(bb), jnp.asarray(c), 2 * self.n))
        return value, np.abs(finer - value)


def _as_arrays(*args):
    return jnp.broadcast_arrays(*(jnp.asarray(x, dtype=jnp.float64) for x in args))


def _chunked(fn):
    """Apply ``fn`` to flattened broadcast inputs in chunks (bounded memory); JAX tracers pass through."""

    def run(*args):
        if any(isinstance(x, jax.core.Tracer) for x in args):
            return fn(*args)
        arrays = _as_arrays(*args)
        shape = arrays[0].shape
        flat = [x.reshape(-1) for x in arrays]
        size = flat[0].shape[0]
        if size <= _CHUNK:
            return fn(*flat).reshape(shape)
        pad = (-size) % _CHUNK
        padded = [jnp.concatenate([x, jnp.full((pad,), x[0])]) for x in flat]
        parts = [fn(*(x[i:i + _CHUNK] for x in padded)) for i in range(0, size + pad, _CHUNK)]
        return jnp.concatenate(parts)[:size].reshape(shape)

    return run
