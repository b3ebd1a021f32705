"""The bundled demo (run by `make demo`): from an exponential family to a compiled, verified DEKer.

Default problem, after the paper's experiment 4.1: the Gaussian family with R = ReLU, lam = 6,
ReLU features, on a 10 x 10 grid of 2-d inputs on [-5, 5]^2. Prints each pipeline stage and
writes the Gram matrices to demo_output/ (kernel.npy, t_step_5.npy, limit.npy, nngp.npy, ntk.npy).
"""

import time
import warnings
from pathlib import Path

import numpy as np

import dekc
from dekc.cli import main as dekc_cli

OUT = Path("demo_output")


def main():
    print(f"dekc {dekc.__version__}: registered exponential families\n")
    dekc_cli(["families"])

    for name, kwargs in [("bernoulli", {"reparam": "identity"}), ("poisson", {"activation": "sigmoid"})]:
        print(f"\n$ dekc.link({name!r}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dekc.DekcWarning)
            print(dekc.link(name, **kwargs))

    print("\n$ ker = dekc.compile_kernel('gaussian', reparam='relu')")
    start = time.perf_counter()
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    print(f"compiled in {time.perf_counter() - start:.2f} s -> {ker.path}")
    print(f"sigma = {ker.sigma}, rho = {ker.rho}; methods {ker.methods}")
    E = dekc.gaussian_expectation(ker.sigma, ker.sigma)
    print(f"E[sigma(u) sigma(v)] = {E.expr}   (derived by Price's theorem)")

    grid = np.linspace(-5, 5, 10)
    X = np.array([(x, y) for x in grid for y in grid])
    lam = 6.0
    start = time.perf_counter()
    K = ker.gram(X, lam=lam)
    elapsed = time.perf_counter() - start
    print(f"\nDEKer fixed point on the 10 x 10 grid (lam = {lam}, ReLU features): {K.shape}, {elapsed:.2f} s")
    print("K[:4, :4] =\n" + np.array2string(K[:4, :4], precision=6))
    d = np.diag(K)
    limit = ker.gram(X, lam=lam, diagonal="limit")
    print(f"diagonal k(x, x) in [{d.min():.4g}, {d.max():.4g}]; continuous part lim k(x, x') / k(x, x) = "
          f"{np.mean(np.diag(limit) / d):.4f} (the nugget of a Heaviside rho)")

    print("\nT-step kernels approach the fixed point:")
    for steps in (1, 2, 5, 10, 20):
        gap = np.max(np.abs(ker.gram(X, lam=lam, steps=steps) - K)) / np.max(np.abs(K))
        print(f"  T = {steps:2d}: max |K_T - K| / max |K| = {gap:.2e}")

    nngp, ntk = dekc.nngp("relu", 3), dekc.ntk("relu", 3)
    K_nngp, K_ntk = nngp(X), ntk(X)
    print(f"\nbaselines on the same inputs: {nngp!r}, {ntk!r}")

    print("\n$ dekc.verify(ker, dps=20, points=1, fixed_points=1)  # generated code vs the mpmath reference")
    report = dekc.verify(ker, dps=20, points=1, fixed_points=1)
    print(f"ok = {report.ok}, largest relative error {report.max_rel_error:.1e} over {len(report.items)} items")

    OUT.mkdir(exist_ok=True)
    for name, matrix in [("kernel", K), ("t_step_5", ker.gram(X, lam=lam, steps=5)), ("limit", limit),
                         ("nngp", K_nngp), ("ntk", K_ntk)]:
        np.save(OUT / f"{name}.npy", matrix)
    print(f"\nwrote {', '.join(sorted(p.name for p in OUT.glob('*.npy')))} to {OUT.resolve()}")


if __name__ == "__main__":  # dekc.verify runs reference integrals in worker processes
    main()
