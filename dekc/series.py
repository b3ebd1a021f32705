"""Mehler (Hermite) series for expectations without a closed form, once the diagonal is known.

For ``(u, v) ~ N(0, [[a, c], [c, b]])`` and ``r = c/√(ab)``, Mehler's formula gives

    E[f(u) g(v)] = Σ_k r^k F_k(a) G_k(b),   F_k(a) = E[f(√a Z) He_k(Z)] / √(k!),  Z ~ N(0, 1),

with ``He_k`` the probabilists' Hermite polynomials. In a Gram matrix the variances ``a``, ``b`` are
the diagonal values of the inputs, known before any off-diagonal entry is solved: the
coefficients are one table per input (``n × K`` one-dimensional integrals), and each off-diagonal
evaluation, and its ``c``-derivative ``Σ_k k r^(k−1) F_k G_k / √(ab)``, is a polynomial in ``r``.

**Error bound.** By Parseval, ``Σ_k F_k(a)² = E f(√a Z)²``, so the tail after ``K`` terms is
``T_f(a, K) = E f(√a Z)² − Σ_(k<K) F_k(a)²`` and, by Cauchy–Schwarz,

    |E[f(u) g(v)] − Σ_(k<K) r^k F_k G_k| ≤ |r|^K √(T_f(a, K) T_g(b, K)).

An entry is *certified* when this bound is at most :data:`TOLERANCE` times the Cauchy–Schwarz scale
``√(E f(u)² E g(v)²)`` for every pair the series replaces. An entry the first series cannot certify
is solved again with the long series (:data:`LONG_TERMS` terms, coefficients only for the inputs
of such entries); one the long series cannot certify either is solved with the kernel's quadrature
rule, and counted. The tails converge fast for smooth functions at moderate
variance (``T/E f²`` below 1e-15 after 128 terms for ``tanh`` at ``a = 1``) and slowly where the
function is steep on the scale of ``√a`` (``tanh`` at ``a = 30`` keeps 4e-6 after 400 terms) or has a
kink: a jump ``Δ`` in the first derivative at 0 leaves ``T ≈ 0.042 Δ² a K^(−3/2)`` (relu's
coefficients), so near ``|r| = 1`` the first series runs out of terms; the long one, with eight
times as many, certifies entries up to ``|r| ≈ 0.997`` at ``a ≈ 0.1`` (the first: ``0.965``).

**Coefficients** are computed by a composite Gauss–Legendre rule on ``|z| ≤ 10`` (Gaussian mass
beyond: below 2e-23), split at fixed points in ``z`` and at the function's kinks and feature
points ``0, ±1, ±4, ±16`` in its own variable, :data:`NODES` nodes per piece; the Hermite
polynomials by their normalised three-term recurrence. Measured against 30-digit mpmath:
``tanh·tanh`` to 7e-15 of the scale for ``a, b ∈ [0.01, 3]``, ``|r| ≤ 0.999``. The long series'
grid has pieces at most 1 wide: ``He_k(z) e^(−z²/4)`` oscillates with wavenumber at most ``√k``
(45 at ``k = 2048``), which 32 nodes per unit resolve. The coefficients are those of ``f`` cut
at ``|z| = 10``, within ``√(E[f² ; |Z| > 10])`` of the uncut ones (Cauchy–Schwarz; 3e-11 of the
scale for relu, far less for the sums the series forms), and exactly what the tails measure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from ._jax import jax, jnp

#: numbers of terms tried in turn; the tables are computed with the last
TERMS = (16, 32, 64, 128, 256)
#: terms of the long series, for the entries the first cannot certify
LONG_TERMS = 2048
#: an entry's truncation bound must be at most this fraction of its Cauchy–Schwarz scale
TOLERANCE = 1e-11
#: Gauss–Legendre nodes per piece of the coefficient rule
NODES = 32
_RANGE = 10.0
#: breakpoints of the shared coefficient grid in ``z`` (the Hermite matrix is computed once)
_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, _RANGE)
#: the long series' grid: the same points and every integer up to the range
_LONG_GRID = tuple(sorted(set(_GRID) | {float(k) for k in range(int(_RANGE) + 1)}))
#: feature points (in the function's own variable) of the per-input check of ``E f²``
_FEATURES = (0.0, 1.0, 4.0, 16.0)
_CHECK_NODES = 48
#: an input whose ``E f²`` on the shared grid is off by more than this (relative) is not certified
_GRID_CHECK = 1e-12


def _composite(breaks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    lo, hi = breaks[:-1, None], breaks[1:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x).ravel(), ((hi - lo) / 2 * w).ravel()


@functools.lru_cache(maxsize=4)
def _grid(terms: int, points: tuple = _GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes ``z``, weights (with the Gaussian density) and the matrix ``He_k(z)/√(k!)`` ``(M, terms)``
    of the composite rule split at ``±points``."""
    breaks = np.array(sorted({s * p for p in points for s in (-1.0, 1.0)}))
    z, w = _composite(breaks, NODES)
    w = w * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    H = np.empty((z.size, terms))
    H[:, 0] = 1.0
    if terms > 1:
        H[:, 1] = z
    for k in range(1, terms - 1):
        H[:, k + 1] = (z * H[:, k] - np.sqrt(k) * H[:, k - 1]) / np.sqrt(k + 1.0)
    return z, w, H


