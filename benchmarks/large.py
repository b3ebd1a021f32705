"""Large-data benchmark: Gram matrices on disk and on a Dask cluster, Nyström at a million points.

Gaussian family, R = ReLU, ReLU features, lam = 2, float64. Every measurement runs in a fresh
process whose data segment is capped (``RLIMIT_DATA``: heap and anonymous mappings, which is
where numpy and XLA allocate); peak memory is that process's own peak resident set.

* out-of-core: ``dekc.blocks.gram_to_zarr`` at ``--n`` (default 30000, 7.2 GB of output) under a
  2 GiB cap: time, ns per entry of the upper triangle, peak RSS; the in-memory ``gram`` under the
  same cap (it cannot hold the result) and its ns per entry at ``--compare-n`` without a cap;
* kill and resume: the same matrix started again in a fresh store, killed with SIGKILL once
  about half its blocks are recorded, then run again: blocks kept and computed, time; then the
  stored matrix checked against ``gram`` of ``--check`` random inputs (its entries among them)
  and every recorded block's digest;
* cluster: ``gram_to_zarr`` on a ``LocalCluster`` of 2 single-threaded worker processes against
  the single process (which uses both cores through XLA's threads), at ``--cluster-n``: time of
  each (after a warm-up matrix on each), and whether the two stores are equal bit for bit;
* Nyström accuracy at ``--exact-n`` (default 10000): exact kernel ridge regression against
  ``NystromRidge`` with m landmarks (uniform and k-means) for each m in ``--ms``: test RMSE and
  the RMS difference of the predictions;
* Nyström at scale: ``--nystrom-n`` (default 1,000,000) synthetic inputs in 8 dimensions,
  m = ``--m`` k-means landmarks, under a 4 GiB cap: time of the fit (streamed cross kernel) and of
  predicting 10,000 test points, peak RSS, test RMSE against the exact solution on a subsample of
  ``--exact-n`` inputs (and Nyström on that same subsample).

The target function is ``sin(1.5 x₁) + 0.5 cos(x₂ x₃) + 0.3 x₄² − 0.2 x₅`` of standard normal
inputs with noise 0.1 (``alpha = 0.01``, the noise variance), inputs scaled by 0.5 with bias 1.

Run: ``python benchmarks/large.py [--n 30000] [--cluster-n 12000] [--nystrom-n 1000000] [--m 1000]
[--skip outofcore,resume,cluster,accuracy,nystrom]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

GIB = 1 << 30
PARAMS = dict(lam=2.0, input_scale=0.5, bias=1.0)
ALPHA = 1e-2

_PRELUDE = textwrap.dedent("""
    import json, os, resource, sys, time
    cap = int(os.environ.get("BENCH_CAP", "0"))
    if cap:
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    import numpy as np
    import dekc
    from dekc import blocks
    from dekc.nystrom import NystromMap, NystromRidge, choose_landmarks
    PARAMS = dict(lam=2.0, input_scale=0.5, bias=1.0)
    ALPHA = 1e-2
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    def target(X):
        return np.sin(1.5 * X[:, 0]) + 0.5 * np.cos(X[:, 1] * X[:, 2]) + 0.3 * X[:, 3] ** 2 - 0.2 * X[:, 4]
    def data(n, seed, noise=0.1):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, 8))
        return X, target(X) + noise * rng.standard_normal(n)
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    def done(**values):
        print("RESULT " + json.dumps({**values, "peak_rss": peak()}), flush=True)
""")

_OUT_OF_CORE = """
X, _ = data(N, 0)
t = time.perf_counter()
array = blocks.gram_to_zarr(ker, X, out=PATH, block=BLOCK, **PARAMS)
seconds = time.perf_counter() - t
run = array.attrs["dekc_runs"][-1]
done(seconds=seconds, computed=run["computed_blocks"], reused=run["reused_blocks"])
"""

_IN_MEMORY = """
X, _ = data(N, 0)
t = time.perf_counter()
try:
    K = ker.gram(X, **PARAMS)
    done(seconds=time.perf_counter() - t, error=None)
except (MemoryError, dekc.DekcError) as exc:
    done(seconds=time.perf_counter() - t, error=f"{type(exc).__name__}: {str(exc)[:160]}")
