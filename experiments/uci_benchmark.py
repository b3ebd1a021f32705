"""Kernel ridge regression on UCI data: the DEKer against deep NNGP, NTK and RBF kernels.

The experiment of Tsuchida & Ong, *Stochastic gradient updates yield deep equilibrium kernels*
(TMLR 2023, section 4.2). Protocol, for each data set:

* inputs standardised on the whole data set (so a kernel matrix over all points does not depend
  on the split and is computed once per hyper-parameter setting);
* for each seed, a random 80/20 train/test split; targets standardised on the training part;
* kernel ridge regression, ``α = (K_train + ridge·I)⁻¹ y`` by Cholesky;
* hyper-parameters chosen by 5-fold cross-validation on the training part only (the test part
  is used once, for the chosen setting); test RMSE reported in the target's original units.

Grids (``GRID``): the DEKer (gaussian family, ``R = ReLU``, ReLU features) over λ ∈ {1, 2, 4},
input scale ∈ {0.5, 1, 2, 4, 8}, bias ∈ {−1, −0.1, 0, 0.1, 1}, feature scale ∈ {0.1, 0.5, 1, 2},
T ∈ {fixed point, 2, 3, 4, 5} (the four T-step kernels come from one iteration) and ridge ∈
{0.05, 0.1, 0.5}; deep ReLU NNGP and NTK over depth 1–5 (all depths from one layer recursion),
the same input scales, biases and ridges, and weight variance ∈ {1, 2}; RBF over 13 length
scales on a log grid and the same ridges.

``--smooth`` adds three fixed-point DEKers of smooth activations (``SMOOTH``), whose Gram
matrices dekc computes with a Mehler series: "DEKer-logistic" (bernoulli family, ``R`` the
identity: σ = sigmoid, ρ = 1, the logistic model), "DEKer-tanh" (gaussian family, activation
tanh) and "DEKer-GELU" (gaussian family, activation GELU). Their T-step kernels are still very
slow, so they use the fixed point only, over a smaller grid (``SMOOTH_GRID``): λ ∈ {2, 4}, input
scale ∈ {0.5, 1, 2}, bias ∈ {0, 0.1}, feature scale ∈ {0.5, 1} and the same ridges (with
``--quick``: λ ∈ {2, 4}, input scale ∈ {1, 2}, bias ∈ {0, 0.1}, feature scale 1), with the same
ReLU features as the DEKer. They are cross-validated like every other kernel and get their own
rows, but are not peers: the win counts stay those of the ReLU DEKer against NNGP, NTK and RBF.

Every kernel here depends on the inputs only through ``x̃·x̃' = s² x·x' + b²``, so the settings
``bias = b`` and ``bias = −b`` give the same matrix and are computed (and scored) once, as b ≥ 0.

Cross-validation is raced to fit a small machine: every setting is scored on the first fold,
the best ``--keep`` fraction of each kernel's settings (at least 20) on each seed goes on to the
other four folds, and the setting with the lowest 5-fold CV RMSE among those is chosen.
``--keep 1`` scores every setting on all five folds. Settings whose kernel cannot be computed
(e.g. no fixed point: ``dekc.ConvergenceError``) or whose system cannot be factorised are
invalid for selection and counted in the output.

Outputs in ``--out``: ``results.csv`` (one row per data set, seed and kernel: the chosen
hyper-parameters, CV RMSE and test RMSE), ``table.md`` (test RMSE mean ± standard error over seeds
and the paired win counts of the DEKer) and ``chart.png``. Default ``--out``:
``quick-results/uci/`` under the current directory with ``--quick``, otherwise the recorded
results ``experiments/results/uci/``; with ``--smooth``, ``quick-results/uci_smooth/`` and
``experiments/results/uci_smooth/`` instead, so a run with the smooth kernels never replaces the
results without them.

    python experiments/uci_benchmark.py --quick       # yacht, two seeds, a small grid (< 1 min)
    python experiments/uci_benchmark.py --out DIR     # all six data sets, 20 seeds (about an hour on 2 cores)
    python experiments/uci_benchmark.py --overwrite   # the same, replacing the recorded results
    python experiments/uci_benchmark.py --replot      # table and chart again from results.csv
    python experiments/uci_benchmark.py --quick --smooth  # with the smooth-activation DEKers (minutes)
    python experiments/uci_benchmark.py --smooth      # the full run with them, into experiments/results/uci_smooth/
    python experiments/uci_benchmark.py --smooth --peers-from experiments/results/uci  # only the smooth kernels

Recorded results (a folder with ``RECORDED.txt``, which every run without ``--quick`` writes when
it finishes) are never overwritten by accident: a run whose ``--out`` holds them stops before
computing anything unless ``--overwrite`` is given (see ``experiments/README.md``). ``--replot``
rewrites only ``table.md`` and ``chart.png`` from the folder's own ``results.csv`` and is allowed.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
from recorded import default_out, mark_recorded, prepare

import dekc
from dekc.datasets import UCI_DATASETS, load_uci

KERNELS = ("DEKer", "NNGP", "NTK", "RBF")
PEERS = ("NNGP", "NTK", "RBF")
# --smooth: fixed-point DEKers of smooth activations, (family, link) for dekc.compile_kernel; not peers
SMOOTH = {
    "DEKer-logistic": ("bernoulli", dict(reparam="identity")),
    "DEKer-tanh": ("gaussian", dict(activation="tanh")),
    "DEKer-GELU": ("gaussian", dict(activation="gelu")),
}
SMOOTH_KERNELS = tuple(SMOOTH)
PARAM_NAMES = ("lam", "input_scale", "bias", "feature_scale", "T", "depth", "weight_variance", "length_scale")
DEFAULT_OUT = default_out("uci", quick=False)  # the recorded results; quick runs: default_out("uci", quick=True)
DEFAULT_SMOOTH_OUT = default_out("uci_smooth", quick=False)  # --smooth runs: never the results above
N_FOLDS = 5
MIN_KEEP = 20

GRID = dict(
    lam=(1.0, 2.0, 4.0),
    input_scale=(0.5, 1.0, 2.0, 4.0, 8.0),
    bias=(-1.0, -0.1, 0.0, 0.1, 1.0),
    feature_scale=(0.1, 0.5, 1.0, 2.0),
    steps=(2, 3, 4, 5),  # plus the fixed point
    ridge=(0.05, 0.1, 0.5),
    depth=(1, 2, 3, 4, 5),
    weight_variance=(1.0, 2.0),
    length_scale=tuple(float(v) for v in np.geomspace(1 / 8, 8, 13)),  # times sqrt(p)
)

QUICK_GRID = dict(
    lam=(2.0, 4.0),
    input_scale=(1.0, 2.0),
    bias=(0.0, 0.1),
    feature_scale=(1.0,),
    steps=(2, 3),
    ridge=(0.1, 0.5),
    depth=(1, 2, 3),
    weight_variance=(1.0,),
    length_scale=(0.5, 1.0, 2.0),
)

# the grids of the SMOOTH kernels (fixed point only; the ridges are the main grid's): with --smooth
# the main grid gets them as grid["smooth"]
SMOOTH_GRID = dict(lam=(2.0, 4.0), input_scale=(0.5, 1.0, 2.0), bias=(0.0, 0.1), feature_scale=(0.5, 1.0))
QUICK_SMOOTH_GRID = dict(lam=(2.0, 4.0), input_scale=(1.0, 2.0), bias=(0.0, 0.1), feature_scale=(1.0,))


def with_smooth(grid, smooth_grid=None) -> dict:
    """``grid`` with the SMOOTH kernels added over ``smooth_grid`` (default ``SMOOTH_GRID``)."""
    return dict(grid, smooth=dict(SMOOTH_GRID if smooth_grid is None else smooth_grid))


def kernels_of(grid) -> tuple:
    """The kernels a run over ``grid`` scores: ``KERNELS`` (unless ``--peers-from`` supplies them),
    then ``SMOOTH_KERNELS`` with ``--smooth``."""
    return (KERNELS if grid.get("base", True) else ()) + (SMOOTH_KERNELS if grid.get("smooth") else ())


def out_name(smooth: bool) -> str:
    """The experiment name of the default output folder (``recorded.default_out``)."""
    return "uci_smooth" if smooth else "uci"


# ----------------------------------------------------------------------------------------------
# splits and kernel ridge regression


def standardise(X: np.ndarray) -> np.ndarray:
    """Columns to mean 0 and standard deviation 1 (constant columns to 0)."""
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


@dataclass
class Split:
    """One seed's split: global ``train``/``test`` indices, ``folds`` (global indices of each
    held-out fold, a partition of ``train``), and the training-standardised target."""

    seed: int
    train: np.ndarray
    test: np.ndarray
    folds: list
    y_train: np.ndarray  # standardised with the training mean and sd
    y_mean: float
    y_sd: float
    y_test: np.ndarray  # original units

    def fold_train(self, k: int) -> np.ndarray:
        return np.concatenate([f for i, f in enumerate(self.folds) if i != k])

    def target(self, index: np.ndarray) -> np.ndarray:
        """The standardised target at global training indices ``index``."""
        return self._y_of[index]

    def __post_init__(self):
        self._y_of = np.full(int(max(self.train.max(), self.test.max())) + 1, np.nan)  # NaN off the training part
        self._y_of[self.train] = self.y_train


def make_split(y: np.ndarray, seed: int, test_fraction: float = 0.2, n_folds: int = N_FOLDS) -> Split:
    """Random ``1 − test_fraction`` / ``test_fraction`` split and ``n_folds`` random folds of the
    training part, all from ``seed``; the target standardised on the training part only."""
    n = len(y)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    fold_perm = np.random.default_rng([seed, 1]).permutation(len(train))
    folds = [np.sort(train[part]) for part in np.array_split(fold_perm, n_folds)]
    y_mean, y_sd = float(y[train].mean()), float(y[train].std())
    y_sd = y_sd if y_sd > 0 else 1.0
    return Split(seed, train, test, folds, (y[train] - y_mean) / y_sd, y_mean, y_sd, y[test].copy())


def krr_predict(K_train: np.ndarray, y_train: np.ndarray, K_cross: np.ndarray, ridge: float) -> np.ndarray:
    """Kernel ridge regression: ``K_cross (K_train + ridge·I)⁻¹ y_train`` by Cholesky.

    Raises ``numpy.linalg.LinAlgError`` when ``K_train + ridge·I`` is not positive definite."""
    A = np.array(K_train, dtype=np.float64, copy=True)
    A.flat[:: A.shape[0] + 1] += ridge
    factor = scipy.linalg.cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
    return K_cross @ scipy.linalg.cho_solve(factor, y_train, check_finite=False)


def fold_sse(K: np.ndarray, split: Split, ridges, folds) -> np.ndarray:
    """Sum of squared errors (standardised units) on held-out fold ``k`` for each ridge and each
    ``k`` in ``folds``: an array ``(len(ridges), len(folds))``, NaN where a solve failed. Only
    training points are touched."""
    out = np.full((len(ridges), len(folds)), np.nan)
    for col, k in enumerate(folds):
        tr, va = split.fold_train(k), split.folds[k]
        K_tr, K_va = K[np.ix_(tr, tr)], K[np.ix_(va, tr)]
        y_tr, y_va = split.target(tr), split.target(va)
        for row, ridge in enumerate(ridges):
            try:
                err = krr_predict(K_tr, y_tr, K_va, ridge) - y_va
            except (np.linalg.LinAlgError, ValueError):
                continue
            out[row, col] = float(err @ err) if np.all(np.isfinite(err)) else np.nan
    return out


def cv_rmse(sse: np.ndarray, n_train: int) -> float:
    """Pooled CV RMSE (standardised units) from the per-fold SSEs of all folds; NaN if any is missing."""
    return float(np.sqrt(np.sum(sse) / n_train)) if np.all(np.isfinite(sse)) else float("nan")


def select(scores: dict):
    """The key with the lowest finite CV score (ties: first in order), or None if none is finite.

    ``scores`` maps setting → cross-validation RMSE; nothing else (no test error) enters."""
    best, best_score = None, math.inf
    for key, score in scores.items():
        if np.isfinite(score) and score < best_score:
            best, best_score = key, score
    return best


def test_rmse(K: np.ndarray, split: Split, ridge: float) -> float:
    """Test RMSE in the target's original units of the model fitted on the whole training part."""
    K_tr, K_te = K[np.ix_(split.train, split.train)], K[np.ix_(split.test, split.train)]
    pred = krr_predict(K_tr, split.y_train, K_te, ridge) * split.y_sd + split.y_mean
    return float(np.sqrt(np.mean((pred - split.y_test) ** 2)))


