"""Nyström approximation of a DEKer, for kernel ridge regression and GP regression at scale.

With ``m`` landmarks ``Z`` the kernel is approximated by ``k(x, x') ≈ k(x, Z) K_ZZ⁺ k(Z, x')``,
the features ``φ(x) = k(x, Z) U S^{-1/2}`` (``K_ZZ = U S Uᵀ``, eigenvalues below
``rcond × largest`` dropped). Kernel ridge regression with penalty ``α`` — equivalently the
posterior mean of a GP with noise variance ``α`` under the subset-of-regressors approximation —
is ridge regression on ``φ``: ``w = (ΦᵀΦ + αI)⁻¹ Φᵀy``, ``f(x) = φ(x)·w``.

The ``n × m`` cross kernel is computed in blocks of rows from one :class:`dekc.kernel.GramPlan`
(the inputs' diagonal solved once) and consumed as it comes: fitting accumulates ``ΦᵀΦ`` and
``Φᵀy``, prediction multiplies each block by ``w``. Memory is O(m² + block·m) plus the inputs,
never O(n·m) unless the features themselves are asked for (:meth:`NystromMap.features`). With a
``dask.distributed`` client each block is a task that returns its ``m × m`` contribution.

Landmarks (:func:`choose_landmarks`): ``"uniform"`` (rows drawn without replacement) or
``"kmeans"`` (centres of k-means, k-means++ seeding then Lloyd iterations, on a sample of at
most ``max(20·m, 10000)`` rows): centres cover the inputs more evenly, which lowers the error
of the approximation for the same ``m``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import validate
from .blocks import cluster_tasks
from .errors import InputError
from .kernel import GramPlan, Kernel

__all__ = ["LANDMARK_METHODS", "NystromMap", "NystromRidge", "choose_landmarks"]

LANDMARK_METHODS = ("uniform", "kmeans")
#: rows of the cross kernel per block
DEFAULT_BLOCK = 4096
#: eigenvalues of ``K_ZZ`` below this fraction of the largest are dropped (float64 rounding of
#: the Gram matrix is ~1e-16 relative; its inverse square root is then accurate to ~1e-4)
RCOND = 1e-10


def choose_landmarks(
    X: ArrayLike, m: int, method: str = "uniform", *, seed: int = 0, iterations: int = 10
) -> np.ndarray:
    """``m`` landmarks for the inputs ``X`` ``(n, d)``: ``"uniform"`` (distinct rows drawn at random)
    or ``"kmeans"`` (k-means centres: k-means++ seeding and ``iterations`` Lloyd steps on a sample
    of at most ``max(20·m, 10000)`` rows). Deterministic for a given ``seed``."""
    X = validate.matrix(X, "X")
    n = X.shape[0]
    m = validate.count(m, "n_components", minimum=1)
    if m > n:
        raise InputError(f"n_components = {m} landmarks need at least as many inputs; X has {n} rows")
    validate.choice(method, "landmarks", LANDMARK_METHODS)
    rng = np.random.default_rng(validate.count(seed, "seed", minimum=0))
    if method == "uniform":
        return X[np.sort(rng.choice(n, m, replace=False))].copy()
    iterations = validate.count(iterations, "iterations", minimum=0)
    sample = X[rng.choice(n, min(n, max(20 * m, 10000)), replace=False)]
    return _kmeans(sample, m, iterations, rng)


def _sq_distances(A: np.ndarray, C: np.ndarray, c_norms: np.ndarray) -> np.ndarray:
    return np.maximum(np.sum(A * A, axis=1)[:, None] - 2.0 * A @ C.T + c_norms[None, :], 0.0)


def _kmeans(S: np.ndarray, m: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (one candidate per centre) and Lloyd steps; an emptied centre keeps its place."""
    centres = np.empty((m, S.shape[1]))
    centres[0] = S[rng.integers(S.shape[0])]
    closest = np.sum((S - centres[0]) ** 2, axis=1)
    for k in range(1, m):
        total = closest.sum()
        pick = rng.integers(S.shape[0]) if not total > 0 else rng.choice(S.shape[0], p=closest / total)
        centres[k] = S[pick]
        closest = np.minimum(closest, np.sum((S - centres[k]) ** 2, axis=1))
    for _ in range(iterations):
        norms = np.sum(centres * centres, axis=1)
        labels = np.concatenate(
            [np.argmin(_sq_distances(S[lo : lo + 8192], centres, norms), axis=1) for lo in range(0, S.shape[0], 8192)]
        )
        counts = np.bincount(labels, minlength=m)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, S)
        filled = counts > 0
        moved = sums[filled] / counts[filled, None]
        if np.array_equal(moved, centres[filled]):
            break
        centres[filled] = moved
    return centres


