"""Throughput of closed forms against the quadrature fallback, and sympy derivation time per pair.

Evaluates each expectation on N random covariances (default 10^6; `--n` to change), after one
warm-up call (JIT compilation is reported separately as part of the build time). Prints a table
with each pair's rate and its ratio to the ReLU·ReLU closed form measured in the same run; never
fails. Run: `python benchmarks/expectations.py [--n 1000000]`.
"""

import argparse
import time
import warnings

import numpy as np

from dekc.expectations import GaussianExpectation

PAIRS = [
    ("relu", "relu"),
    ("heaviside", "heaviside"),
    ("Max(eta, 0)**2", "Max(eta, 0)**2"),
    ("erf", "erf"),
    ("exp(0.5*eta)", "relu"),
    ("sin", "sin"),
    ("relu", "sigmoid"),  # quadrature, 1-D reduction
    ("heaviside", "tanh"),  # quadrature, 1-D reduction
    ("tanh", "tanh"),  # quadrature, 2-D rule
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--n2d", type=int, default=2_000, help="points for 2-D quadrature pairs (slow)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for f, g in PAIRS:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            E = GaussianExpectation(f, g)
        build = time.perf_counter() - start
        n = args.n2d if E.method == "quadrature" and E.quadrature.dimension == 2 else args.n
        a, b = rng.uniform(0.05, 5, (2, n))
        c = rng.uniform(-1, 1, n) * np.sqrt(a * b)
        E(a[:8], b[:8], c[:8])  # compile
        start = time.perf_counter()
        E(a, b, c)
        elapsed = time.perf_counter() - start
        rows.append((f"{f} * {g}", E.method, build, n, n / elapsed))
    base = rows[0][4]
    print(f"{'pair':<34} {'method':<12} {'derive+build s':>14} {'points':>9} {'evals/s':>12} {'vs relu*relu':>13}")
    for name, method, build, n, rate in rows:
        print(f"{name:<34} {method:<12} {build:14.2f} {n:9d} {rate:12.3e} {rate / base:13.2e}")


if __name__ == "__main__":
    main()