def survivors(first_fold: dict, keep: float) -> set:
    """Settings with the lowest first-fold SSE: the best ``max(MIN_KEEP, ceil(keep·N))`` of the
    ``N`` scored settings (all of them when ``keep >= 1``)."""
    valid = [(v, i, key) for i, (key, v) in enumerate(first_fold.items()) if np.isfinite(v)]
    if keep >= 1:
        return {key for _, _, key in valid}
    n_keep = max(MIN_KEEP, math.ceil(keep * len(first_fold)))
    return {key for _, _, key in sorted(valid)[:n_keep]}


# ----------------------------------------------------------------------------------------------
# kernels


def _frozen(**params) -> tuple:
    return tuple(sorted(params.items()))


@dataclass(frozen=True)
class Job:
    """One kernel computation over all points, yielding one or several matrices."""

    kind: str  # "deker", "nn", "rbf" or "smooth" (params: the SMOOTH kernel's name and its settings)
    params: tuple

    def settings(self, grid) -> list:
        """``(kernel, params)`` of the matrices this job yields, in order."""
        p = dict(self.params)
        if self.kind == "deker":
            return [("DEKer", _frozen(**p, T=T)) for T in ("fp", *grid["steps"])]
        if self.kind == "nn":
            return [(name, _frozen(**p, depth=L)) for name in ("NNGP", "NTK") for L in grid["depth"]]
        if self.kind == "smooth":
            name = p.pop("kernel")
            return [(name, _frozen(**p, T="fp"))]
        return [("RBF", _frozen(length_scale=ell)) for ell in grid["length_scale"]]


