"""Figures for kernels and experiments: heat maps, fixed-point convergence, benchmark charts.

Not imported by ``import dekc``: ``import dekc.plot``. matplotlib is imported inside the
functions; when no backend has been chosen (no ``MPLBACKEND`` and pyplot not yet imported) the
non-interactive ``Agg`` backend is selected, so everything works without a display.

Every public function returns the matplotlib ``Figure``; given ``path=`` it also writes a PNG
there (parent directories are created). Bad input raises :class:`dekc.InputError` with a message
saying what to pass.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import validate
from .errors import InputError
from .kernel import Kernel

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PathLike = str | os.PathLike

__all__ = ["heatmap", "heatmaps", "convergence", "fixed_point_residuals", "benchmark_chart"]

_DPI = 120


def _pyplot():
    """matplotlib.pyplot, selecting the ``Agg`` backend when no backend has been chosen."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("dekc.plot needs matplotlib, an optional dependency: pip install 'dekc[plot]'") from exc

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_DPI, format="png", bbox_inches="tight")
    return fig


# -- benchmark chart --------------------------------------------------------------------------------


def benchmark_chart(
    table: Mapping[str, Mapping[str, tuple[float, float]]],
    *,
    path: PathLike | None = None,
    title: str | None = None,
    metric: str = "test RMSE",
    normalise: bool = True,
) -> Figure:
    """Grouped bar chart of a benchmark: one group per data set, one bar per kernel, with error bars.

    ``table`` is ``{dataset: {kernel: (mean, standard_error)}}``; kernels missing from a data set
    leave a gap; a NaN standard error (unknown, e.g. one seed) draws no error bar. With
    ``normalise=True`` (default) each group is divided by the smallest mean of that group (data
    sets have different scales), so the best kernel of each data set sits at 1 and the y-label
    says "RMSE / best RMSE in data set"; ``normalise=False`` plots the raw numbers. Returns the
    Figure (one axes, one bar container per kernel, in order of first appearance).
    """
    if not isinstance(table, Mapping) or not table:
        raise InputError("table must be a non-empty dict {dataset: {kernel: (mean, standard_error)}}")
    kernels: list[str] = []
    rows = {}
    for dataset, results in table.items():
        if not isinstance(results, Mapping) or not results:
            raise InputError(
                f"table[{dataset!r}] must be a non-empty dict {{kernel: (mean, standard_error)}}, got {results!r}"
            )
        row = {}
        for kernel, value in results.items():
            try:
                mean, se = (float(v) for v in value)
            except (TypeError, ValueError):
                raise InputError(
                    f"table[{dataset!r}][{kernel!r}] must be a pair (mean, standard_error) of numbers, got {value!r}"
                ) from None
            if not math.isfinite(mean) or math.isinf(se) or se < 0:
                raise InputError(
                    f"table[{dataset!r}][{kernel!r}] = {value!r}: the mean must be finite and the "
                    "standard error finite and non-negative (NaN: unknown, no error bar)"
                )
            if normalise and mean <= 0:
                raise InputError(
                    f"table[{dataset!r}][{kernel!r}] has mean {mean!r}: normalising by the best mean "
                    "needs positive means (pass normalise=False)"
                )
            row[str(kernel)] = (mean, se)
            if str(kernel) not in kernels:
                kernels.append(str(kernel))
        rows[str(dataset)] = row

    plt = _pyplot()
    datasets = list(rows)
    width = 0.8 / len(kernels)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.45 * len(datasets) * len(kernels)), 4.2))
    centres = np.arange(len(datasets), dtype=np.float64)
    for k, kernel in enumerate(kernels):
        heights, errors = [], []
        for dataset in datasets:
            mean, se = rows[dataset].get(kernel, (np.nan, 0.0))
            scale = min(m for m, _ in rows[dataset].values()) if normalise else 1.0
            heights.append(mean / scale)
            errors.append(0.0 if math.isnan(se) else se / scale)
        x = centres - 0.4 + width * (k + 0.5)
        ax.bar(x, heights, width, yerr=errors, capsize=2.5, label=kernel)
    ax.set_xticks(centres)
    ax.set_xticklabels(datasets, rotation=20 if len(datasets) > 4 else 0, ha="right" if len(datasets) > 4 else "center")
    if normalise:
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ratio = "RMSE / best RMSE" if "RMSE" in metric else f"{metric} / best {metric}"
        ax.set_ylabel(f"{metric}\n({ratio} in data set)")
    else:
        ax.set_ylabel(metric)
    ax.legend(fontsize="small", ncol=min(len(kernels), 4))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


