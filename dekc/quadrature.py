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

The rule is *generated source* (:meth:`QuadratureExpectation.source`): the Gauss–Legendre nodes
of the chosen ``n`` are literals, the helpers ``_quad_*`` are shared (:data:`HELPERS`), and the
same text runs here, in :mod:`dekc.codegen` modules and under ``jit``/``grad``.
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
    NoExpectationError,
    NotClosedForm,
    _MU,
    _SIGMA,
    _shifted_mono,
    canonicalise,
)
from .expressions import ETA, kink_points
from .printer import HELPERS as ARC_HELPERS
from .printer import UnprintableError, function_source

_L = 10.0
_FEATURES = (1.0, 4.0, 16.0)
_NODE_COUNTS = (8, 16, 32, 64, 128)
_PROBE_VARIANCES = (1e-2, 1.0, 1e2)
_PROBE_CORRELATIONS = (-0.95, -0.3, 0.4, 0.9)
_CHUNK = 4096

#: helpers shared by every generated quadrature rule in a module
HELPERS = f'''_QUAD_L = {_L!r}


def _quad_phi(z):
    return jnp.exp(-z * z / 2) / jnp.sqrt(2 * jnp.pi)


def _quad_correlation(a, b, c):
    """(rho, sqrt(a), sqrt(b)); rho = 0 when a or b is 0."""
    a, b = jnp.maximum(a, 0.0), jnp.maximum(b, 0.0)
    sab = jnp.sqrt(a * b)
    return jnp.where(sab > 0, jnp.clip(c / jnp.where(sab > 0, sab, 1.0), -1.0, 1.0), 0.0), jnp.sqrt(a), jnp.sqrt(b)


def _quad_breaks(points, scale, shift):
    """Breakpoints in z where shift + scale * z meets the points, clipped to [-L, L], sorted."""
    pts = jnp.asarray(points, dtype=jnp.float64)
    safe = jnp.where(scale > 0, scale, 1.0)
    z = jnp.where(scale[..., None] > 0, (pts - shift[..., None]) / safe[..., None],
                  jnp.sign(pts - shift[..., None]) * 2 * _QUAD_L)
    z = jnp.clip(z, -_QUAD_L, _QUAD_L)
    ends = jnp.broadcast_to(jnp.asarray([-_QUAD_L, _QUAD_L]), z.shape[:-1] + (2,))
    return jnp.sort(jnp.concatenate([ends, z], axis=-1), axis=-1)


def _quad_pieces(breaks, x, w):
    """Nodes and weights of the composite rule (x, w) over sorted breaks (..., P + 1)."""
    lo, hi = breaks[..., :-1, None], breaks[..., 1:, None]
    half = (hi - lo) / 2
    return (lo + hi) / 2 + half * x, half * w
'''


def _points(kinks) -> tuple:
    """Kinks plus the feature points ``±1, ±4, ±16``, sorted."""
    return tuple(sorted(set(kinks) | {p for f in _FEATURES for p in (-f, f)}))


def _elementwise_source(name: str, expr: sp.Expr, what: str) -> str:
    try:
        return function_source(name, ["x"], expr, {ETA: "x"}, result="jnp.broadcast_to({}, jnp.shape(x))")
    except UnprintableError as exc:
        raise ExpressionError(f"{what} = {expr} cannot be evaluated numerically: {exc}") from None


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