def make_jobs(grid) -> list:
    """The kernel computations of a run over ``grid``: the peers' (unless ``--peers-from``
    supplies their results), then the SMOOTH kernels' with ``--smooth``."""
    biases = sorted({abs(b) for b in grid["bias"]})  # the kernels depend on the bias through b² only
    jobs = []
    if grid.get("base", True):
        jobs += [
            Job("deker", _frozen(lam=lam, input_scale=s, bias=b, feature_scale=f))
            for lam, s, b, f in itertools.product(grid["lam"], grid["input_scale"], biases, grid["feature_scale"])
        ]
        jobs += [
            Job("nn", _frozen(input_scale=s, bias=b, weight_variance=w))
            for s, b, w in itertools.product(grid["input_scale"], biases, grid["weight_variance"])
        ]
        jobs.append(Job("rbf", ()))
    smooth = grid.get("smooth")
    if smooth:
        jobs += [
            Job("smooth", _frozen(kernel=name, lam=lam, input_scale=s, bias=b, feature_scale=f))
            for name in SMOOTH_KERNELS
            for lam, s, b, f in itertools.product(
                smooth["lam"], smooth["input_scale"], sorted(set(smooth["bias"])), smooth["feature_scale"]
            )
        ]
    return jobs


_DEKER = None