"""

_CHECK = """
import zarr
X, _ = data(N, 0)
array = zarr.open_array(store=PATH, mode="r")
rng = np.random.default_rng(1)
S = np.sort(rng.choice(N, CHECK, replace=False))
K = ker.gram(X[S], **PARAMS)
stored = array.get_orthogonal_selection((S, S))
d = np.sqrt(np.diag(K))
report = blocks.verify_store(PATH)
done(max_rel=float(np.max(np.abs(stored - K) / np.outer(d, d))), bit_equal=float(np.mean(stored == K)),
     nan=int(np.isnan(stored).sum()), verified_blocks=report["verified"], blocks=report["blocks"])
"""

_CLUSTER = """
from distributed import Client, LocalCluster
X, _ = data(N, 0)
small, _ = data(2 * BLOCK, 5)
times = {}
blocks.gram_to_zarr(ker, small, out=PATH + "-warm-local", block=BLOCK, **PARAMS)
t = time.perf_counter()
blocks.gram_to_zarr(ker, X, out=PATH + "-local", block=BLOCK, **PARAMS)
times["local"] = time.perf_counter() - t
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40) as cl, Client(cl) as client:
    blocks.gram_to_zarr(ker, small, out=PATH + "-warm-cluster", block=BLOCK, client=client, **PARAMS)
    t = time.perf_counter()
    blocks.gram_to_zarr(ker, X, out=PATH + "-cluster", block=BLOCK, client=client, **PARAMS)
    times["cluster"] = time.perf_counter() - t
import zarr
a = zarr.open_array(store=PATH + "-local", mode="r")[:]
b = zarr.open_array(store=PATH + "-cluster", mode="r")[:]
done(**times, equal=bool(np.array_equal(a, b)))
"""

_ACCURACY = """
X, y = data(N, 0)
Xt, _ = data(10000, 99, noise=0.0)
yt = target(Xt)
t = time.perf_counter()
K = ker.gram(X, **PARAMS)
K[np.diag_indices_from(K)] += ALPHA
L = np.linalg.cholesky(K)
del K
beta = np.linalg.solve(L.T, np.linalg.solve(L, y))
del L
exact = np.concatenate([ker.gram(Xt[lo:lo + 2000], X, **PARAMS) @ beta for lo in range(0, len(Xt), 2000)])
exact_seconds = time.perf_counter() - t
rows = []
for method in ("uniform", "kmeans"):
    for m in MS:
        t = time.perf_counter()
        fmap = NystromMap(ker, choose_landmarks(X, m, method), PARAMS).fit()
        pred = NystromRidge(fmap, ALPHA).fit(X, y).predict(Xt)
        rows.append(dict(method=method, m=m, rmse=float(np.sqrt(np.mean((pred - yt) ** 2))),
                         diff=float(np.sqrt(np.mean((pred - exact) ** 2))), seconds=time.perf_counter() - t))
done(exact_rmse=float(np.sqrt(np.mean((exact - yt) ** 2))), exact_seconds=exact_seconds, rows=rows)
"""

_NYSTROM = """
X, y = data(N, 0)
Xt, _ = data(10000, 99, noise=0.0)
yt = target(Xt)
t = time.perf_counter()
Z = choose_landmarks(X, M, "kmeans")
landmark_seconds = time.perf_counter() - t
fmap = NystromMap(ker, Z, PARAMS).fit()
model = NystromRidge(fmap, ALPHA).fit(X, y)
fit_seconds = time.perf_counter() - t
t = time.perf_counter()
pred = model.predict(Xt)
predict_seconds = time.perf_counter() - t
nystrom_peak = peak()  # before the exact solution below (its 10000 x 10000 matrices)
rmse = float(np.sqrt(np.mean((pred - yt) ** 2)))
# the exact solution on a subsample, and Nystrom on that same subsample
S = np.random.default_rng(2).choice(N, SUB, replace=False)
K = ker.gram(X[S], **PARAMS)
K[np.diag_indices_from(K)] += ALPHA
L = np.linalg.cholesky(K)
del K
beta = np.linalg.solve(L.T, np.linalg.solve(L, y[S]))
del L
exact = ker.gram(Xt, X[S], **PARAMS) @ beta
sub_model = NystromRidge(NystromMap(ker, choose_landmarks(X[S], M, "kmeans"), PARAMS).fit(), ALPHA).fit(X[S], y[S])
sub_pred = sub_model.predict(Xt)
done(landmark_seconds=landmark_seconds, fit_seconds=fit_seconds, predict_seconds=predict_seconds, rmse=rmse,
     nystrom_peak=nystrom_peak,
     exact_sub_rmse=float(np.sqrt(np.mean((exact - yt) ** 2))),
     nystrom_sub_rmse=float(np.sqrt(np.mean((sub_pred - yt) ** 2))))
