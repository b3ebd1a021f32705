"""Finite-width SGD inner products approach the DEKer as the width grows (experiment 4.1 of
Tsuchida & Ong, *Stochastic gradient updates yield deep equilibrium kernels*, TMLR 2023).

The model: the Gaussian family (``A(θ) = θ²/2``) with ``R = ReLU``, so ``σ = ReLU``
and ``ρ = H`` (Heaviside), ``λ = 6``. Each input ``x`` of a 10 × 10 grid on ``[−5, 5]²`` produces
``d`` linear features ``t_i(x) = s·q_i·x̃`` (``f = identity``), ``x̃ = (input_scale·x, bias)``,
``q_i ~ N(0, I)``, fixed for the whole run. Their moments are exactly those that
``ker.gram(X, features="identity", feature_scale=s, input_scale=..., bias=...)`` uses:
``c(x, x') = s² x̃·x̃'`` and ``μ(x) = 0``. Its latent ``z(x) ∈ R^m``, ``m = ⌈d^{3/2}⌉``, starts at one
unit vector ``z_0`` shared by all inputs and takes ``T`` SGD steps on

    L(z) = (λ/2) √(m/d) ‖z‖² + (1/d) Σ_i [A(R(v_i·z)) − t_i(x) R(v_i·z)]

with step size ``√(d/m)/λ`` and a fresh Gaussian ``V_t ∈ R^{d×m}`` at every step, the same for
every input. (The step is ``z_{t+1} = −(λ√(dm))⁻¹ V_tᵀ g_t``, ``g_{t,i} = σ(u_i) − t_i(x) ρ(u_i)``,
``u = V_t z_t``; it is computed literally as ``z − η ∇L(z)``.)

The finite-width inner products ``Ψ̂_T(x, x') = z_T(x)·z_T(x')`` are compared with

* the DEKer ``k = ker.gram(X, lam=6, features="identity")`` (the fixed point: the limit as
  ``d → ∞`` and then ``T → ∞``), and
* the ``T``-step kernel from the same start, ``ker.gram(..., steps=T, psi0="constant")`` (the
  exact ``d → ∞`` limit of ``Ψ̂_T``); the two differ by the printed truncation error, which
  ``T = 30`` makes negligible,

by the relative Frobenius distance ``‖Ψ̂ − k‖_F/‖k‖_F``, the relative operator-norm distance
``‖Ψ̂ − k‖_2/‖k‖_2`` and the alignment ``⟨Ψ̂, k⟩_F/(‖Ψ̂‖_F‖k‖_F)``. The slope of ``log error``
against ``log d`` is fitted by least squares on the per-width means of the log errors.

Usage::

    python experiments/finite_width.py --quick       # d = 16..128, 3 seeds: well under a minute
    python experiments/finite_width.py --out DIR     # full run (about 10 minutes on 2 cores)
    python experiments/finite_width.py --overwrite   # full run replacing the recorded results
    python experiments/finite_width.py --out DIR --seeds 8 --widths 16 64 256

Writes to ``--out``: ``finite_width.csv`` (one row per width and seed, the fitted slopes in the
header), ``error_vs_width.png`` (errors on log–log axes with the fitted lines), ``heatmaps.png``
(finite width at the largest ``d`` beside the DEKer) and ``README.md`` (the command, the table and
the slopes). Default ``--out``: ``quick-results/finite_width/`` under the current directory with
``--quick``, otherwise the recorded results ``experiments/results/finite_width/``.

Recorded results (a folder with ``RECORDED.txt``, which every run without ``--quick`` writes when
it finishes) are never overwritten by accident: a run whose ``--out`` holds them stops before
computing anything unless ``--overwrite`` is given (see ``experiments/README.md``).
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
from recorded import default_out, mark_recorded, prepare

import dekc

FULL_WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
QUICK_WIDTHS = (16, 32, 64, 128)
LAM = 6.0
STEPS = 30
METRICS = ("frobenius", "operator", "alignment")
#: the rows of V_t are drawn in blocks of at most this many entries (bounded memory)
_BLOCK_ENTRIES = 1 << 23


def grid(points: int = 10, low: float = -5.0, high: float = 5.0) -> np.ndarray:
    """The ``points × points`` grid of 2-d inputs on ``[low, high]²``, row-major, float64."""
    g = np.linspace(low, high, points)
    return np.array([(a, b) for a in g for b in g], dtype=np.float64)


def latent_width(d: int) -> int:
    """``m = ⌈d^{3/2}⌉``, the latent width paired with ``d`` features."""
    return int(math.ceil(d**1.5 - 1e-9))


def _numpy_function(expr):
    """``expr`` (sympy, in ``eta`` only) as a vectorised numpy function of one array."""
    symbols = sorted(expr.free_symbols, key=str)
    if [str(s) for s in symbols] not in ([], ["eta"]):
        raise ValueError(f"{expr} must depend on eta only, it has {symbols}")
    return sp.lambdify(symbols or [sp.Symbol("eta")], expr, "numpy")


def simulate(X, d, *, lam=LAM, steps=STEPS, seed=0, sigma, rho, feature_scale=1.0, input_scale=1.0, bias=0.0, m=None):
    """``T = steps`` SGD steps of the width-``d`` model above with linear features; returns
    the ``(n, n)`` matrix of inner products ``z_T(x)·z_T(x')`` (float64).

    ``sigma`` and ``rho`` are vectorised numpy functions (the activation ``σ = (A∘R)'`` and
    ``ρ = R'``). The features ``t_i(x) = s·q_i·x̃`` and every ``V_t`` come from
    ``numpy.random.default_rng(seed)``; ``V_t`` is drawn in row blocks (``g_i`` depends only on
    row ``i``), so memory stays at ``O(n·m + block)``.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    m = latent_width(d) if m is None else int(m)
    rng = np.random.default_rng(seed)
    xt = np.concatenate([input_scale * X, np.full((n, 1), float(bias))], axis=1)
    Q = rng.standard_normal((d, xt.shape[1]))
    stats = feature_scale * (xt @ Q.T)  # t_i(x): (n, d)
    z0 = rng.standard_normal(m)
    Z = np.tile(z0 / np.linalg.norm(z0), (n, 1))  # one shared unit start: Ψ_0 = 1
    eta = math.sqrt(d / m) / lam  # the step size
    block = max(1, min(d, _BLOCK_ENTRIES // m))
    for _ in range(steps):
        data_grad = np.zeros_like(Z)  # (1/d) Σ_i v_i g_i for every input
        for lo in range(0, d, block):
            V = rng.standard_normal((min(block, d - lo), m))
            U = Z @ V.T  # u_i = v_i·z, (n, block)
            G = sigma(U) - stats[:, lo : lo + V.shape[0]] * rho(U)
            data_grad += G @ V
        grad = lam * math.sqrt(m / d) * Z + data_grad / d
        Z = Z - eta * grad
    return Z @ Z.T


def distances(K_hat, K):
    """Relative Frobenius and operator-norm distances of ``K_hat`` from ``K`` and their alignment
    ``⟨K_hat, K⟩_F/(‖K_hat‖_F‖K‖_F)``, as a dict."""
    D = K_hat - K
    return {
        "frobenius": float(np.linalg.norm(D) / np.linalg.norm(K)),
        "operator": float(np.linalg.norm(D, 2) / np.linalg.norm(K, 2)),
        "alignment": float(np.sum(K_hat * K) / (np.linalg.norm(K_hat) * np.linalg.norm(K))),
    }


def fit_slope(widths, values):
    """Least-squares slope (and its standard error) of ``log values`` against ``log widths``."""
    x, y = np.log(np.asarray(widths, dtype=np.float64)), np.log(np.asarray(values, dtype=np.float64))
    A = np.stack([x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = max(1, len(x) - 2)
    cov = (resid @ resid / dof) * np.linalg.inv(A.T @ A)
    return float(coef[0]), float(coef[1]), float(math.sqrt(cov[0, 0]))


def run(widths, seeds, *, steps=STEPS, lam=LAM, points=10, progress=True):
    """Simulate every width and seed; returns ``(records, K_star, K_T, K_last)`` where each record
    is a dict with the width, seed, latent width, distances from the DEKer and from the ``T``-step
    kernel, and the simulation time; ``K_last`` is a finite-width matrix at the largest width."""
    X = grid(points)
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    sigma, rho = _numpy_function(ker.sigma), _numpy_function(ker.rho)
    K_star = np.asarray(ker.gram(X, lam=lam, features="identity"))
    K_T = np.asarray(ker.gram(X, lam=lam, features="identity", steps=steps, psi0="constant"))
    records, K_last = [], None
    jobs = [(d, s) for d in widths for s in range(seeds)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(d * latent_width(d) for d, _ in jobs),
            unit="d·m",
            unit_scale=True,
            desc="SGD",
            file=sys.stderr,
            leave=False,
        )
    for d, seed in jobs:
        start = time.perf_counter()
        K_hat = simulate(X, d, lam=lam, steps=steps, seed=1000 * d + seed, sigma=sigma, rho=rho)
        elapsed = time.perf_counter() - start
        rec = {"d": d, "m": latent_width(d), "seed": seed, "seconds": elapsed}
        rec.update(distances(K_hat, K_star))
        rec.update({f"{k}_T": v for k, v in distances(K_hat, K_T).items()})
        records.append(rec)
        if d == max(widths):
            K_last = K_hat
        if bar is not None:
            bar.update(d * latent_width(d))
    if bar is not None:
        bar.close()
    return records, K_star, K_T, K_last


def summarise(records):
    """Per-width geometric means (log-averages) of the distances and the mean alignment, plus
    fitted slopes of log error (and of log(1 − alignment)) against log d."""
    widths = sorted({r["d"] for r in records})
    rows = []
    for d in widths:
        rs = [r for r in records if r["d"] == d]
        row = {"d": d, "m": rs[0]["m"], "seeds": len(rs)}
        for key in ("frobenius", "operator", "frobenius_T"):
            logs = np.log([r[key] for r in rs])
            row[key] = float(np.exp(logs.mean()))
            row[key + "_sd"] = float(logs.std(ddof=1)) if len(rs) > 1 else float("nan")  # spread, log scale
        row["alignment"] = float(np.mean([r["alignment"] for r in rs]))
        row["misalignment"] = float(np.exp(np.mean(np.log([1.0 - r["alignment"] for r in rs]))))
        rows.append(row)
    slopes = {
        key: fit_slope(widths, [row[key] for row in rows])
        for key in ("frobenius", "operator", "frobenius_T", "misalignment")
    }
    return rows, slopes


def _table(rows, slopes, truncation):
    lines = [
        "| d | m | seeds | rel. Frobenius vs DEKer | rel. operator vs DEKer | rel. Frobenius vs T-step | alignment |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['m']} | {r['seeds']} | {r['frobenius']:.4g} | {r['operator']:.4g} | "
            f"{r['frobenius_T']:.4g} | {r['alignment']:.6f} |"
        )
    lines.append("")
    for key, label in (
        ("frobenius", "relative Frobenius distance"),
        ("operator", "relative operator-norm distance"),
        ("frobenius_T", "relative Frobenius distance from the T-step kernel"),
        ("misalignment", "1 − alignment"),
    ):
        slope, _, se = slopes[key]
        lines.append(f"slope of log({label}) against log d: {slope:.3f} ± {se:.3f}")
    lines.append(f"truncation: ‖K_T − K_*‖_F/‖K_*‖_F = {truncation:.3g} (T = {STEPS}-step kernel against the DEKer)")
    return "\n".join(lines)


def _figures(rows, slopes, K_star, K_last, out):
    import dekc.plot as dplot

    plt = dplot._pyplot()
    widths = np.array([r["d"] for r in rows], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for key, label, marker in (
        ("frobenius", "relative Frobenius", "o"),
        ("operator", "relative operator norm", "s"),
        ("misalignment", "1 − alignment", "^"),
    ):
        vals = np.array([r[key] for r in rows])
        slope, icpt, se = slopes[key]
        line = ax.loglog(widths, vals, marker=marker, ls="none", label=f"{label} (slope {slope:.2f} ± {se:.2f})")[0]
        ax.loglog(widths, np.exp(icpt) * widths**slope, color=line.get_color(), lw=1)
    ax.set_xlabel("number of features d   (latent width m = d$^{3/2}$)")
    ax.set_ylabel("distance from the DEKer (geometric mean over seeds)")
    ax.set_title(f"Finite-width SGD vs DEKer (Gaussian, R = ReLU, λ = {LAM:g})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    dplot._save(fig, out / "error_vs_width.png")
    plt.close(fig)
    fig = dplot.heatmaps(
        {f"finite width, d = {int(widths[-1])}": K_last, "DEKer (d → ∞)": K_star},
        path=out / "heatmaps.png",
        title="Inner products z_T(x)·z_T(x') on the 10 × 10 grid",
    )
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A run without --quick writes RECORDED.txt into its output folder when it\n"
        "finishes; a run (quick or not) whose output folder holds it stops before\n"
        "computing anything unless --overwrite is given.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="widths 16..128 and 3 seeds (under a minute), written by default to "
        "quick-results/finite_width/ under the current directory",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: experiments/results/finite_width/, the recorded results; "
        "quick-results/finite_width/ with --quick)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow writing into a folder that holds the recorded results of a full run (they are replaced)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per width (default 5, 3 with --quick)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="feature counts d to simulate")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    widths = tuple(sorted(set(args.widths))) if args.widths else QUICK_WIDTHS if args.quick else FULL_WIDTHS
    seeds = args.seeds if args.seeds is not None else 3 if args.quick else 5
    if seeds < 2 or len(widths) < 2 or min(widths) < 1:
        parser.error("need at least 2 seeds and 2 positive widths (a slope and a spread)")
    command = " ".join(
        ["python experiments/finite_width.py", *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))]
    )
    out = args.out if args.out is not None else default_out("finite_width", args.quick)
    prepare(out, args.quick, args.overwrite, "finite_width", parser.error)  # before any work
    start = time.perf_counter()
    records, K_star, K_T, K_last = run(widths, seeds, progress=not args.no_progress)
    rows, slopes = summarise(records)
    truncation = float(np.linalg.norm(K_T - K_star) / np.linalg.norm(K_star))
    table = _table(rows, slopes, truncation)
    print(
        f"Finite-width SGD vs DEKer: Gaussian, R = ReLU, lam = {LAM:g}, linear features, m = ceil(d^1.5), "
        f"T = {STEPS} steps, 10 x 10 grid on [-5, 5]^2, {seeds} seeds per width\n"
    )
    print(table)

    with open(out / "finite_width.csv", "w", newline="", encoding="utf-8") as fh:
        fh.write(f"# command: {command}\n")
        fh.write(
            f"# gaussian family, R = relu, lam = {LAM:g}, features = identity, m = ceil(d^1.5), "
            f"T = {STEPS}, psi0 = shared unit z_0, 10 x 10 grid on [-5, 5]^2\n"
        )
        for key, (slope, _, se) in slopes.items():
            fh.write(f"# slope log({key}) vs log d: {slope:.6f} +- {se:.6f}\n")
        fh.write(f"# truncation ||K_T - K_*||_F / ||K_*||_F: {truncation:.6e}\n")
        fields = [
            "d",
            "m",
            "seed",
            "frobenius",
            "operator",
            "alignment",
            "frobenius_T",
            "operator_T",
            "alignment_T",
            "seconds",
        ]
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})
    _figures(rows, slopes, K_star, K_last, out)
    elapsed = time.perf_counter() - start
    (out / "README.md").write_text(
        "# Finite-width SGD inner products against the DEKer (experiment 4.1)\n\n"
        f"Produced by `{command}` ({elapsed:.0f} s of wall time on this machine; the seeds make the numbers "
        "reproducible). See the docstring of `experiments/finite_width.py` for the model.\n\nPer width: geometric means over seeds of the distances, mean alignment.\n\n"
        f"{table}\n\nFiles: `finite_width.csv` (one row per width and seed), `error_vs_width.png`, `heatmaps.png`.\n",
        encoding="utf-8",
    )
    if not args.quick:
        mark_recorded(out, command)
    print(f"\nwrote {out}/finite_width.csv, error_vs_width.png, heatmaps.png, README.md ({elapsed:.1f} s)")
    return rows, slopes


if __name__ == "__main__":
    main()