def deker():
    global _DEKER
    if _DEKER is None:
        _DEKER = dekc.compile_kernel("gaussian", reparam="relu")
    return _DEKER


_SMOOTH = {}


def smooth_kernel(name: str):
    """The compiled SMOOTH kernel ``name`` (compiled once per process; 10–60 s when not cached on disk)."""
    if name not in _SMOOTH:
        family, link = SMOOTH[name]
        _SMOOTH[name] = dekc.compile_kernel(family, **link)
    return _SMOOTH[name]


def nn_kernels(X: np.ndarray, depths, *, input_scale=1.0, bias=0.0, weight_variance=1.0) -> dict:
    """Deep ReLU NNGP and NTK Gram matrices of every depth in ``depths`` from one layer recursion
    (the recursion of ``dekc.nngp``/``dekc.ntk``, with dekc's closed-form expectations):
    ``{("NNGP", L): Σ^L, ("NTK", L): Θ^L}``. Identical inputs get the one-point (diagonal) value."""
    relu = dekc.gaussian_expectation("relu", "relu")
    step = dekc.gaussian_expectation("heaviside", "heaviside")  # ReLU' = Heaviside
    w = float(weight_variance)
    xt = np.column_stack([input_scale * X, np.full(len(X), float(bias))])
    sigma = xt @ xt.T
    diag = np.maximum(np.einsum("ij,ij->i", xt, xt), np.finfo(float).tiny)
    np.fill_diagonal(sigma, diag)
    same = np.unique(X, axis=0, return_inverse=True)[1].reshape(-1)
    same = same[:, None] == same[None, :]
    theta = sigma.copy()
    out = {}
    for L in range(1, max(depths) + 1):
        a, b, c = diag[:, None], diag[None, :], np.where(same, 0.0, sigma)
        s_pair, d_pair = np.asarray(relu(a, b, c)), np.asarray(step(a, b, c))
        s_diag, d_diag = np.asarray(relu.one_point(diag)), np.asarray(step.one_point(diag))
        s_new = w * np.where(same, s_diag[:, None], s_pair)
        d_new = w * np.where(same, d_diag[:, None], d_pair)
        theta = s_new + d_new * theta
        sigma, diag = s_new, np.maximum(w * s_diag, np.finfo(float).tiny)
        if L in depths:
            out["NNGP", L] = 0.5 * (sigma + sigma.T)
            out["NTK", L] = 0.5 * (theta + theta.T)
    return out


