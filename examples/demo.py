"""The bundled demo (run by `make demo`): from an exponential family to a compiled, verified DEKer.

Default problem, after the paper's experiment 4.1: the Gaussian family with R = ReLU, lam = 6,
ReLU features, on a 10 x 10 grid of 2-d inputs on [-5, 5]^2. Prints each pipeline stage (link,
compile, the DEKer, T-step kernels, verification against mpmath, a small kernel ridge regression
on the bundled yacht data) and writes to demo_output/: the Gram matrices (kernel.npy,
t_step_5.npy, limit.npy, nngp.npy, ntk.npy) and two figures (kernel.png: the DEKer beside the
NNGP; convergence.png: the T-step kernels approaching the fixed point).
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
    print(
        f"diagonal k(x, x) in [{d.min():.4g}, {d.max():.4g}]; continuous part lim k(x, x') / k(x, x) = "
        f"{np.mean(np.diag(limit) / d):.4f} (the nugget of a Heaviside rho)"
    )

    print("\nT-step kernels approach the fixed point (all T from one iteration: steps=(1, ..., 20)):")
    stack = ker.gram(X, lam=lam, steps=tuple(range(1, 21)))
    gaps = [float(np.max(np.abs(K_T - K)) / np.max(np.abs(K))) for K_T in stack]
    for steps in (1, 2, 5, 10, 20):
        print(f"  T = {steps:2d}: max |K_T - K| / max |K| = {gaps[steps - 1]:.2e}")

    nngp, ntk = dekc.nngp("relu", 3), dekc.ntk("relu", 3)
    K_nngp, K_ntk = nngp(X), ntk(X)
    print(f"\nbaselines on the same inputs: {nngp!r}, {ntk!r}")

    print("\n$ dekc.verify(ker, dps=20, points=1, fixed_points=1)  # generated code vs the mpmath reference")
    report = dekc.verify(ker, dps=20, points=1, fixed_points=1)
    print(f"ok = {report.ok}, largest relative error {report.max_rel_error:.1e} over {len(report.items)} items")

    regression(ker)

    OUT.mkdir(exist_ok=True)
    for name, matrix in [("kernel", K), ("t_step_5", stack[4]), ("limit", limit), ("nngp", K_nngp), ("ntk", K_ntk)]:
        np.save(OUT / f"{name}.npy", matrix)
    from dekc import plot

    plot.heatmaps(
        {f"DEKer (lam = {lam:g})": K, "NNGP (3 ReLU layers)": K_nngp},
        shared_scale=False,
        title="Gram matrices on the 10 x 10 grid",
        path=OUT / "kernel.png",
    )
    plot.convergence(
        {"max |K_T - K| / max |K|": gaps},
        title="T-step kernels approach the DEKer",
        ylabel="relative distance",
        path=OUT / "convergence.png",
    )
    written = sorted(p.name for p in OUT.iterdir() if p.suffix in (".npy", ".png"))
    print(f"\nwrote {', '.join(written)} to {OUT.resolve()}")


def regression(ker):
    """Kernel ridge regression on the bundled yacht data (308 hulls, 6 inputs): one 80/20 split,
    inputs standardised; each kernel's hyper-parameters and the ridge chosen by 5-fold
    cross-validation on the training part (a small grid; the full protocol is experiments/uci_benchmark.py)."""
    from scipy.linalg import cho_factor, cho_solve

    from dekc.datasets import load_uci

    X, y = load_uci("yacht")
    X = (X - X.mean(0)) / X.std(0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[: int(0.8 * len(y))], order[int(0.8 * len(y)) :]
    mean, scale = y[train].mean(), y[train].std()
    target = (y - mean) / scale

    def fit_predict(K, fit, predict, ridge):
        alpha = cho_solve(cho_factor(K[np.ix_(fit, fit)] + ridge * np.eye(len(fit))), target[fit])
        return K[np.ix_(predict, fit)] @ alpha

    folds = np.array_split(train, 5)

    def cv_then_test(settings):
        """The (setting, ridge) of least 5-fold CV error on the training part, and its test RMSE."""
        scores = {}
        for label, K in settings.items():
            for ridge in (0.01, 0.1):
                scores[label, ridge] = np.mean(
                    [np.mean((fit_predict(K, np.setdiff1d(train, f), f, ridge) - target[f]) ** 2) for f in folds]
                )
        label, ridge = min(scores, key=scores.get)
        rmse = np.sqrt(np.mean((fit_predict(settings[label], train, test, ridge) * scale + mean - y[test]) ** 2))
        return label, ridge, rmse

    print(
        f"\nkernel ridge regression on yacht ({len(y)} hulls; 80/20 split, hyper-parameters and ridge by 5-fold CV "
        "on the training part):"
    )
    start = time.perf_counter()
    scales = (2.0, 8.0)
    distances = np.sum((X[:, None] - X[None]) ** 2, axis=-1)
    deker = {}
    for s in scales:
        for f in (0.1, 1.0):
            K_fixed = ker.gram(X, lam=1.0, input_scale=s, bias=1.0, feature_scale=f)
            K_two = ker.gram(X, lam=1.0, input_scale=s, bias=1.0, feature_scale=f, steps=2)
            deker[f"fixed point, input scale {s:g}, feature scale {f:g}"] = K_fixed
            deker[f"T = 2, input scale {s:g}, feature scale {f:g}"] = K_two
    candidates = {
        "DEKer": deker,
        "NNGP (ReLU)": {
            f"depth {depth}, input scale {s:g}": dekc.nngp("relu", depth)(X, input_scale=s, bias=1.0)
            for depth in (1, 3)
            for s in scales
        },
        "RBF": {f"length scale {ell:g}": np.exp(-0.5 * distances / ell**2) for ell in (0.5, 1.0, 2.0, 4.0)},
    }
    for name, settings in candidates.items():
        label, ridge, rmse = cv_then_test(settings)
        print(f"  {name:12s} test RMSE {rmse:6.3f}   ({label}, ridge {ridge:g})")
    print("  (DEKer: lam = 1, bias = 1; NNGP: bias = 1)")
    print(f"  ({time.perf_counter() - start:.1f} s; the full benchmark is experiments/uci_benchmark.py)")


if __name__ == "__main__":  # dekc.verify runs reference integrals in worker processes
    main()
