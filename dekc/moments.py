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
from typing import Any, NamedTuple

import numpy as np
import sympy as sp

from . import cache, codegen, validate
from ._jax import jax, jnp
from .errors import InputError
from .expectations import gaussian_expectation
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
    ids = _equal_rows(rows)
    if symmetric:  # (host arrays: a device copy would load a program for every n)
        return ids, ids
    return ids[: len(xt)], ids[len(xt) :]


def _equal_rows(rows: np.ndarray) -> np.ndarray:
    """int32 ids, equal exactly for equal rows (``-0.0 == 0.0``), numbered in the order of the
    rows sorted by a projection on fixed weights (equal rows have equal projections); when two
    rows that differ project alike and sit side by side in that order, by the lexicographic
    order of the rows instead (measured at n = 1000: 0.12 ms against 1.7 ms for
    ``np.unique(axis=0)``)."""
    n = rows.shape[0]
    weights = 1.0 + np.arange(rows.shape[1]) / (np.pi * max(1, rows.shape[1]))
    projection = np.einsum("ij,j->i", rows, weights)
    order = np.argsort(projection, kind="stable")
    ordered = rows[order]
    differ = np.any(ordered[1:] != ordered[:-1], axis=1)
    if np.any(differ & (projection[order][1:] == projection[order][:-1])):
        order = np.lexsort(rows.T[::-1])
        ordered = rows[order]
        differ = np.any(ordered[1:] != ordered[:-1], axis=1)
    ids = np.empty(n, dtype=np.int32)
    ids[order] = np.concatenate([[0], np.cumsum(differ)]).astype(np.int32)
    return ids


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
    """The expectations of one feature map ``f`` as JAX functions: ``ff_one_point(a) = E[f(u)²]``,
    ``f1_one_point(a) = E[f(u)]`` (``u ~ N(0, a)``), and ``entries`` (:func:`gram_entries`
    bound to the pair form of ``E[f f]``; one object per feature map, so the compiled chunk
    preparation is reused)."""

    ff_one_point: Callable
    f1_one_point: Callable
    entries: Callable


@functools.lru_cache(maxsize=64)
def _feature_moments(f: sp.Expr) -> FeatureMoments:
    """Closed-form feature expectations come from a sealed module in the kernel cache
    (``features/``), so a new process loads them instead of deriving them again (sympy takes
    1–2 s for ReLU features); the others are derived in the process."""
    digest = cache.input_hash({"features": sp.srepr(f)})
    path = cache.features_path(digest)
    text = cache.read_cached(path, digest)
    if text is None:
        ff, f1 = gaussian_expectation(f, f), gaussian_expectation(f, sp.Integer(1))
        if ff.closed is None or f1.closed is None:
            return FeatureMoments(ff.one_point, f1.one_point, functools.partial(gram_entries, ff.positive))
        functions = ff.source("FF", f"E[f(u) f(v)] of the feature map f = {f}") + "\n\n\n" + f1.source("F1", "E[f(u)]")
        header = (
            f"# Generated by dekc: the Gaussian expectations of the feature map f = {f}.\nINPUT_HASH = {digest!r}\n\n"
        )
        text = codegen.seal(header + codegen.expectation_module(functions, quadrature=False))
        path = cache.store(path, text)
    module = codegen.load_module(text, f"dekc_features_{digest[:16]}", str(path))
    return FeatureMoments(
        jax.jit(module.FF_one_point),
        jax.jit(module.F1_one_point),
        functools.partial(gram_entries, jax.jit(module._FF_form)),
    )


class InputMoments(NamedTuple):
    """What a Gram matrix needs from its inputs: ``x̃``, ``ỹ``, ``|x̃|²``, ``|ỹ|²``, the pair
    products (:func:`pair_products`), ``s²``, ``c(x, x)``, ``c(y, y)``, ``μ(x)``, ``μ(y)``."""

    xt: Any
    yt: Any
    nx: Any
    ny: Any
    products: Any
    s2: Any
    cdx: Any
    cdy: Any
    mux: Any
    muy: Any


@functools.partial(jax.jit, static_argnums=(0, 1))
def input_moments(feature: FeatureMoments, symmetric: bool, X, Y, input_scale, bias, feature_scale) -> InputMoments:
    """:class:`InputMoments` of ``X`` and ``Y`` (``Y`` ignored when ``symmetric``) for the feature
    map ``feature``, as one compiled program."""
    xt = augment(X, input_scale, bias)
    yt = xt if symmetric else augment(Y, input_scale, bias)
    nx, ny = jnp.sum(xt * xt, axis=1), jnp.sum(yt * yt, axis=1)
    s2 = jnp.square(feature_scale)
    return InputMoments(
        xt,
        yt,
        nx,
        ny,
        pair_products(xt, yt),
        s2,
        s2 * feature.ff_one_point(nx),
        s2 * feature.ff_one_point(ny),
        feature_scale * feature.f1_one_point(nx),
        feature_scale * feature.f1_one_point(ny),
    )


#: rows per compiled call of :func:`blocked_input_moments` (fewer, a power of two, for fewer rows)
ROW_BLOCK = 1024


@functools.partial(jax.jit, static_argnums=0)
def _side_moments(feature: FeatureMoments, X, input_scale, bias, feature_scale):
    """``(x̃, |x̃|², c(x, x), μ(x))`` of the rows of ``X``."""
    xt = augment(X, input_scale, bias)
    norms = jnp.sum(xt * xt, axis=1)
    return (
        xt,
        norms,
        jnp.square(feature_scale) * feature.ff_one_point(norms),
        feature_scale * feature.f1_one_point(norms),
    )