def _block(block) -> int:
    return validate.count(block, "block", minimum=1, maximum=1 << 20)


@dataclasses.dataclass(eq=False)
class NystromMap:
    """The Nyström feature map of ``kernel`` (with the :meth:`dekc.Kernel.gram` parameters
    ``params``) at ``landmarks``: :meth:`fit` computes ``K_ZZ`` and its inverse square root
    ``components`` ``(m, r)``; then ``φ(X) = k(X, Z) @ components``."""

    kernel: Kernel
    landmarks: np.ndarray
    params: dict = dataclasses.field(default_factory=dict)
    rcond: float = RCOND
    components: np.ndarray | None = None
    #: eigenvalues of ``K_ZZ`` kept, in decreasing order
    eigenvalues: np.ndarray | None = None

    def fit(self) -> NystromMap:
        Z = validate.matrix(self.landmarks, "landmarks")
        if not 0 <= self.rcond < 1:
            raise InputError(f"rcond must be in [0, 1), got {self.rcond!r}")
        K = np.asarray(self.kernel.gram(Z, **self.params))
        s, U = np.linalg.eigh(0.5 * (K + K.T))
        order = np.argsort(s)[::-1]
        s, U = s[order], U[:, order]
        keep = s > self.rcond * s[0] if s[0] > 0 else np.zeros(s.shape, bool)
        if not keep.any():
            raise InputError("the landmarks' Gram matrix has no positive eigenvalue: choose other landmarks")
        self.eigenvalues = s[keep]
        self.components = U[:, keep] / np.sqrt(s[keep])
        return self

    @property
    def rank(self) -> int:
        return 0 if self.components is None else int(self.components.shape[1])

    def plan(self, X: ArrayLike) -> GramPlan:
        """The plan of the cross kernel ``k(X, Z)``: the diagonal of every input solved once."""
        self._fitted()
        return self.kernel.gram_plan(X, self.landmarks, **self.params)

    def iter_features(self, X: ArrayLike, *, block: int = DEFAULT_BLOCK) -> Iterator[tuple[slice, np.ndarray]]:
        """``(rows, φ(X[rows]))`` for consecutive blocks of ``block`` rows (memory: one block)."""
        plan = self.plan(X)
        yield from self._features_of(plan, _block(block))

    def _features_of(self, plan: GramPlan, block: int) -> Iterator[tuple[slice, np.ndarray]]:
        n, m = plan.shape
        components = self._fitted()
        for lo in range(0, n, block):
            rows = slice(lo, min(n, lo + block))
            yield rows, features_block(self.kernel, plan, components, rows, block)

    def features(self, X: ArrayLike, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
        """``φ(X)`` ``(n, r)`` in memory (O(n·r))."""
        X = validate.matrix(X, "X")
        out = np.empty((X.shape[0], self.rank))
        for rows, values in self.iter_features(X, block=block):
            out[rows] = values
        return out

    def normal_equations(
        self, X: ArrayLike, y: ArrayLike, *, block: int = DEFAULT_BLOCK, client: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ΦᵀΦ, ΦᵀY)`` (``y`` ``(n,)`` or ``(n, t)``), from ``K_XZᵀK_XZ`` and ``K_XZᵀY`` accumulated
        over blocks of rows of the cross kernel (one product of ``block × m`` per block; the
        components are applied once at the end). With a ``dask.distributed`` client (or a scheduler
        address) each block is a task on the cluster that returns its two ``m``-column sums."""
        X = validate.matrix(X, "X")
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0] or not np.all(np.isfinite(Y)):
            raise InputError(f"y must be finite, of shape ({X.shape[0]},) or ({X.shape[0]}, t); got shape {Y.shape}")
        Y2 = Y.reshape(X.shape[0], -1)
        block = _block(block)
        plan = self.plan(X)
        C = self._fitted()
        m = C.shape[0]
        gram, cross = np.zeros((m, m)), np.zeros((m, Y2.shape[1]))
        if client is None:
            for lo in range(0, plan.shape[0], block):
                g, c = sums_block(self.kernel, plan, Y2[lo : lo + block], slice(lo, lo + block), block)
                gram += g
                cross += c
        else:
            for g, c in _cluster_sums(self.kernel, plan, Y2, block, client):
                gram += g
                cross += c
        gram = C.T @ (0.5 * (gram + gram.T)) @ C
        return 0.5 * (gram + gram.T), (C.T @ cross).reshape((C.shape[1],) + Y.shape[1:])

    def _fitted(self) -> np.ndarray:
        if self.components is None:
            raise InputError("the Nyström map is not fitted: call fit() first")
        return self.components


def cross_block(kernel: Kernel, plan: GramPlan, rows: slice, block: int) -> np.ndarray:
    """The cross kernel's rows ``rows`` (a short last block padded to ``block`` rows to run the
    same compiled programs)."""
    n, m = plan.shape
    rows = slice(rows.start, min(n, rows.stop))
    return np.asarray(kernel.gram_block(plan, rows, slice(0, m), pad=block))


def features_block(kernel: Kernel, plan: GramPlan, components: np.ndarray, rows: slice, block: int) -> np.ndarray:
    """``φ`` of the plan's inputs ``rows``: their cross-kernel block times ``components``."""
    return cross_block(kernel, plan, rows, block) @ components


