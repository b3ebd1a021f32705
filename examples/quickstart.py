"""Quickstart: compile a deep equilibrium kernel, compute its Gram matrix and verify the kernel.

Run: ``python examples/quickstart.py``.
"""

import numpy as np

import dekc


def main():
    # the Gaussian family with the reparameterisation R = ReLU: sigma = ReLU, rho = Heaviside
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    print(f"sigma = {ker.sigma}, rho = {ker.rho}")
    print(f"expectations: {ker.methods}")
    print(f"lambda bound: {ker.lambda_bound():.6f} (the fixed point needs lam above it)")

    X = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [-1.0, 1.0]])
    K = ker.gram(X, lam=2.0, bias=1.0)  # the DEKer with ReLU features (the default): (4, 4), float64
    print("\nK = ker.gram(X, lam=2.0, bias=1.0) =\n" + np.array2string(K, precision=6))
    print("diagonal: " + " ".join(f"{value:.15g}" for value in np.diag(K)))
    print(f"symmetric: {np.allclose(K, K.T)}, smallest eigenvalue {np.linalg.eigvalsh(K).min():.4g}")

    # the generated code against the independent mpmath reference: here the edge cases and one-point
    # forms (about a second); dekc.verify(ker) also checks 2-D covariances and fixed points (minutes)
    report = dekc.verify(ker, dps=20, points=0, fixed_points=0, workers=1)
    print(f"\nverify: ok = {report.ok}, {len(report.items)} items, largest relative error {report.max_rel_error:.1e}")


if __name__ == "__main__":
    main()