# -- heat maps --------------------------------------------------------------------------------------


def _kernel_matrix(K, name="K"):
    """A finite square Gram matrix (pass ``ker.gram(X)`` with ``Y`` omitted)."""
    return validate.square_matrix(K, name)


def heatmap(
    K: ArrayLike,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    path: PathLike | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """A heat map of one square kernel matrix ``K`` (rows top to bottom, as the matrix reads).

    Draws into ``ax`` when given (its figure is returned and saved), else into a new figure.
    ``vmin``/``vmax`` fix the colour scale (default: the range of ``K``).
    """
    K = _kernel_matrix(K)
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 4.0))
    else:
        fig = ax.figure
    image = ax.imshow(K, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if colorbar:
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    ax.set_xlabel("j")
    ax.set_ylabel("i")
    return _save(fig, path)


def heatmaps(
    kernels: Mapping[str, ArrayLike],
    *,
    path: PathLike | None = None,
    title: str | None = None,
    shared_scale: bool = True,
    cmap: str = "viridis",
) -> Figure:
    """Side-by-side heat maps of several square kernel matrices, ``{panel title: K}``.

    With ``shared_scale=True`` (default) all panels use one colour scale (the range over all
    matrices) and one colour bar, so the panels compare directly; otherwise each panel has its own.
    """
    if not isinstance(kernels, Mapping) or not kernels:
        raise InputError("kernels must be a non-empty dict {panel title: (n, n) kernel matrix}")
    mats = {str(k): _kernel_matrix(v, name=f"kernels[{k!r}]") for k, v in kernels.items()}
    plt = _pyplot()
    # each panel with its own colour bar needs room for it: a constrained layout keeps the bars
    # off the next panel's labels
    fig, axes = plt.subplots(
        1,
        len(mats),
        figsize=((4.0 if shared_scale else 4.4) * len(mats) + 0.8, 4.0),
        squeeze=False,
        layout=None if shared_scale else "constrained",
    )
    axes = axes[0]
    lo = min(float(K.min()) for K in mats.values()) if shared_scale else None
    hi = max(float(K.max()) for K in mats.values()) if shared_scale else None
    for ax, (name, K) in zip(axes, mats.items()):
        heatmap(K, ax=ax, title=name, cmap=cmap, colorbar=not shared_scale, vmin=lo, vmax=hi)
    if shared_scale:
        fig.colorbar(axes[0].images[0], ax=list(axes), fraction=0.046 / len(axes) ** 0.5, pad=0.04)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# -- convergence ------------------------------------------------------------------------------------


def _series(residuals, labels):
    """Normalise the accepted ``residuals`` forms to a list of (label, 1-d array)."""
    if isinstance(residuals, Mapping):
        items = [(str(k), v) for k, v in residuals.items()]
    else:
        arr = None
        try:
            arr = np.asarray(residuals, dtype=np.float64)
        except (TypeError, ValueError):
            pass  # ragged: a list of sequences of different lengths
        if arr is not None and arr.ndim == 1:
            seqs = [arr]
        elif arr is not None and arr.ndim == 2:
            seqs = list(arr)
        elif arr is None and isinstance(residuals, Sequence) and not isinstance(residuals, str):
            seqs = list(residuals)
        else:
            raise InputError(
                "residuals must be a sequence of numbers, a list of such sequences, or a dict "
                f"label -> sequence; got {type(residuals).__name__} of shape {np.shape(residuals)}"
            )
        if labels is not None:
            labels = [str(label) for label in labels]
            if len(labels) != len(seqs):
                raise InputError(f"labels has {len(labels)} entries for {len(seqs)} residual sequences")
        items = list(zip(labels if labels is not None else [None] * len(seqs), seqs))
    if not items:
        raise InputError("residuals is empty; pass at least one sequence of residuals")
    out = []
    for label, seq in items:
        try:
            seq = np.asarray(seq, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"residual sequence {label!r} must contain numbers") from None
        if seq.ndim != 1 or seq.size == 0:
            raise InputError(f"residual sequence {label!r} must be a non-empty 1-d sequence, got shape {seq.shape}")
        if np.any(np.isnan(seq)) or np.any(seq < 0):
            raise InputError(f"residual sequence {label!r} must be non-negative numbers (no NaN)")
        out.append((label, seq))
    return out


def convergence(
    residuals: ArrayLike | Sequence[ArrayLike] | Mapping[str, ArrayLike],
    *,
    labels: Sequence[str] | None = None,
    path: PathLike | None = None,
    title: str | None = None,
    ylabel: str = "max relative residual",
) -> Figure:
    """Fixed-point convergence: residual against iteration ``t = 1, 2, ...`` on a log y-axis.

    ``residuals`` is one sequence, a list of sequences (``labels`` names them) or a dict
    ``label -> sequence``. Exact zeros (converged to rounding) are drawn at the smallest
    positive value of the figure so the log axis can show them.
    """
    series = _series(residuals, labels)
    positive = [s[s > 0] for _, s in series]
    floor = min((float(p.min()) for p in positive if p.size), default=1e-16)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for label, seq in series:
        t = np.arange(1, seq.size + 1)
        ax.semilogy(t, np.where(seq > 0, seq, floor), marker="o", ms=3, label=label)
    ax.set_xlabel("iteration t")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if any(label is not None for label, _ in series):
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def fixed_point_residuals(ker: Kernel, X: ArrayLike, *, lam: float, steps: int = 30, **gram_kwargs: Any) -> np.ndarray:
    """The distance of the T-step kernel from the DEKer for ``T = 1, ..., steps``.

    Returns a float64 array ``r`` of length ``steps`` with
    ``r[t-1] = max_ij |K_t(i, j) − K_*(i, j)| / √(K_*(i, i) K_*(j, j))``, where
    ``K_t = ker.gram(X, lam=lam, steps=t, psi0="input", **gram_kwargs)`` and
    ``K_* = ker.gram(X, lam=lam, **gram_kwargs)`` (the fixed point, accurate to about 1e-13 of
    its scale, so residuals bottom out near that level). Entries whose diagonal is 0 are
    measured against 1 instead. ``gram_kwargs`` (``features``, ``input_scale``, ...) go to both calls.

    Note: the DEKer gives identical inputs the exact diagonal value while ``K_t`` is continuous;
    for distinct inputs the comparison is entry by entry.
    """
    steps = validate.count(steps, "steps", minimum=1, maximum=validate.MAX_STEPS)
    for key in ("steps", "psi0", "Y"):
        if key in gram_kwargs:
            raise InputError(f"fixed_point_residuals sets {key!r} itself; do not pass it in gram_kwargs")
    K_star = np.asarray(ker.gram(X, lam=lam, **gram_kwargs), dtype=np.float64)
    d = np.diagonal(K_star)
    scale = np.sqrt(np.outer(d, d))
    scale = np.where(scale > 0, scale, 1.0)
    ts = tuple(range(1, int(steps) + 1))
    try:  # one iteration for every T where gram accepts a sequence of step counts
        stack = np.asarray(ker.gram(X, lam=lam, steps=ts, psi0="input", **gram_kwargs), dtype=np.float64)
        if stack.shape != (len(ts), *K_star.shape):
            raise InputError("unexpected shape")
    except InputError:
        stack = [np.asarray(ker.gram(X, lam=lam, steps=t, psi0="input", **gram_kwargs), dtype=np.float64) for t in ts]
    return np.array([float(np.max(np.abs(K_t - K_star) / scale)) for K_t in stack])
