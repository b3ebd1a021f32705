"""Gram-matrix benchmark: the DEKer fixed point against its floor and a numpy baseline.

Gaussian family, R = ReLU, ReLU features, lam = 2, float64, n inputs in 5 dimensions.
Everything is measured in this run and printed as ratios; nothing here fails a build.

* floor: one elementwise ``arccos(clip(G, -1, 1))`` plus ``sqrt`` pass over the n x n matrix
  (what a single arc-cosine kernel evaluation costs), with XLA's ``arccos`` and again with the
  polynomial ``_acos`` the generated code uses (dekc's printer helpers);
* dekc: ``ker.gram(X, lam=2)`` to the solver's 1e-13 tolerance;
* numpy baseline: the straightforward implementation, the plain iteration of the joint map on
  the full matrix until the largest change is below 1e-13 of the diagonal scale (vectorised numpy);
  and per-entry Newton in Python, timed on a sample of entries and scaled to n(n - 1)/2;
* accuracy: the largest |G(k) - k| / sqrt(ab) of each result, and their difference;
* peak memory: the largest growth of the resident set (sampled every millisecond) of a fresh
  process while it computes the n x n result, against the size of the result (for ``--n`` and
  each n in ``--memory-sizes``), after a first matrix at n = 1500 (whose programs, those of
  every matrix of at least 2^20 entries, are then loaded): the first call at n includes what
  loading this n's arrays costs, the second measures the computation alone;
* compile time: cold (empty cache, in a fresh process) and cached;
* against dekc's own deep NNGP baseline (``dekc.nngp("relu", 1)``, under ``jax.jit`` and called
  plainly), measured interleaved with the fixed point: the fixed point's time over the jitted
  NNGP's, and the plain call's over the jitted one;
* ns per entry of the fixed point for each n in ``--sizes`` (per entry of the upper triangle;
  best of nine rounds for n <= 4000, the sizes interleaved in each round, and of two for larger n);
* the other paths at ``--n``: T-step kernels (T = 1 and 5) against the jitted NNGP of the same
  depth, ``from_moments`` with and without the O(n³) PSD test against ``gram``, and the kernels
  whose expectations are Mehler series (gaussian with sigmoid and tanh links: 16 and 256 terms);
* the first Gram matrix of a fresh process (kernel cached) with an empty and with a warm XLA
  compilation cache (``DEKC_XLA_CACHE_DIR``);
* for each n in ``--grad-sizes``: the compile and run times of ``jax.jit(jax.grad(...))`` of the
  Gram matrix's sum with respect to ``lam`` (persistent XLA cache off), and the jitted forward
  call's time over the eager call's.

Run: ``python benchmarks/gram.py [--n 2000] [--repeat 3] [--sizes 1000,2000,4000]
[--grad-sizes 250,1000,2000]``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# -- the numpy baseline (independent of dekc's generated code) --------------------------------------


def relu_moments(X, bias=0.0):
    """c (order-1 arc-cosine kernel) and mu for ReLU features of x~ = (x, bias)."""
    xt = np.c_[X, np.full(len(X), bias)]
    G = xt @ xt.T
    norm = np.sqrt(np.diag(G))
    rho = np.clip(G / np.outer(norm, norm), -1, 1)
    theta = np.arccos(rho)
    c = np.outer(norm, norm) * (np.sin(theta) + (np.pi - theta) * rho) / (2 * np.pi)
    np.fill_diagonal(c, norm**2 / 2)
    return c, norm / np.sqrt(2 * np.pi)


def numpy_update(P, a, b, c, mx, my, lam):
    """G(P) for gaussian + relu: K_relu,relu - mu' K_relu,H - mu K_H,relu + c K_H,H."""
    sab = np.sqrt(np.outer(a, b))
    rho = np.clip(P / sab, -1, 1)
    theta = np.arccos(rho)
    k11 = sab * (np.sqrt(1 - rho**2) + (np.pi - theta) * rho) / (2 * np.pi)
    k10 = (np.sqrt(a)[:, None] * (1 + rho)) / (2 * np.sqrt(2 * np.pi))  # E[relu(u) H(v)]
    k01 = (np.sqrt(b)[None, :] * (1 + rho)) / (2 * np.sqrt(2 * np.pi))  # E[H(u) relu(v)]
    k00 = (np.pi - theta) / (2 * np.pi)
    return (k11 - my[None, :] * k10 - mx[:, None] * k01 + c * k00) / lam**2