def blocked_input_moments(
    feature: FeatureMoments,
    symmetric: bool,
    X,
    Y,
    input_scale,
    bias,
    feature_scale,
    columns: bool = False,
    rows_of: tuple[int, int] | None = None,
):
    """:func:`input_moments` of concrete inputs as host arrays, computed :data:`ROW_BLOCK` rows
    per compiled call (the last block padded with its first row): the program does not depend
    on ``n``, so a Gram matrix of a new size loads none (measured after a first matrix at
    n = 800: the first one at n = 4000 peaked at 1.15–1.19 times the output while it loaded
    three programs for its size, 1.09 times once none was left to load). ``columns=True``: the
    products as the transposed inputs, whatever their width (memory O(n), not O(n·m)).
    ``rows_of``: the numbers of inputs of the whole X and Y when ``X``, ``Y`` are blocks of them
    (the rows per call are then those of the whole matrix, and so are the values, to the last bit:
    XLA may round a sum differently in a program of another size)."""

    def side(Z, whole=None):
        Z = np.asarray(Z, dtype=np.float64)
        n = Z.shape[0]
        size = min(ROW_BLOCK, max(16, 1 << max(0, (n if whole is None else whole) - 1).bit_length()))
        parts = []
        for lo in range(0, n, size):
            block = Z[lo : lo + size]
            if block.shape[0] < size:
                block = np.concatenate([block, np.repeat(block[:1], size - block.shape[0], axis=0)])
            parts.append([np.asarray(v) for v in _side_moments(feature, block, input_scale, bias, feature_scale)])
        return [np.concatenate(column)[:n] for column in zip(*parts)]

    whole_x, whole_y = (None, None) if rows_of is None else rows_of
    xt, nx, cdx, mux = side(X, whole_x)
    yt, ny, cdy, muy = (xt, nx, cdx, mux) if symmetric else side(Y, whole_y)
    # (the matrix of products, for many columns, in one compiled product: BLAS threads spin)
    if columns or xt.shape[1] <= DOT_COLUMNS:
        products = (xt.T, yt.T)
    else:
        products = np.asarray(jnp.asarray(xt) @ jnp.asarray(yt).T)
    return InputMoments(xt, yt, nx, ny, products, float(feature_scale) ** 2, cdx, cdy, mux, muy)


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
    #: which input indexes each of ``correlation_args`` (as :func:`entries_arguments`), or ``None``
    sides: Any = None
    #: the correlation, from the same arguments, that predicts the roots of a fitted start
    #: (``Kernel._start_fit``); ``None``: the start correlation itself
    fit_correlation: Callable | None = None


def pair_sides(products):
    """Which input indexes each array of :func:`pair_products`' result along its last axis:
    ``("x", "y")`` (the entry's row ``i``, its column ``j``), or ``None`` for the matrix of
    products (indexed by both)."""
    return ("x", "y") if isinstance(products, tuple) else None


def entries_arguments(ids_x, ids_y, nx, ny, products, cdx, s2) -> tuple[tuple, tuple | None]:
    """The arguments of :func:`gram_entries` after ``(pair, i, j)``, and which input indexes
    each along its last axis (``"x"``, ``"y"``; ``""``: not indexed by the entry; ``None``
    when the products are a matrix indexed by both, see :func:`pair_sides`)."""
    sides = ("x", "y", "x", "y", pair_sides(products), "x", "")
    return (ids_x, ids_y, nx, ny, products, cdx, s2), (None if sides[4] is None else sides)


def _unit_then_moments(i, j, c, cd):
    return _unit_correlation(i, j)


def _array_then_moments(i, j, psi, d, c, cd):
    return _array_correlation(i, j, psi, d)


def _moments_after_unit(i, j, c, cd):
    return _array_correlation(i, j, c, cd)


def _moments_after_array(i, j, psi, d, c, cd):
    return _array_correlation(i, j, c, cd)


def moment_start(start: Start, c, cd) -> Start:
    """``start`` (``"constant"`` or an array) for a fixed point from moments, with the correlation
    of the input moments, ``c(x, y)/√(c(x, x) c(y, y))``, as the one a fitted start predicts
    from: for a positively homogeneous kernel the scaled roots are a function of it, while a
    constant start is the same for every entry."""
    if start.correlation is _unit_correlation:
        return dataclasses.replace(
            start,
            correlation=_unit_then_moments,
            correlation_args=(c, cd),
            fit_correlation=_moments_after_unit,
            sides=None,
        )
    return dataclasses.replace(
        start,
        correlation=_array_then_moments,
        correlation_args=(*start.correlation_args, c, cd),
        fit_correlation=_moments_after_array,
        sides=None,
    )


def start(psi0, nx, ny, products, symmetric: bool, n: int) -> Start:
    """The start ``Ψ₀``: ``"input"`` (``x̃·x̃'``: needs ``nx``, ``ny``, ``products``), ``"constant"``
    (every entry 1) or an ``(n, n)`` array (square Gram matrices only)."""
    if isinstance(psi0, str):
        if psi0 == "constant":
            ones = jnp.ones(n) if nx is None else jnp.ones_like(nx)
            return Start(ones, ones if ny is None else jnp.ones_like(ny), _unit_correlation, (), ())
        if psi0 == "input":
            return Start(nx, ny, _input_correlation, (nx, ny, products), ("x", "y", pair_sides(products)))
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