def _run(source: str, *names):
    namespace = {"jax": jax, "jnp": jnp, "jsp": jsp}
    exec(compile(ARC_HELPERS + "\n\n" + HELPERS + "\n\n" + source, "<dekc quadrature>", "exec"),
         namespace)  # printed by dekc
    return [jax.jit(namespace[name]) for name in names]


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
        self._f_kinks = [float(p) for p in kink_points(self.f)]
        self._g_kinks = [float(p) for p in kink_points(self.g)]
        self.inner_continuous = self.reduction is not None or not self.g.has(sp.Heaviside, sp.sign, sp.Piecewise)
        self.dimension = 1 if self.reduction is not None else 2
        self.n, self.error_bound = self._choose_nodes()

    # -- generated source ------------------------------------------------------------------------
    def source(self, prefix: str, title: str = "", n: int | None = None) -> str:
        """Source of ``prefix``, ``prefix_dc``, ``prefix_one_point`` with ``n`` nodes per piece
        (default: the chosen ``n``); needs :data:`HELPERS` in the same module."""
        n = self.n if n is None else n
        x, w = np.polynomial.legendre.leggauss(n)
        p = f"_{prefix}"
        what = f" of {title}" if title else ""
        outer = f"_quad_breaks({_points(self._f_kinks)!r}, sa, jnp.zeros_like(sa)), " \
                f"_quad_breaks({_points(self._g_kinks)!r}, rho * sb, jnp.zeros_like(sb))"
        if self.reduction is not None:
            inner = f"{p}_G(mean, jnp.broadcast_to(spread, mean.shape))"
            conditional = function_source(f"{p}_G", ["mu", "sigma"], self.reduction, {_MU: "mu", _SIGMA: "sigma"},
                                          prelude=["sigma = jnp.maximum(sigma, 1e-150)"],
                                          doc="E[g(mu + sigma Z)], Z ~ N(0, 1).") + "\n\n"
        else:
            inner = (f"_{prefix}_inner(mean, spread)")
            conditional = f'''def {p}_inner(mean, spread):
    """E[g(mean + spread Z)] by the composite rule, split where the argument meets g's kinks."""
    zb2 = _quad_breaks({_points(self._g_kinks)!r}, jnp.broadcast_to(spread, mean.shape), mean)
    z2, w2 = _quad_pieces(zb2, {p}_X, {p}_W)
    gv = {p}_g(mean[..., None, None] + spread[..., None, None] * z2)
    return jnp.sum(w2 * _quad_phi(z2) * gv, axis=(-2, -1))


'''
        args = "b, a, c" if self.swapped else "a, b, c"
        if self.inner_continuous:
            dc_body = f"return jax.jvp(lambda cc: {prefix}(a, b, cc), (c,), (jnp.ones_like(c),))[1]"
        else:
            dc_body = ("h = 1e-5 * jnp.sqrt(jnp.maximum(a * b, 1e-300))\n"
                       f"    return ({prefix}(a, b, c + h) - {prefix}(a, b, c - h)) / (2 * h)")
        return f'''{p}_X = jnp.asarray({[float(v) for v in x]!r})
{p}_W = jnp.asarray({[float(v) for v in w]!r})


{_elementwise_source(f"{p}_f", self.f, "f")}

{_elementwise_source(f"{p}_g", self.g, "g")}

{conditional}def {p}_rule(a, b, c):
    """Composite Gauss-Legendre rule ({n} nodes per piece) in whitened coordinates; a is f's variance."""
    rho, sa, sb = _quad_correlation(a, b, c)
    zb = jnp.sort(jnp.concatenate([{outer}], axis=-1), axis=-1)
    z1, w1 = _quad_pieces(zb, {p}_X, {p}_W)
    fu = {p}_f(sa[..., None, None] * z1)
    mean = (rho * sb)[..., None, None] * z1
    spread = (sb * jnp.sqrt(jnp.maximum(1 - rho * rho, 0.0)))[..., None, None]
    inner = {inner}
    return jnp.sum(w1 * _quad_phi(z1) * fu * inner, axis=(-2, -1))


def {prefix}(a, b, c):
    """E[f(u) g(v)]{what}, (u, v) ~ N(0, [[a, c], [c, b]]), by quadrature."""
    a, b, c = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.float64) for v in (a, b, c)))
    return {p}_rule({args})


def {prefix}_dc(a, b, c):
    """d/dc E[f(u) g(v)]{what}."""
    a, b, c = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.float64) for v in (a, b, c)))
    {dc_body}


def {prefix}_one_point(a):
    """E[f(u) g(u)]{what}, u ~ N(0, a), by quadrature."""
    sa = jnp.sqrt(jnp.maximum(jnp.asarray(a, dtype=jnp.float64), 0.0))
    z, w = _quad_pieces(_quad_breaks({_points(self._f_kinks + self._g_kinks)!r}, sa, jnp.zeros_like(sa)), {p}_X, {p}_W)
    u = sa[..., None, None] * z
    return jnp.sum(w * _quad_phi(z) * {p}_f(u) * {p}_g(u), axis=(-2, -1))
'''

    # -- node count ------------------------------------------------------------------------------
    def _scale(self, a, b):
        """Cauchy–Schwarz scale ``√(E f(u)² E g(v)²)`` (128 nodes per piece)."""
        square_f, square_g = _run(self._squares_source(), "_sq_f", "_sq_g")
        return jnp.sqrt(square_f(a) * square_g(b))

    def _squares_source(self) -> str:
        x, w = np.polynomial.legendre.leggauss(128)
        parts = [f"_SQ_X = jnp.asarray({[float(v) for v in x]!r})", f"_SQ_W = jnp.asarray({[float(v) for v in w]!r})"]
        for name, expr, kinks in (("f", self.f, self._f_kinks), ("g", self.g, self._g_kinks)):
            parts.append(_elementwise_source(f"_sq_{name}_fn", expr, name))
            parts.append(f'''def _sq_{name}(var):
    s = jnp.sqrt(var)
    z, w = _quad_pieces(_quad_breaks({_points(kinks)!r}, s, jnp.zeros_like(s)), _SQ_X, _SQ_W)
    return jnp.sum(w * _quad_phi(z) * _sq_{name}_fn(s[..., None, None] * z) ** 2, axis=(-2, -1))
''')
        return "\n\n".join(parts)

    def _rule(self, n: int):
        """The generated rule with ``n`` nodes (``a`` is the variance of ``f``'s argument)."""
        (rule,) = _run(self.source("probe", n=n), "_probe_rule")
        return rule

    def _choose_nodes(self):
        """Smallest ``n`` with ``|Q_n − Q_2n| ≤ tol·scale`` on every probe; the bound is for ``Q_n``."""
        grid = [(a, b, r * np.sqrt(a * b)) for a in _PROBE_VARIANCES for b in _PROBE_VARIANCES for r in _PROBE_CORRELATIONS]
        a, b, c = (jnp.asarray(col) for col in zip(*grid))
        scale = jnp.maximum(self._scale(a, b), 1e-300)
        estimate = np.inf
        coarse = self._rule(_NODE_COUNTS[0])
        for n in _NODE_COUNTS:
            fine = self._rule(2 * n)
            if self.dimension == 1:
                diff = jnp.abs(fine(a, b, c) - coarse(a, b, c)) / scale
            else:  # one probe at a time keeps the 2-D tensors small
                diff = jnp.stack([jnp.abs(fine(a[i], b[i], c[i]) - coarse(a[i], b[i], c[i]))
                                  for i in range(len(grid))]) / scale
            estimate = float(jnp.max(diff))
            if not np.isfinite(estimate):
                raise NoExpectationError(
                    f"E[{self.f} * {self.g}] evaluates to NaN or infinity in float64 on the probe covariances "
                    "(an intermediate overflows or cancels, e.g. exp(eta**2) against sqrt(exp(eta**2))); "
                    "rewrite the expression in a numerically stable form")
            if estimate <= self.tol:
                return n, estimate
            coarse = fine
        warnings.warn(f"quadrature for E[{self.f} * {self.g}] reaches only {estimate:.1e} (scaled) on the probe "
                      f"covariances, above the requested {self.tol:.0e}", DekcWarning, stacklevel=4)
        return _NODE_COUNTS[-1], estimate

    # -- evaluation ------------------------------------------------------------------------------
    def functions(self) -> dict:
        pair, dc, one_point = _run(self.source("K"), "K", "K_dc", "K_one_point")
        return {"pair": _chunked(pair), "dc": _chunked(dc), "one_point": _chunked(one_point), "positive": _chunked(pair)}

    def estimate(self, a, b, c):
        """Value with the chosen ``n`` nodes and ``|Q_n − Q_2n|`` per point."""
        a, b, c = (np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c))))
        aa, bb = (b, a) if self.swapped else (a, b)
        args = (jnp.asarray(aa), jnp.asarray(bb), jnp.asarray(c))
        value = np.asarray(self._rule(self.n)(*args))
        finer = np.asarray(self._rule(2 * self.n)(*args))
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