def numpy_fixed_point(c, mu, lam, tol=1e-13, max_iter=100000):
    """Plain iteration of the joint map from Psi_0 = 1 until the change is below tol x scale."""
    n = len(mu)
    P = np.ones((n, n))
    for it in range(max_iter):
        d = np.diag(P).copy()
        new = numpy_update(P, d, d, c, mu, mu, lam)
        np.fill_diagonal(new, (d / 2 - 2 * mu * np.sqrt(d / (2 * np.pi)) + np.diag(c) / 2) / lam**2)
        change = np.max(np.abs(new - P) / np.sqrt(np.outer(np.diag(new), np.diag(new))))
        P = new
        if change < tol:
            return P, it + 1
    raise RuntimeError("numpy baseline did not converge")


def numpy_newton_entry(a, b, c, mx, my, lam, p):
    """Scalar Newton on one entry (the per-entry baseline)."""
    for _ in range(100):
        sab = math.sqrt(a * b)
        rho = min(1.0, max(-1.0, p / sab))
        theta = math.acos(rho)
        g = (
            sab * (math.sqrt(1 - rho * rho) + (math.pi - theta) * rho) / (2 * math.pi)
            - my * math.sqrt(a) * (1 + rho) / (2 * math.sqrt(2 * math.pi))
            - mx * math.sqrt(b) * (1 + rho) / (2 * math.sqrt(2 * math.pi))
            + c * (math.pi - theta) / (2 * math.pi)
        ) / lam**2
        dg = (
            (math.pi - theta) / (2 * math.pi)
            - (my * math.sqrt(a) + mx * math.sqrt(b)) / (2 * math.sqrt(2 * math.pi) * sab)
            + c / (2 * math.pi * math.sqrt(max(a * b - p * p, 1e-300)))
        ) / lam**2
        step = (g - p) / (1 - dg)
        p += step
        if abs(step) < 1e-14 * sab:
            return p
    return p


def residual(K, c, mu, lam):
    d = np.diag(K)
    G = numpy_update(K, d, d, c, mu, mu, lam)
    off = ~np.eye(len(d), dtype=bool)
    return float(np.max(np.abs(G - K)[off] / np.sqrt(np.outer(d, d))[off]))


# -- subprocess measurements ----------------------------------------------------------------------

_MEMORY = textwrap.dedent("""
    import gc, os, sys, threading, time, numpy as np, dekc
    n = int(sys.argv[1])
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * page
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.random.default_rng(0).normal(size=(n, 5))
    # the programs of a matrix of at least 2^20 entries (none depends on n beyond that), not yet
    # this n's arrays
    ker.gram(X[:1500], lam=2.0)
    def growth():
        peak, running = [0], [True]
        def sample():
            while running[0]:
                peak[0] = max(peak[0], rss())
                time.sleep(0.001)
        before = rss()
        thread = threading.Thread(target=sample)
        thread.start()
        K = ker.gram(X, lam=2.0)
        running[0] = False
        thread.join()
        return max(peak[0], rss()) - before, K.nbytes
    first, nbytes = growth()
    gc.collect()
    again, _ = growth()  # the programs for this n are loaded: the computation's own memory
    print(first, again, nbytes)
""")

_COLD = textwrap.dedent("""
    import time, dekc
    dekc.families()
    t = time.perf_counter(); dekc.compile_kernel("gaussian", reparam="relu"); cold = time.perf_counter() - t
    t = time.perf_counter(); dekc.compile_kernel("gaussian", reparam="relu"); warm = time.perf_counter() - t
    print(cold, warm)
""")

_CACHED = textwrap.dedent("""
    import time, dekc
    dekc.families()
    t = time.perf_counter(); dekc.compile_kernel("gaussian", reparam="relu"); print(time.perf_counter() - t)
""")


