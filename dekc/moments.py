"""Input moments and the per-entry data the kernel and the baselines share.

For inputs ``x̃ = (input_scale·x, bias)`` and a feature map ``f`` with feature scale ``s``, the
input moments are ``c(x, x') = s² E[f(w) f(w')]`` and ``μ(x) = s E[f(w)]``, ``(w, w')`` Gaussian
with covariance ``x̃·x̃'`` (``c(x, x)`` by the one-point form). Entries are addressed by index
arrays ``(i, j)``; identical inputs are recognised by row ids (:func:`row_ids`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp

from . import validate
from ._jax import jnp
from .errors import InputError
from .expectations import GaussianExpectation, gaussian_expectation
from .expressions import as_eta_expression
from .gaussian import VARIANCE_FLOOR
from .validate import is_traced

#: up to this many columns, ``x̃·ỹ`` is computed entry by entry from the rows (no ``n × m``
#: temporary, and every entry is computed the same way whichever matrix it belongs to)
DOT_COLUMNS = 64


def augment(X, input_scale, bias):
    """``x̃ = (input_scale·x, bias)``."""
    return jnp.concatenate([input_scale * X, jnp.full((X.shape[0], 1), 1.0) * bias], axis=1)


def pair_products(xt, yt):
    """What :func:`dot` needs to give ``x̃_i·ỹ_j``: the transposed inputs ``(x̃ᵀ, ỹᵀ)`` for few
    columns (:data:`DOT_COLUMNS`), else the matrix of products."""
    return (xt.T, yt.T) if xt.shape[1] <= DOT_COLUMNS else xt @ yt.T


def dot(products, i, j):
    """``x̃_i·ỹ_j`` from :func:`pair_products` (one gather per column and input: much cheaper than
    gathering rows)."""
    if isinstance(products, tuple):
        xs, ys = products
        out = xs[0][i] * ys[0][j]
        for k in range(1, xs.shape[0]):
            out = out + xs[k][i] * ys[k][j]
        return out
    return products[i, j]


def row_ids(xt, yt, symmetric: bool):
    """Integer ids with equal ids exactly for equal rows of ``x̃`` (rows themselves when traced)."""
    if is_traced(xt, yt):
        return xt, yt
    rows = np.asarray(xt) if symmetric else np.concatenate([np.asarray(xt), np.asarray(yt)])
    ids = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int32)
    if symmetric:
        return jnp.asarray(ids), jnp.asarray(ids)
    return jnp.asarray(ids[: len(xt)]), jnp.asarray(ids[len(xt) :])


def same_rows(ids_x, ids_y, i, j):
    """Whether ``x̃_i = ỹ_j``, from :func:`row_ids` (ids, or the rows themselves when traced)."""
    if ids_x.ndim == 1:
        return ids_x[i] == ids_y[j]
    return jnp.all(ids_x[i] == ids_y[j], axis=1)


def squared_norms(X: np.ndarray, input_scale: float, bias: float) -> np.ndarray:
    """``|x̃|²`` for each row, computed so that it neither underflows nor overflows before the range
    check (a row of 1e-170s has |x̃|² ≈ 1e-340: reported, not flushed to 0)."""
    xt = np.concatenate([X * float(input_scale), np.full((X.shape[0], 1), float(bias))], axis=1)
    top = np.max(np.abs(xt), axis=1)
    safe = np.where(top > 0, top, 1.0)
    with np.errstate(over="ignore", under="ignore"):
        log_norm = 2 * np.log10(safe) + np.log10(np.sum(np.square(xt / safe[:, None]), axis=1))
        return np.where(top > 0, 10.0 ** np.clip(log_norm, -320, 400), 0.0)  # 1e-320: still non-zero


# -- feature maps ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureMoments:
    """The expectations of one feature map ``f``: ``ff`` (``E[f f]``), ``f1`` (``E[f]``) and
    ``entries`` (:func:`gram_entries` bound to ``ff``'s pair form; one object per feature map, so
    the compiled chunk preparation is reused)."""

    ff: GaussianExpectation
    f1: GaussianExpectation
    entries: Callable


@functools.lru_cache(maxsize=64)
def _feature_moments(f: sp.Expr) -> FeatureMoments:
    ff = gaussian_expectation(f, f)
    return FeatureMoments(ff, gaussian_expectation(f, sp.Integer(1)), functools.partial(gram_entries, ff.positive))


def feature_moments(features) -> FeatureMoments:
    """The expectations of the feature map ``features`` (shorthand, text in ``eta`` or sympy)."""
    return _feature_moments(as_eta_expression(features, what="features"))


def gram_entries(pair, i, j, same_x, same_y, nx, ny, products, cdx, s2):
    """``c(x_i, y_j)`` and whether the two inputs are identical.

    ``same_x``, ``same_y`` come from :func:`row_ids`. ``pair`` is the feature pair form for
    positive variances; a zero variance is floored at :data:`VARIANCE_FLOOR` (the limit).
    """
    same = same_rows(same_x, same_y, i, j)
    # identical pairs take the one-point value; the pair form sees c = 0 there (its gradient at
    # full correlation is infinite and would poison the where)
    floor = VARIANCE_FLOOR
    c = jnp.where(
        same,
        cdx[i],
        s2 * pair(jnp.maximum(nx[i], floor), jnp.maximum(ny[j], floor), jnp.where(same, 0.0, dot(products, i, j))),
    )
    return c, same


def moment_entries(i, j, c, cd, mu):
    """``c_ij`` and whether inputs ``i`` and ``j`` are identical (equal moments)."""
    same = (c[i, j] == cd[i]) & (cd[i] == cd[j]) & (mu[i] == mu[j])
    return c[i, j], same


# -- starting points -------------------------------------------------------------------------------


def correlation(dot_value, var_i, var_j):
    """``dot/√(var_i var_j)`` clipped to ``[−1, 1]``; 0 where a variance is 0."""
    norm = jnp.sqrt(var_i * var_j)
    return jnp.where(norm > 0, jnp.clip(dot_value / jnp.where(norm > 0, norm, 1.0), -1.0, 1.0), 0.0)


def _input_correlation(i, j, nx, ny, products):
    return correlation(dot(products, i, j), nx[i], ny[j])


def _array_correlation(i, j, psi, d):
    return correlation(psi[i, j], d[i], d[j])


def _unit_correlation(i, j):
    return jnp.ones(i.shape)


@dataclasses.dataclass(frozen=True)
class Start:
    """Where the iteration starts: diagonal values ``a0_x``, ``a0_y`` and the start correlation of
    entry ``(i, j)``, ``correlation(i, j, *correlation_args)``."""

    a0_x: Any
    a0_y: Any
    correlation: Callable
    correlation_args: tuple


def start(psi0, nx, ny, products, symmetric: bool, n: int) -> Start:
    """The start ``Ψ₀``: ``"input"`` (``x̃·x̃'``: needs ``nx``, ``ny``, ``products``), ``"constant"``
    (every entry 1) or an ``(n, n)`` array (square Gram matrices only)."""
    if isinstance(psi0, str):
        if psi0 == "constant":
            ones = jnp.ones(n) if nx is None else jnp.ones_like(nx)
            return Start(ones, ones if ny is None else jnp.ones_like(ny), _unit_correlation, ())
        if psi0 == "input":
            return Start(nx, ny, _input_correlation, (nx, ny, products))
        raise InputError(f"psi0 must be 'input', 'constant' or an (n, n) array, got {psi0!r}")
    if psi0 is None or isinstance(psi0, (int, float, bool)):
        raise InputError(f"psi0 must be 'input', 'constant' or an (n, n) array, got {psi0!r}")
    if not symmetric:
        raise InputError("an array psi0 needs the square Gram matrix (Y omitted): it must give Psi_0 for every pair")
    if is_traced(psi0):
        psi = jnp.asarray(psi0, dtype=jnp.float64)
        if psi.shape != (n, n):
            raise InputError(f"psi0 must have shape ({n}, {n}), got {psi.shape}")
    else:
        psi = validate.square_matrix(psi0, "psi0", n)
        if np.any(np.diagonal(psi) < 0):
            raise InputError("psi0 must have a non-negative diagonal (Psi_0(x, x) = |z_0(x)|^2)")
        psi = jnp.asarray(psi)
    d = jnp.diagonal(psi)
    return Start(d, d, _array_correlation, (psi, d))