def sums_block(kernel: Kernel, plan: GramPlan, Y2: np.ndarray, rows: slice, block: int):
    """One block's ``(KᵀK, KᵀY)`` (a cluster task)."""
    K = cross_block(kernel, plan, rows, block)
    return K.T @ K, K.T @ Y2


def _cluster_sums(kernel, plan, Y2, block, client):
    calls = [(Y2[lo : lo + block], slice(lo, lo + block), block) for lo in range(0, plan.shape[0], block)]
    for _, sums in cluster_tasks(client, sums_block, [kernel, plan], calls):
        yield sums


@dataclasses.dataclass(eq=False)
class NystromRidge:
    """Kernel ridge regression (GP regression's posterior mean with noise variance ``alpha``) on
    the Nyström features of ``feature_map`` (fitted). :meth:`fit` streams the cross kernel;
    :meth:`predict` too; ``return_std`` gives the subset-of-regressors predictive standard
    deviation ``√(α φᵀ(ΦᵀΦ + αI)⁻¹φ)`` (without the noise), which shrinks far from the landmarks."""

    feature_map: NystromMap
    alpha: float = 1e-3
    weights: np.ndarray | None = None
    #: the inverse of the Cholesky factor of ``ΦᵀΦ + αI``
    _cholesky: np.ndarray | None = None

    def fit(self, X: ArrayLike, y: ArrayLike, *, block: int = DEFAULT_BLOCK, client: Any = None) -> NystromRidge:
        alpha = validate.real(self.alpha, "alpha", positive=True)
        gram, cross = self.feature_map.normal_equations(X, y, block=block, client=client)
        A = gram + alpha * np.eye(gram.shape[0])
        try:
            L = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            raise InputError(
                f"ΦᵀΦ + alpha·I is not positive definite in float64 (alpha = {alpha:g}): raise alpha"
            ) from None
        self._cholesky = np.linalg.solve(L, np.eye(L.shape[0]))  # L⁻¹, for the predictive deviation
        self.weights = _cho_solve(L, cross)
        return self

    def predict(
        self, X: ArrayLike, *, block: int = DEFAULT_BLOCK, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if self.weights is None or self._cholesky is None:
            raise InputError("the model is not fitted: call fit(X, y) first")
        X = validate.matrix(X, "X")
        fmap, block = self.feature_map, _block(block)
        plan, C = fmap.plan(X), fmap._fitted()
        beta = C @ self.weights  # f(x) = k(x, Z)·β
        mean = np.empty((X.shape[0],) + self.weights.shape[1:])
        std = np.empty(X.shape[0]) if return_std else None
        for lo in range(0, X.shape[0], block):
            rows = slice(lo, min(X.shape[0], lo + block))
            K = cross_block(fmap.kernel, plan, rows, block)
            mean[rows] = K @ beta
            if std is not None:
                v = self._cholesky @ (K @ C).T
                std[rows] = np.sqrt(float(self.alpha) * np.sum(v * v, axis=0))
        return mean if std is None else (mean, std)


def _cho_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(LLᵀ)⁻¹ b``."""
    return np.linalg.solve(L.T, np.linalg.solve(L, b))