_FIRST = textwrap.dedent("""
    import sys, time, numpy as np, dekc
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.random.default_rng(0).normal(size=(int(sys.argv[1]), 5))
    t = time.perf_counter(); ker.gram(X, lam=2.0); print(time.perf_counter() - t)
""")

# jit(grad) of sum(gram) with respect to lam, and the jitted forward against the eager call, in a
# process without the persistent XLA cache (so that the compile times are real)
_GRAD = textwrap.dedent("""
    import sys, time, numpy as np, dekc
    from dekc._jax import jax, jnp
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.random.default_rng(0).normal(size=(int(sys.argv[1]), 5))
    def timed(fn):
        fn(); best = float("inf")
        for _ in range(3):
            t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
        return best
    grad = jax.jit(jax.grad(lambda lam: jnp.sum(ker.gram(X, lam=lam))))
    t = time.perf_counter(); grad = grad.lower(2.0).compile(); compile_time = time.perf_counter() - t
    run = timed(lambda: grad(2.0).block_until_ready())
    forward = jax.jit(lambda lam: ker.gram(X, lam=lam)).lower(2.0).compile()
    forward(2.0).block_until_ready(); ker.gram(X, lam=2.0)
    traced = eager = float("inf")
    for _ in range(15):  # interleaved, so that the load of a shared machine affects both alike
        t = time.perf_counter(); forward(2.0).block_until_ready(); traced = min(traced, time.perf_counter() - t)
        t = time.perf_counter(); ker.gram(X, lam=2.0); eager = min(eager, time.perf_counter() - t)
    print(compile_time, run, traced, eager)
""")