@functools.partial(jax.jit, static_argnums=(0, 1))
def _second_moment(fn: Callable, kinks: tuple, s):
    """``E f(s Z)²`` by a composite rule split at ``s z`` = kinks and feature points, per input."""
    moving = np.array(sorted(set(kinks) | {t * p for p in _FEATURES for t in (-1.0, 1.0)}))
    x, w = np.polynomial.legendre.leggauss(_CHECK_NODES)
    safe = jnp.where(s > 0, s, 1.0)
    z = jnp.where(s[:, None] > 0, moving[None, :] / safe[:, None], 2 * _RANGE * np.sign(moving)[None, :])
    ends = jnp.broadcast_to(jnp.asarray([-_RANGE, _RANGE]), (s.shape[0], 2))
    breaks = jnp.sort(jnp.concatenate([ends, jnp.clip(z, -_RANGE, _RANGE)], axis=1), axis=1)
    lo, hi = breaks[:, :-1, None], breaks[:, 1:, None]
    nodes = (lo + hi) / 2 + (hi - lo) / 2 * x
    weights = (hi - lo) / 2 * w * jnp.exp(-nodes * nodes / 2) / np.sqrt(2 * np.pi)
    return jnp.sum(weights * fn(s[:, None, None] * nodes) ** 2, axis=(1, 2))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _tables(fn: Callable, kinks: tuple, var, z, w, H):
    """``(F, second, trusted)``: ``F[i, k] = F_k(var_i)`` for ``k < terms``, ``E f(√var_i Z)²`` and
    whether the shared grid ``(z, w, H)`` (:func:`_grid`; arguments, not constants: XLA would
    fold them slowly) resolves ``f`` at that variance (its ``E f²`` agrees)."""
    s = jnp.sqrt(jnp.maximum(var, 0.0))
    values = fn(s[:, None] * z[None, :])
    coef = jnp.dot(values * w, H, precision=jax.lax.Precision.HIGHEST)
    second = _second_moment(fn, kinks, s)
    on_grid = jnp.sum(values * values * w, axis=1)
    trusted = jnp.abs(on_grid - second) <= _GRID_CHECK * second
    return coef, second, trusted