def run_job(job: Job, X: np.ndarray, grid) -> list:
    """``[(kernel, params, K or exception)]`` for the settings of ``job``, in ``job.settings`` order."""
    settings = job.settings(grid)
    p = dict(job.params)
    if job.kind == "deker":
        kw = dict(
            lam=p["lam"],
            input_scale=p["input_scale"],
            bias=p["bias"],
            feature_scale=p["feature_scale"],
            features="relu",
        )
        results = []
        try:
            results.append(deker().gram(X, **kw))
        except dekc.DekcError as err:
            results.append(err)
        try:
            stack = deker().gram(X, steps=tuple(grid["steps"]), **kw)  # every T from one iteration
            results.extend(stack[i] for i in range(len(grid["steps"])))
        except dekc.DekcError as err:
            results.extend([err] * len(grid["steps"]))
    elif job.kind == "smooth":  # the fixed point only
        try:
            results = [
                smooth_kernel(p["kernel"]).gram(
                    X,
                    lam=p["lam"],
                    input_scale=p["input_scale"],
                    bias=p["bias"],
                    feature_scale=p["feature_scale"],
                    features="relu",
                )
            ]
        except dekc.DekcError as err:
            results = [err]
    elif job.kind == "nn":
        mats = nn_kernels(
            X, tuple(grid["depth"]), input_scale=p["input_scale"], bias=p["bias"], weight_variance=p["weight_variance"]
        )
        results = [mats[name, dict(params)["depth"]] for name, params in settings]
    else:
        sq = np.sum(X * X, axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * X @ X.T, 0.0)
        np.fill_diagonal(d2, 0.0)
        scale = X.shape[1]  # length scales are multiples of sqrt(p)
        results = [np.exp(-d2 / (2.0 * ell * ell * scale)) for ell in grid["length_scale"]]
    out = []
    for (name, params), K in zip(settings, results):
        if isinstance(K, np.ndarray) and not np.all(np.isfinite(K)):
            K = FloatingPointError("the kernel matrix has non-finite entries")
        out.append((name, params, K))
    return out


# ----------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class Problem:
    """One regression target with its splits and CV bookkeeping."""

    name: str
    y: np.ndarray
    splits: list
    sse: dict = field(default_factory=dict)  # seed -> {setting: per-fold SSE (NaN: not scored)}
    failed: dict = field(default_factory=dict)  # setting -> error text (kernel could not be computed)


def _setting(name, params, ridge):
    return (name, params, ridge)


def _score(problem: Problem, name, params, K, ridges, folds, wanted=None):
    """Record the held-out SSE of ``folds`` for the settings ``(name, params, ridge)`` on every
    seed (only the ``(seed, setting)`` pairs in ``wanted`` when given)."""
    for split in problem.splits:
        use = [r for r in ridges if wanted is None or (split.seed, _setting(name, params, r)) in wanted]
        if not use:
            continue
        scores = fold_sse(K, split, use, folds)
        table = problem.sse.setdefault(split.seed, {})
        for row, r in enumerate(use):
            slot = table.setdefault(_setting(name, params, r), np.full(N_FOLDS, np.nan))
            slot[list(folds)] = scores[row]


def run_group(X: np.ndarray, problems: list, grid, keep: float, progress) -> dict:
    """Race every setting over every problem sharing inputs ``X``; returns
    ``{problem: {seed: {kernel: row}}}`` with the chosen settings and their scores."""
    jobs = make_jobs(grid)
    kernels = kernels_of(grid)
    ridges = tuple(grid["ridge"])
    first = [0] if keep < 1 else list(range(N_FOLDS))
    settings_of = {}
    # stage 1: every setting on the first fold (all folds if not racing)
    for job in progress(jobs, desc=f"{'/'.join(p.name for p in problems)}: screen"):
        settings_of[job] = job.settings(grid)
        for name, params, K in run_job(job, X, grid):
            if not isinstance(K, np.ndarray):
                for p in problems:
                    for r in ridges:
                        p.failed[_setting(name, params, r)] = f"{type(K).__name__}: {K}"
                continue
            for p in problems:
                _score(p, name, params, K, ridges, first)
    # stage 2: the best settings of each kernel and seed on the remaining folds
    if keep < 1:
        wanted = set()
        for p in problems:
            for split in p.splits:
                for kernel in kernels:
                    firsts = {key: sse[0] for key, sse in p.sse.get(split.seed, {}).items() if key[0] == kernel}
                    wanted |= {(split.seed, key) for key in survivors(firsts, keep)}
        wanted_settings = {key[:2] for _, key in wanted}
        rest = list(range(1, N_FOLDS))
        todo = [job for job in jobs if any(s in wanted_settings for s in settings_of[job])]
        for job in progress(todo, desc=f"{'/'.join(p.name for p in problems)}: race"):
            for name, params, K in run_job(job, X, grid):
                if isinstance(K, np.ndarray) and (name, params) in wanted_settings:
                    for p in problems:
                        _score(p, name, params, K, ridges, rest, wanted)
    # selection per problem, seed and kernel, from the CV scores only
    chosen = {}
    for p in problems:
        for split in p.splits:
            for kernel in kernels:
                scores = {
                    key: cv_rmse(sse, len(split.train))
                    for key, sse in p.sse.get(split.seed, {}).items()
                    if key[0] == kernel
                }
                best = select(scores)
                chosen.setdefault(p.name, {}).setdefault(split.seed, {})[kernel] = (best, scores.get(best))
    # stage 3: the test error of the chosen settings only
    need = {}
    for p in problems:
        for split in p.splits:
            for best, _ in chosen[p.name][split.seed].values():
                if best is not None:
                    need.setdefault(best[:2], []).append((p, split, best))
    rows = {}
    for job in progress(
        [j for j in jobs if any(s in need for s in settings_of[j])], desc=f"{'/'.join(p.name for p in problems)}: test"
    ):
        for name, params, K in run_job(job, X, grid):
            for p, split, best in need.get((name, params), []):
                cv = chosen[p.name][split.seed][name][1]
                try:
                    test = test_rmse(K, split, best[2])
                except np.linalg.LinAlgError:
                    test = float("nan")
                rows.setdefault(p.name, {}).setdefault(split.seed, {})[name] = dict(
                    params=dict(params), ridge=best[2], cv_rmse=cv * split.y_sd, test_rmse=test
                )
    return rows