def run_python(code, *args, env=None):
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, check=True
    )
    return [float(x) for x in out.stdout.split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1000,2000,4000", help="n for the ns-per-entry line")
    parser.add_argument("--grad-sizes", default="250,1000,2000", help="n for the jit(grad) lines")
    parser.add_argument("--memory-sizes", default="4000,8000", help="n for the peak-memory lines")
    args = parser.parse_args()
    n, lam = args.n, 2.0

    import jax
    import jax.numpy as jnp

    import dekc

    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.random.default_rng(0).normal(size=(n, 5))
    c, mu = relu_moments(X)

    G = jnp.asarray(np.clip(np.corrcoef(X), -1, 1))
    floor_fn = jax.jit(lambda g: jnp.arccos(jnp.clip(g, -1.0, 1.0)) + jnp.sqrt(jnp.abs(g)))
    floor_fn(G).block_until_ready()
    from dekc import codegen
    from dekc.printer import ARC_HELPERS

    helpers = codegen.load_module("import jax.numpy as jnp\n\n" + ARC_HELPERS, "gram_benchmark_arc_helpers")
    poly_fn = jax.jit(lambda g: helpers._acos(jnp.clip(g, -1.0, 1.0)) + jnp.sqrt(jnp.abs(g)))
    poly_fn(G).block_until_ready()
    ker.gram(X, lam=lam)  # warm-up: compile
    ker.from_moments(c, mu, lam=lam)
    nngp = dekc.nngp("relu", 1)
    nngp_jit = jax.jit(lambda X: nngp(X))
    nngp_jit(X).block_until_ready()
    nngp(X)
    nngp5 = jax.jit(lambda X: dekc.nngp("relu", 5)(X))
    nngp5(X).block_until_ready()
    series_kernels = {name: dekc.compile_kernel("gaussian", reparam=name) for name in ("sigmoid", "tanh")}
    for other in series_kernels.values():
        other.gram(X, lam=lam)
        terms = other.diagnostics.series_terms
        assert terms is not None, "a series kernel"
    for T in (1, 5):
        ker.gram(X, lam=lam, steps=T)
    ker.from_moments(c, mu, lam=lam, check_psd=False)
    # interleaved, so that the load of a shared machine affects floor and kernel alike
    floors, polys, grams, moments, jitted, plain = [], [], [], [], [], []
    for _ in range(args.repeat):
        floors.append(best_of(lambda: floor_fn(G).block_until_ready(), 3))
        polys.append(best_of(lambda: poly_fn(G).block_until_ready(), 3))
        grams.append(best_of(lambda: ker.gram(X, lam=lam), 3))  # as many tries as the NNGP
        moments.append(best_of(lambda: ker.from_moments(c, mu, lam=lam), 1))
        jitted.append(best_of(lambda: nngp_jit(X).block_until_ready(), 3))
        plain.append(best_of(lambda: nngp(X), 3))  # as many tries as the jitted call
    floor, poly_floor, dekc_time, moments_time = min(floors), min(polys), min(grams), min(moments)
    nngp_time, plain_time = min(jitted), min(plain)
    # the other paths, interleaved with their baselines
    paths: dict = {key: [] for key in ("T1", "T5", "nngp5", "unchecked", "sigmoid", "tanh")}
    for _ in range(args.repeat):
        paths["T1"].append(best_of(lambda: ker.gram(X, lam=lam, steps=1), 3))
        paths["T5"].append(best_of(lambda: ker.gram(X, lam=lam, steps=5), 3))
        paths["nngp5"].append(best_of(lambda: nngp5(X).block_until_ready(), 3))
        paths["unchecked"].append(best_of(lambda: ker.from_moments(c, mu, lam=lam, check_psd=False), 1))
        for name, other in series_kernels.items():
            paths[name].append(best_of(lambda other=other: other.gram(X, lam=lam), 1))
    best = {key: min(values) for key, values in paths.items()}
    series_terms = {}
    for name, other in series_kernels.items():
        other.gram(X, lam=lam)
        series_terms[name] = other.diagnostics.series_terms
    sizes = [int(x) for x in args.sizes.split(",")]
    inputs = {size: np.random.default_rng(2).normal(size=(size, 5)) for size in sizes}
    fastest = {size: float("inf") for size in sizes}
    for size in sizes:
        ker.gram(inputs[size], lam=lam)
    # the sizes up to 4000 are cheap to repeat and noisier: nine rounds, the sizes interleaved in
    # each, so that a change in the machine's load affects them alike; the larger ones twice
    small = [size for size in sizes if size <= 4000]
    for rounds, group in ((9, small), (2, [size for size in sizes if size > 4000])):
        for _ in range(rounds):
            for size in group:
                fastest[size] = min(fastest[size], best_of(lambda Xs=inputs[size]: ker.gram(Xs, lam=lam), 1))
    ns_per_entry = {size: fastest[size] / (size * (size + 1) / 2) * 1e9 for size in sizes}
    K = ker.gram(X, lam=lam)

    t = time.perf_counter()
    P, iterations = numpy_fixed_point(c, mu, lam)
    numpy_time = time.perf_counter() - t

    rng = np.random.default_rng(1)
    sample = [tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(2000)]
    d = np.diag(K)
    t = time.perf_counter()
    for i, j in sample:
        numpy_newton_entry(d[i], d[j], c[i, j], mu[i], mu[j], lam, math.sqrt(d[i] * d[j]))
    per_entry = (time.perf_counter() - t) / len(sample) * n * (n - 1) / 2

    res_dekc, res_numpy = residual(K, c, mu, lam), residual(P, c, mu, lam)
    diff = float(np.max(np.abs(K - P) / np.sqrt(np.outer(d, d))))

    env = dict(os.environ)
    memory, memory_loaded, nbytes = run_python(_MEMORY, n)
    memory_sizes = {size: run_python(_MEMORY, size) for size in (int(x) for x in args.memory_sizes.split(","))}
    with tempfile.TemporaryDirectory() as cache:
        env["DEKC_CACHE_DIR"] = cache
        cold, _ = run_python(_COLD, env=env)
        (cached,) = run_python(_CACHED, env=env)
    with tempfile.TemporaryDirectory() as xla:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        env["DEKC_XLA_CACHE_DIR"] = xla
        (first_cold,) = run_python(_FIRST, n, env=env)
        (first_warm,) = run_python(_FIRST, n, env=env)
        env["DEKC_XLA_CACHE"] = "0"
        grads = {size: run_python(_GRAD, size, env=env) for size in (int(x) for x in args.grad_sizes.split(","))}

    print(f"gaussian + relu, relu features, n = {n}, float64, {jax.devices()[0].platform}")
    print(
        f"  floor (arccos + sqrt pass)      {floor * 1e3:9.1f} ms   = {floor / n**2 * 1e9:5.1f} ns/entry (XLA arccos)"
    )
    print(
        f"  floor, dekc's polynomial arccos {poly_floor * 1e3:9.1f} ms   = {poly_floor / n**2 * 1e9:5.1f} ns/entry;"
        f" fixed point = {dekc_time / poly_floor:5.1f} x this floor"
    )
    print(
        f"  dekc gram (fixed point, 1e-13)  {dekc_time * 1e3:9.1f} ms   = {dekc_time / floor:6.1f} x floor   (target <= 10)"
    )
    print(f"  dekc from_moments               {moments_time * 1e3:9.1f} ms   = {moments_time / floor:6.1f} x floor")
    print(
        f"  numpy per-entry Newton (est.)   {per_entry * 1e3:9.1f} ms   dekc is {per_entry / dekc_time:6.1f} x faster"
        " (target >= 20)"
    )
    print(
        f"  numpy joint iteration           {numpy_time * 1e3:9.1f} ms   ({iterations} iterations)"
        f"   dekc is {numpy_time / dekc_time:6.1f} x faster (a stronger, vectorised baseline)"
    )
    print(f"  residual |G(k) - k| / sqrt(ab)  dekc {res_dekc:.1e}   numpy {res_numpy:.1e}   max difference {diff:.1e}")
    print(
        f"  peak memory                     {memory / 2**20:9.1f} MiB = {memory / nbytes:4.2f} x the output "
        f"({nbytes / 2**20:.1f} MiB; target <= 4); {memory_loaded / nbytes:4.2f} x once this n's programs are loaded"
    )
    for size, (first, loaded, size_bytes) in memory_sizes.items():
        print(
            f"  peak memory n = {size:<6}          {first / size_bytes:4.2f} x the output in a fresh process "
            f"(target <= 1.2), {loaded / size_bytes:4.2f} x once its programs are loaded"
        )
    print(f"  compile: cold {cold:.2f} s (target <= 5), cached {cached * 1e3:.1f} ms (target <= 100)")
    print(
        f"  jitted NNGP depth 1 (dekc.nngp)  {nngp_time * 1e3:9.1f} ms   fixed point / NNGP = "
        f"{dekc_time / nngp_time:5.2f} (target <= 3)"
    )
    print(f"  NNGP called plainly             {plain_time * 1e3:9.1f} ms   plain / jit = {plain_time / nngp_time:5.2f}")
    print(
        f"  T-step kernels                  T = 1: {best['T1'] * 1e3:.1f} ms = {best['T1'] / nngp_time:4.2f} x jitted NNGP "
        f"depth 1; T = 5: {best['T5'] * 1e3:.1f} ms = {best['T5'] / best['nngp5']:4.2f} x jitted NNGP depth 5 "
        f"({best['nngp5'] * 1e3:.1f} ms)"
    )
    print(
        f"  from_moments                    {moments_time * 1e3:.1f} ms with the PSD test, "
        f"{best['unchecked'] * 1e3:.1f} ms with check_psd=False = {best['unchecked'] / dekc_time:4.2f} x gram"
    )
    print(
        "  series kernels (gaussian)       "
        + "; ".join(
            f"{name} ({series_terms[name]} terms): {best[name] * 1e3:.0f} ms = {best[name] / dekc_time:5.1f} x relu"
            for name in series_kernels
        )
    )
    print("  fixed point ns per entry        " + ", ".join(f"n = {k}: {v:.1f}" for k, v in ns_per_entry.items()))
    print(
        f"  first gram of a fresh process   {first_cold:.2f} s with an empty XLA cache, "
        f"{first_warm:.2f} s with a warm one (target <= 1)"
    )
    for size, (compile_time, run, traced, eager) in grads.items():
        print(
            f"  jit(grad) n = {size:<5}             compile {compile_time:5.2f} s (target <= 10), run {run * 1e3:7.1f} ms; "
            f"jitted forward {traced * 1e3:7.1f} ms = {traced / eager:4.2f} x eager"
        )


if __name__ == "__main__":
    main()