class Table:
    """Hermite coefficients of one function at the variances of one side of a Gram matrix.

    ``coef`` ``(n, K)``, ``second`` ``E f(√a Z)²`` ``(n,)``, and ``tail[:, t]`` the relative tail
    ``T_f(a, checkpoints[t]) / E f²`` (0 where ``E f² = 0``; 1, i.e. never certified, where the
    grid does not resolve ``f`` at that variance). ``K`` is the last checkpoint: :data:`TERMS`
    (the first series) or ``(LONG_TERMS,)`` (the long series, on its finer grid).
    """

    def __init__(self, fn: Callable, kinks: Sequence[float], var, chunk: int = 8192, checkpoints: tuple = TERMS):
        var = jnp.asarray(var, dtype=jnp.float64).reshape(-1)
        n = var.shape[0]
        terms = checkpoints[-1]
        chunk = min(chunk, (1 << 24) // terms)  # the coefficients of a chunk: at most 128 MiB
        size = min(chunk, max(256 if terms <= TERMS[-1] else 16, 1 << max(0, n - 1).bit_length()))
        var = jnp.concatenate([var, jnp.full((-n) % size, 1.0)])
        key = tuple(sorted(float(k) for k in kinks))
        grid = tuple(jnp.asarray(x) for x in _grid(terms, _GRID if terms <= TERMS[-1] else _LONG_GRID))
        parts = [_tables(fn, key, var[i : i + size], *grid) for i in range(0, var.shape[0], size)]
        self.coef, self.second, trusted = (jnp.concatenate([p[i] for p in parts])[:n] for i in range(3))
        partial = jnp.cumsum(self.coef**2, axis=1)[:, [t - 1 for t in checkpoints]]
        scale = jnp.where(self.second > 0, self.second, 1.0)
        tail = jnp.clip((self.second[:, None] - partial) / scale[:, None], 0.0, 1.0)
        self.tail = jnp.where(trusted[:, None], tail, 1.0)


def choose_terms(pairs: Sequence[tuple[Table, Table]]) -> int:
    """The fewest terms of :data:`TERMS` that certify every entry whatever its correlation (for
    every pair, the largest relative tail of one side times that of the other at most
    ``TOLERANCE²``); the most terms when none does (entries are then certified one by one)."""
    worst = np.zeros(len(TERMS))
    for f, g in pairs:
        worst = np.maximum(worst, np.asarray(jnp.max(f.tail, axis=0) * jnp.max(g.tail, axis=0)))
    ok = np.flatnonzero(worst <= TOLERANCE**2)
    return TERMS[int(ok[0])] if ok.size else TERMS[-1]


#: terms of :func:`polynomial` unrolled in the compiled program (a loop beyond)
_UNROLLED_TERMS = 32


@jax.jit
def polynomial(coef, r):
    """``(Σ_k coef_k r^k, Σ_k k coef_k r^(k−1))`` per entry of ``coef`` ``(*shape, K)`` (``r``:
    ``shape``): Horner's rule, unrolled (one fused loop over the entries) up to
    :data:`_UNROLLED_TERMS` terms, a loop beyond (XLA took 6–8 s to compile the Newton passes
    with 256 unrolled terms)."""
    terms = coef.shape[-1]
    value, slope = coef[..., terms - 1], jnp.zeros_like(r)
    if terms > _UNROLLED_TERMS:

        def horner(carry, column):
            value, slope = carry
            return (value * r + column, slope * r + value), None

        (value, slope), _ = jax.lax.scan(horner, (value, slope), jnp.moveaxis(coef[..., terms - 2 :: -1], -1, 0))
        return value, slope
    for k in range(terms - 2, -1, -1):
        slope = slope * r + value
        value = value * r + coef[..., k]
    return value, slope


# -- one Gram matrix -----------------------------------------------------------------------------

#: the (x-side, y-side) functions each series pair contributes, and the weight of each in the
#: update ``G = (K_σσ − μ' K_σρ − μ K_ρσ + c K_ρρ)/λ²``
_CONTRIBUTIONS = {
    "sigma,sigma": (("sigma", "sigma", "one"),),
    "sigma,rho": (("sigma", "rho", "-mu_y"), ("rho", "sigma", "-mu_x")),
    "rho,rho": (("rho", "rho", "c"),),
}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _combine(weights: tuple, terms: int, xs, ys, i, j, c, mu_x, mu_y):
    """Per entry, the first ``terms`` coefficients ``D_k`` of ``Σ_k r^k D_k`` (before the ``1/λ²``)."""
    factor = {"one": jnp.ones_like(c), "-mu_y": -mu_y, "-mu_x": -mu_x, "c": c}
    total = 0.0
    for weight, fx, gy in zip(weights, xs, ys):
        total = total + factor[weight][:, None] * fx[:, :terms][i] * gy[:, :terms][j]
    return total


@functools.partial(jax.jit, static_argnums=(0, 1))
def _certify(terms: int, column: int, tolerance, tails_x, tails_y, i, j, p, a, b):
    """Whether ``|r|^K √(t_f t_g) ≤ tolerance`` for every series pair of each entry (``K`` =
    ``terms``, the tails' ``column``)."""
    return _within_bound(
        terms, tolerance, [(tx[i, column], ty[j, column]) for tx, ty in zip(tails_x, tails_y)], p, a, b
    )


def _within_bound(terms: int, tolerance, tails: list, p, a, b):
    """Whether ``|r|^K √(t_f t_g) ≤ tolerance`` for each pair ``(t_f, t_g)`` of ``tails`` (the
    entries' relative tails after ``K`` = ``terms`` terms) at the root ``p``."""
    sab = jnp.sqrt(a * b)
    r = jnp.where(sab > 0, jnp.abs(p) / jnp.where(sab > 0, sab, 1.0), 0.0)
    reach = jnp.minimum(r, 1.0) ** terms
    ok = jnp.ones(p.shape, bool)
    for tx, ty in tails:
        ok = ok & (reach * jnp.sqrt(tx * ty) <= tolerance)
    return ok


def tile_coefficients(weights: tuple, xs, ys, i, j, c, mu_x, mu_y):
    """:meth:`GramSeries.coefficients` from the tables of :meth:`GramSeries.tile_sides` (``xs``,
    ``ys``: ``(K, inputs)`` per pair) for entries ``(i, j)`` that broadcast together (a tile's
    rows and columns): ``D`` ``(*shape, K)``, each table row gathered once per input."""
    factor = {"one": jnp.ones_like(c), "-mu_y": -mu_y, "-mu_x": -mu_x, "c": c}
    total = 0.0
    for weight, fx, gy in zip(weights, xs, ys):
        total = total + factor[weight][..., None] * jnp.moveaxis(fx[:, i], 0, -1) * jnp.moveaxis(gy[:, j], 0, -1)
    return total


def tile_certified(terms: int, tolerance, tails_x, tails_y, i, j, p, a, b):
    """:meth:`GramSeries.certified` from the tails of :meth:`GramSeries.tile_sides` (``(inputs,)``
    per pair, at ``terms``)."""
    return _within_bound(terms, tolerance, [(tx[i], ty[j]) for tx, ty in zip(tails_x, tails_y)], p, a, b)


def series_step(closed: Callable, p, a, b, c, mu_x, mu_y, lam, D):
    """``(G(p), G'(p))``: the closed-form pairs' part ``closed`` plus the series ``Σ_k r^k D_k / λ²``."""
    g, dg = closed(p, a, b, c, mu_x, mu_y, lam)
    sab = jnp.sqrt(a * b)
    positive = sab > 0
    r = jnp.where(positive, jnp.clip(p / jnp.where(positive, sab, 1.0), -1.0, 1.0), 0.0)
    value, slope = polynomial(D, r)
    inv = 1.0 / (lam * lam)
    return g + value * inv, dg + jnp.where(positive, slope / jnp.where(positive, sab, 1.0), 0.0) * inv


class GramSeries:
    """The Mehler series of a kernel module's pairs without closed form, for one Gram matrix.

    ``module`` is a kernel module with ``SERIES`` and ``KINKS`` (see :func:`dekc.codegen.kernel_module`);
    ``ax`` and ``ay`` the diagonal values of the two sides. ``terms`` is the number of terms
    used (:func:`choose_terms`; :data:`LONG_TERMS` for the ``long`` series, whose tables are
    usually built for the inputs of the entries the first could not certify), ``tolerance`` the
    certification threshold (:data:`TOLERANCE`).
    """

    def __init__(self, module, ax, ay, symmetric: bool, long: bool = False):
        contributions = [part for key in module.SERIES for part in _CONTRIBUTIONS[key]]
        needed = {name for f, g, _ in contributions for name in (f, g)}
        functions = {"sigma": module.sigma, "rho": module.rho}
        checkpoints = (LONG_TERMS,) if long else TERMS

        def tables(var):
            return {name: Table(functions[name], module.KINKS[name], var, checkpoints=checkpoints) for name in needed}

        x = tables(ax)
        y = x if symmetric else tables(ay)
        self.tolerance = TOLERANCE
        self.terms = LONG_TERMS if long else choose_terms([(x[f], y[g]) for f, g, _ in contributions])
        self._checkpoints = checkpoints
        self._weights = tuple(w for _, _, w in contributions)
        self._xs = tuple(x[f].coef[:, : self.terms] for f, _, _ in contributions)
        self._ys = tuple(y[g].coef[:, : self.terms] for _, g, _ in contributions)
        self._tails_x = tuple(x[f].tail for f, _, _ in contributions)
        self._tails_y = tuple(y[g].tail for _, g, _ in contributions)

    def coefficients(self, i, j, c, mu_x, mu_y, terms: int | None = None):
        """``D`` ``(chunk, terms)`` of the entries ``(i, j)`` (``terms``: one of the checkpoints up
        to :attr:`terms`, default :attr:`terms`)."""
        terms = self.terms if terms is None else terms
        return _combine(self._weights, terms, self._xs, self._ys, i, j, c, mu_x, mu_y)

    @property
    def weights(self) -> tuple:
        """The weight of each series pair in the update (``"one"``, ``"-mu_y"``, ``"-mu_x"``, ``"c"``)."""
        return self._weights

    def tile_sides(self, terms: int) -> tuple:
        """The first ``terms`` coefficients and the relative tails after them, per input, for
        :func:`tile_coefficients` and :func:`tile_certified`: ``((xs, tails_x), (ys, tails_y))``,
        host arrays with the input along the last axis (``(terms, n)`` tables, ``(n,)`` tails)."""
        column = self._checkpoints.index(terms)

        def side(tables, tails):
            return (
                tuple(np.asarray(t[:, :terms]).T for t in tables),
                tuple(np.asarray(t[:, column]) for t in tails),
            )

        return side(self._xs, self._tails_x), side(self._ys, self._tails_y)

    def certified(self, i, j, p, a, b, terms: int | None = None):
        """Whether each entry's truncation bound with ``terms`` terms (default :attr:`terms`) at its
        root ``p`` is within :data:`TOLERANCE`."""
        terms = self.terms if terms is None else terms
        column = self._checkpoints.index(terms)
        return _certify(terms, column, self.tolerance, self._tails_x, self._tails_y, i, j, p, a, b)