def count_invalid(problem: Problem, kernels=KERNELS) -> dict:
    """Per kernel (every one of ``kernels``, then any other in order of first appearance):
    settings whose kernel failed, and (seed, setting) pairs with a failed solve."""
    out = {k: [0, 0] for k in kernels}
    for key in problem.failed:
        out.setdefault(key[0], [0, 0])[0] += 1
    for table in problem.sse.values():
        for key, sse in table.items():
            if np.isnan(sse[0]):
                out.setdefault(key[0], [0, 0])[1] += 1
    return out


def n_settings(grid) -> dict:
    g = grid
    n_deker = len(g["lam"]) * len(g["input_scale"]) * len(g["bias"]) * len(g["feature_scale"]) * (1 + len(g["steps"]))
    n_nn = len(g["depth"]) * len(g["input_scale"]) * len(g["bias"]) * len(g["weight_variance"])
    r = len(g["ridge"])
    out = {"DEKer": n_deker * r, "NNGP": n_nn * r, "NTK": n_nn * r, "RBF": len(g["length_scale"]) * r}
    smooth = g.get("smooth")
    if smooth:
        n_smooth = math.prod(len(smooth[k]) for k in ("lam", "input_scale", "bias", "feature_scale"))
        out.update(dict.fromkeys(SMOOTH_KERNELS, n_smooth * r))
    return out


# ----------------------------------------------------------------------------------------------
# outputs


CSV_FIELDS = ("dataset", "seed", "kernel", "test_rmse", "cv_rmse", "ridge", *PARAM_NAMES, "n_train", "n_test")


def write_csv(path: Path, records: list) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for rec in records:
            writer.writerow({k: rec.get(k, "") for k in CSV_FIELDS})


def read_peers(path: Path, names, seeds: int, error) -> dict:
    """``{(dataset, seed): rows}``: the ``KERNELS`` rows of ``path`` for every data set in ``names``
    and seed below ``seeds`` (``error`` is called when one is missing)."""
    if not path.is_file():
        error(f"--peers-from: {path} does not exist")
    found = {}
    for row in read_csv(path):
        if row["kernel"] in KERNELS:
            found.setdefault((row["dataset"], int(row["seed"])), []).append(row)
    for name in names:
        for seed in range(seeds):
            have = {row["kernel"] for row in found.get((name, seed), [])}
            if have != set(KERNELS):
                error(f"--peers-from: {path} lacks {sorted(set(KERNELS) - have)} for {name}, seed {seed}")
    return found


def read_csv(path: Path) -> list:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def summarise(records: list):
    """``table[dataset][kernel] = (mean, standard error)`` of the test RMSE over seeds, and
    ``wins[dataset][peer] = (seeds where the DEKer's test RMSE is lower, seeds compared)``.

    Kernels in ``KERNELS`` order, then the ``SMOOTH_KERNELS`` the records hold (records without
    them, e.g. results from before ``--smooth``, give the same table as before); the SMOOTH
    kernels are never peers."""
    by = {}
    for rec in records:
        by.setdefault(rec["dataset"], {}).setdefault(rec["kernel"], {})[int(rec["seed"])] = float(rec["test_rmse"])
    table, wins = {}, {}
    for ds, kernels in by.items():
        table[ds] = {}
        for kernel in KERNELS + SMOOTH_KERNELS:
            vals = np.array([v for v in kernels.get(kernel, {}).values() if np.isfinite(v)])
            if len(vals):
                se = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")
                table[ds][kernel] = (float(vals.mean()), se)
        dek = kernels.get("DEKer", {})
        wins[ds] = {}
        for peer in PEERS:
            common = [s for s in dek if s in kernels.get(peer, {})]
            wins[ds][peer] = (sum(dek[s] < kernels[peer][s] for s in common), len(common))
    return table, wins


