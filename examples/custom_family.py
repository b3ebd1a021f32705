"""Register your own exponential family from TOML and compile its deep equilibrium kernel.

Gaussian observations with a known variance v, N(v theta, v): A(theta) = v theta^2 / 2.

Run: ``python examples/custom_family.py``.
"""

import tempfile
from pathlib import Path

import numpy as np

import dekc

FAMILY = """
name = "normal_v"
description = "Real observations with known variance v: N(v theta, v)"
log_partition = "v*theta**2/2"
natural_domain = "(-oo, oo)"
sufficient_statistic = "y"
base_measure = "exp(-y**2/(2*v))/sqrt(2*pi*v)"
support = "reals"

[parameters]
v = 2
"""


def main():
    with tempfile.TemporaryDirectory() as folder:  # a family is a TOML file; this one is written on the fly
        path = Path(folder) / "normal_v.toml"
        path.write_text(FAMILY, encoding="utf-8")
        fam = dekc.register_family(path)
    print(f"registered {fam.name}: A = {fam.A}, convexity {fam.convexity}")

    ker = dekc.compile_kernel("normal_v", reparam="relu")  # v = 2, the file's default
    print(f"sigma = {ker.sigma}, rho = {ker.rho}")
    print(f"expectations: {ker.methods}")
    print(f"lambda bound: {ker.lambda_bound():.6f} (v / sqrt(2))")

    # linear features, bias 0: the diagonal fixed point is k(x, x) = |x|^2 / (2 lam^2 - v^2)
    X = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    K = ker.gram(X, lam=3.0, features="identity")
    print("diagonal at lam = 3: " + " ".join(f"{value:.15g}" for value in np.diag(K)))

    report = dekc.verify(ker, dps=20, points=0, fixed_points=0, workers=1)  # against the mpmath reference
    print(f"verify: ok = {report.ok}, {len(report.items)} items, largest relative error {report.max_rel_error:.1e}")


if __name__ == "__main__":
    main()
