"""Time of the link stage per (family, route): registry load, then each derivation, cold.

Prints a table; never fails. Run with `make bench` or `python benchmarks/link.py`.
"""

import time
import warnings

import dekc

CASES = [
    ("gaussian", {"reparam": "relu"}),
    ("bernoulli", {"reparam": "identity"}),
    ("gamma", {"reparam": "-exp(-eta)"}),
    ("gaussian", {"activation": "relu"}),
    ("gaussian", {"activation": "tanh"}),
    ("poisson", {"activation": "sigmoid"}),
    ("negative_binomial", {"activation": "exp"}),
    ("gaussian", {"activation": "gelu"}),
]


def main():
    start = time.perf_counter()
    names = dekc.families()
    load = time.perf_counter() - start
    print(f"registry: {len(names)} families validated in {load * 1e3:.0f} ms\n")
    print(f"{'family':<20} {'route':<24} {'seconds':>8}")
    times = []
    for name, kwargs in CASES:
        route = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dekc.DekcWarning)
            dekc.link(name, **kwargs)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        print(f"{name:<20} {route:<24} {elapsed:8.3f}")
    print(f"\nslowest / fastest derivation: {max(times) / min(times):.0f}x")


if __name__ == "__main__":
    main()