def table_kernels(table: dict) -> tuple:
    """The columns of ``table``: ``KERNELS``, then the ``SMOOTH_KERNELS`` some data set has."""
    return KERNELS + tuple(k for k in SMOOTH_KERNELS if any(k in row for row in table.values()))


def markdown_table(table: dict, wins: dict, notes=()) -> str:
    kernels = table_kernels(table)
    lines = [
        "| data set | " + " | ".join(kernels) + " | DEKer wins vs " + " / ".join(PEERS) + " |",
        "|---|" + "---:|" * len(kernels) + "---:|",
    ]
    for ds in table:
        cells = []
        means = {k: v[0] for k, v in table[ds].items()}
        best = min(means, key=means.get) if means else None
        for kernel in kernels:
            if kernel not in table[ds]:
                cells.append("—")
                continue
            mean, se = table[ds][kernel]
            text = f"{mean:.4g} ± {se:.2g}"
            cells.append(f"**{text}**" if kernel == best else text)
        w = " / ".join(f"{wins[ds][p][0]}/{wins[ds][p][1]}" for p in PEERS)
        lines.append(f"| {ds} | " + " | ".join(cells) + f" | {w} |")
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text


def write_outputs(out: Path, records: list, notes=(), title="Kernel ridge regression on UCI data") -> dict:
    table, wins = summarise(records)
    header = (
        f"# {title}\n\nTest RMSE (original units), mean ± standard error over seeds; bold: lowest mean. "
        "Wins: seeds on which the DEKer's test RMSE is lower than the peer's.\n\n"
    )
    smooth = [k for k in table_kernels(table) if k in SMOOTH_KERNELS]
    if smooth:
        header += (
            f"{', '.join(smooth)}: fixed-point DEKers of smooth activations (`--smooth`, a smaller grid); "
            "not counted in the wins.\n\n"
        )
    (out / "table.md").write_text(header + markdown_table(table, wins, notes))
    try:
        from dekc.plot import benchmark_chart
    except ImportError as err:
        print(f"no chart: {err}", file=sys.stderr)
    else:
        # a single seed has no standard error: its bars are drawn without one
        chart = {
            ds: {k: (m, se if np.isfinite(se) else 0.0) for k, (m, se) in row.items()}
            for ds, row in table.items()
            if row
        }
        if chart:
            import matplotlib.pyplot as plt

            plt.close(benchmark_chart(chart, path=out / "chart.png", title=title))
    return table


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A run without --quick writes RECORDED.txt into its output folder when "
        "it finishes; a run (quick or not) whose output folder holds it stops "
        "before computing anything unless --overwrite is given.",
    )
    parser.add_argument("--seeds", type=int, default=20, help="number of random splits (default 20)")
    parser.add_argument(
        "--datasets", default=",".join(UCI_DATASETS), help=f"comma-separated subset of {','.join(UCI_DATASETS)}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="yacht, two seeds, a small grid (under a minute), written by default to "
        "quick-results/uci/ under the current directory",
    )
    parser.add_argument(
        "--keep",
        type=float,
        default=0.05,
        help="fraction of each kernel's settings (at least 20) scored on all five folds after "
        "the first; 1 scores every setting on every fold (default 0.05)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: experiments/results/uci/, the recorded results; quick-results/uci/ with "
        "--quick; uci_smooth/ instead of uci/ with --smooth)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow writing into a folder that holds the recorded results of a full run (they are replaced)",
    )
    parser.add_argument(
        "--smooth",
        action="store_true",
        help="also the fixed-point DEKers of smooth activations (logistic, tanh, GELU) over a smaller grid, "
        "written by default to experiments/results/uci_smooth/ (quick-results/uci_smooth/ with --quick)",
    )
    parser.add_argument(
        "--peers-from",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="with --smooth: compute only the smooth kernels and take the DEKer, NNGP, NTK and RBF rows from "
        "FOLDER/results.csv (a run over the same seeds, e.g. experiments/results/uci)",
    )
    parser.add_argument("--replot", action="store_true", help="only rewrite table.md and chart.png from results.csv")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    experiment = out_name(args.smooth)
    out = args.out if args.out is not None else default_out(experiment, args.quick)
    if args.replot:  # keeps the notes (invalid settings, timings) of an existing table.md
        old = (out / "table.md").read_text().splitlines() if (out / "table.md").exists() else []
        write_outputs(out, read_csv(out / "results.csv"), [line for line in old if line.startswith("- ")])
        return 0
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for n in names:
        if n not in UCI_DATASETS:
            parser.error(f"unknown data set {n!r}; choose from {', '.join(UCI_DATASETS)}")
    grid, seeds = GRID, args.seeds
    if args.quick:
        grid, seeds = QUICK_GRID, 2
        names = ["yacht"] if args.datasets == parser.get_default("datasets") else names
    if args.smooth:
        grid = with_smooth(grid, QUICK_SMOOTH_GRID if args.quick else SMOOTH_GRID)
    if seeds < 1:
        parser.error("--seeds must be at least 1")
    peers = {}
    if args.peers_from is not None:
        if not args.smooth:
            parser.error("--peers-from goes with --smooth (it supplies every kernel but the smooth ones)")
        peers = read_peers(args.peers_from / "results.csv", names, seeds, parser.error)
        grid = dict(grid, base=False)
    prepare(out, args.quick, args.overwrite, experiment, parser.error)  # before any work
    command = " ".join(
        ["python experiments/uci_benchmark.py", *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))]
    )

    from tqdm import tqdm

    def progress(items, desc):
        return tqdm(items, desc=desc, disable=args.no_progress, leave=False, file=sys.stderr)

    try:  # one BLAS thread: the Cholesky factorisations are many and small
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
    except ImportError:
        pass

    start = time.perf_counter()
    # problems sharing inputs (energy heating and cooling) share every kernel computation
    groups = []
    for n in names:
        X, y = load_uci(n)
        for g in groups:
            if g[0].shape == X.shape and np.array_equal(g[0], X):
                g[1].append((n, y))
                break
        else:
            groups.append((X, [(n, y)]))
    records, notes = [], []
    counts = n_settings(grid)
    kernels = kernels_of(grid)
    for X_raw, targets in groups:
        X = standardise(X_raw)
        problems = []
        for n, y in targets:
            splits = [make_split(y, seed) for seed in range(seeds)]
            problems.append(Problem(n, y, splits))
        t0 = time.perf_counter()
        rows = run_group(X, problems, grid, args.keep, progress)
        elapsed = time.perf_counter() - t0
        for p in problems:
            for seed in range(seeds):
                for kernel in kernels:
                    row = rows.get(p.name, {}).get(seed, {}).get(kernel)
                    if row is None:
                        continue
                    rec = dict(
                        dataset=p.name,
                        seed=seed,
                        kernel=kernel,
                        test_rmse=f"{row['test_rmse']:.6g}",
                        cv_rmse=f"{row['cv_rmse']:.6g}",
                        ridge=row["ridge"],
                        n_train=len(p.splits[0].train),
                        n_test=len(p.splits[0].test),
                    )
                    rec.update(dict(row["params"].items()))
                    records.append(rec)
                records += peers.get((p.name, seed), [])
            bad = count_invalid(p, kernels)
            note = "; ".join(
                f"{k}: {bad[k][0]} of {counts[k]} settings failed"
                + (f", {bad[k][1]} (seed, setting) solves failed" if bad[k][1] else "")
                for k in kernels
                if bad[k][0] or bad[k][1]
            )
            notes.append(f"- {p.name}: " + (note or "every setting valid") + f" (group time {elapsed:.0f} s)")
            print(notes[-1], file=sys.stderr)
            if any(isinstance(v, str) for v in p.failed.values()):
                first = next(iter(p.failed.items()))
                print(f"  e.g. {first[0][:2]}: {first[1][:200]}", file=sys.stderr)
        write_csv(out / "results.csv", records)  # after every group: a partial run keeps what finished
        write_outputs(out, records, notes)
    wall = time.perf_counter() - start
    settings_text = ", ".join(f"{k} {v}" for k, v in counts.items() if k in kernels)
    if peers:
        settings_text += f"; DEKer, NNGP, NTK and RBF rows from {args.peers_from}/results.csv"
    notes.append(
        f"- settings per kernel (b and −b counted separately): {settings_text}; seeds: {seeds}; "
        f"keep fraction {args.keep}; wall time {wall:.0f} s on {platform.node() or 'this machine'}"
    )
    write_outputs(out, records, notes)
    if not args.quick:
        mark_recorded(out, command)
    print((out / "table.md").read_text())
    print(f"wrote {out / 'results.csv'}, {out / 'table.md'} and {out / 'chart.png'} in {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