"""


def child(body: str, cap: int = 0, wait: bool = True, **values):
    """Run ``body`` in a fresh process with ``values`` defined (data segment capped at ``cap``)."""
    header = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    env = dict(os.environ, BENCH_CAP=str(cap))
    proc = subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + header + textwrap.dedent(body)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait:
        return proc
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"the benchmark's child failed ({proc.returncode}):\n{err[-3000:]}")


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def out_of_core(args, folder: Path) -> None:
    n, block = args.n, args.block
    entries = n * (n + 1) / 2
    print(f"\n## out-of-core: n = {n} ({8 * n * n / 1e9:.1f} GB of output), blocks of {block}, cap 2 GiB")
    got = child(_OUT_OF_CORE, 2 * GIB, N=n, BLOCK=block, PATH=str(folder / "K.zarr"), PARAMS=PARAMS)
    print(
        f"gram_to_zarr         {got['seconds']:8.1f} s  {1e9 * got['seconds'] / entries:6.1f} ns/entry  "
        f"peak RSS {gib(got['peak_rss'])}  ({got['computed']} blocks)"
    )
    capped = child(_IN_MEMORY, 2 * GIB, N=n, PARAMS=PARAMS)
    print(f"gram in memory       under the same cap: {capped['error'] or 'succeeded'}")
    ref = child(_IN_MEMORY, 0, N=args.compare_n, PARAMS=PARAMS)
    per = 1e9 * ref["seconds"] / (args.compare_n * (args.compare_n + 1) / 2)
    print(
        f"gram in memory       n = {args.compare_n}: {ref['seconds']:.1f} s, {per:.1f} ns/entry, peak RSS "
        f"{gib(ref['peak_rss'])}; out-of-core / in-memory ns per entry: "
        f"{1e9 * got['seconds'] / entries / per:.2f}"
    )
    shutil.rmtree(folder / "K.zarr", ignore_errors=True)


def resume(args, folder: Path) -> None:
    n, block = args.n, args.block
    path = folder / "R.zarr"
    print(f"\n## kill -9 and resume: n = {n}, blocks of {block}")
    blocks_total = (-(-n // block)) * (-(-n // block) + 1) // 2
    proc = child(_OUT_OF_CORE, 2 * GIB, wait=False, N=n, BLOCK=block, PATH=str(path), PARAMS=PARAMS)
    start = time.perf_counter()
    records = path / "dekc-blocks"
    while proc.poll() is None:
        done = len([p for p in records.iterdir() if not p.name.endswith(".tmp")]) if records.is_dir() else 0
        if done >= blocks_total // 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    killed_after = time.perf_counter() - start
    recorded = len([p for p in records.iterdir() if not p.name.endswith(".tmp")])
    print(
        f"killed (SIGKILL) after {killed_after:.1f} s with {recorded} of {blocks_total} blocks recorded "
        f"(exit {proc.returncode})"
    )
    got = child(_OUT_OF_CORE, 2 * GIB, N=n, BLOCK=block, PATH=str(path), PARAMS=PARAMS)
    print(
        f"rerun                {got['seconds']:8.1f} s  kept {got['reused']} blocks (read back and checked), "
        f"computed {got['computed']}, peak RSS {gib(got['peak_rss'])}"
    )
    check = child(_CHECK, 0, N=n, BLOCK=block, PATH=str(path), PARAMS=PARAMS, CHECK=args.check)
    print(
        f"check                {check['verified_blocks']} of {check['blocks']} blocks verify against their records; "
        f"K[S, S] for {args.check} random inputs against gram(X[S]): max |ΔK|/√(K_ii K_jj) = "
        f"{check['max_rel']:.2e}, {100 * check['bit_equal']:.1f} % bit-equal, {check['nan']} NaN"
    )
    shutil.rmtree(path, ignore_errors=True)


def cluster(args, folder: Path) -> None:
    n, block = args.cluster_n, args.cluster_block
    print(f"\n## LocalCluster (2 worker processes, 1 thread each) against one process: n = {n}, blocks of {block}")
    got = child(_CLUSTER, 0, N=n, BLOCK=block, PATH=str(folder / "C"), PARAMS=PARAMS)
    print(f"one process          {got['local']:8.1f} s")
    print(
        f"LocalCluster         {got['cluster']:8.1f} s   cluster / one process: {got['cluster'] / got['local']:.2f}; "
        f"stores equal bit for bit: {got['equal']}"
    )
    for p in folder.glob("C-*"):
        shutil.rmtree(p, ignore_errors=True)


def accuracy(args) -> None:
    ms = [int(v) for v in args.ms.split(",")]
    print(f"\n## Nyström against exact kernel ridge regression: n = {args.exact_n}, 10000 test points")
    got = child(_ACCURACY, 0, N=args.exact_n, MS=ms, PARAMS=PARAMS, ALPHA=ALPHA)
    print(f"exact                test RMSE {got['exact_rmse']:.4f}  ({got['exact_seconds']:.1f} s)")
    for row in got["rows"]:
        print(
            f"{row['method']:8s} m = {row['m']:5d}  test RMSE {row['rmse']:.4f} "
            f"({row['rmse'] / got['exact_rmse']:.3f} × exact)  RMS to exact predictions {row['diff']:.4f}  "
            f"({row['seconds']:.1f} s)"
        )


def nystrom(args) -> None:
    print(f"\n## Nyström at scale: n = {args.nystrom_n}, m = {args.m} k-means landmarks, cap 4 GiB")
    got = child(_NYSTROM, 4 * GIB, N=args.nystrom_n, M=args.m, SUB=args.exact_n, PARAMS=PARAMS, ALPHA=ALPHA)
    entries = args.nystrom_n * args.m
    print(f"landmarks            {got['landmark_seconds']:8.1f} s")
    print(
        f"fit (streamed)       {got['fit_seconds']:8.1f} s  ({1e9 * got['fit_seconds'] / entries:.1f} ns per cross-kernel "
        f"entry, landmarks included)   peak RSS {gib(got['nystrom_peak'])} through fit and predict (the inputs: "
        f"{gib(8 * 8 * args.nystrom_n)}; {gib(got['peak_rss'])} once the exact solution on the subsample is computed)"
    )
    print(f"predict 10000        {got['predict_seconds']:8.1f} s")
    print(
        f"test RMSE            Nyström on {args.nystrom_n}: {got['rmse']:.4f};  exact on a subsample of {args.exact_n}: "
        f"{got['exact_sub_rmse']:.4f};  Nyström (m = {args.m}) on that subsample: {got['nystrom_sub_rmse']:.4f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30000)
    parser.add_argument("--block", type=int, default=4096)
    parser.add_argument("--compare-n", type=int, default=8000)
    parser.add_argument("--check", type=int, default=2000)
    parser.add_argument("--cluster-n", type=int, default=12000)
    parser.add_argument("--cluster-block", type=int, default=2048)
    parser.add_argument("--exact-n", type=int, default=10000)
    parser.add_argument("--ms", default="100,300,1000,3000")
    parser.add_argument("--nystrom-n", type=int, default=1_000_000)
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--skip", default="", help="comma-separated: outofcore,resume,cluster,accuracy,nystrom")
    parser.add_argument("--folder", default=None, help="where the stores go (default: a temporary folder)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    folder = Path(args.folder or tempfile.mkdtemp(prefix="dekc-large-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dekc large-data benchmark; {os.cpu_count()} CPUs; stores under {folder}")
    try:
        if "outofcore" not in skip:
            out_of_core(args, folder)
        if "resume" not in skip:
            resume(args, folder)
        if "cluster" not in skip:
            cluster(args, folder)
        if "accuracy" not in skip:
            accuracy(args)
        if "nystrom" not in skip:
            nystrom(args)
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
