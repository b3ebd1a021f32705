"""Every built-in family with the common smooth activations and reparameterisations: does the
kernel compile, how, and what does a Gram entry cost against gaussian + relu?

For each (family, route) a fresh process (empty kernel cache, time limit ``--limit`` seconds)
derives the link, compiles the kernel and computes a Gram matrix of ``--n`` inputs (5 dimensions,
lam = ``--lam``). The table gives the outcome (the error class and its first words when it fails),
the expectation methods, the quadrature nodes per entry, the cold compile time, the time per Gram
entry, the n = 2000 Gram time that implies (entries cost the same at every n once the per-call
overhead is small against them, which holds for every kernel slower than a few µs per entry) and
its ratio to the n = 2000 Gram of gaussian + relu, measured in the same run. Nothing here fails a
build.

Run: ``python benchmarks/activations.py [--n 40] [--limit 120] [--only gaussian,bernoulli]``
(ELU is written ``Max(eta, 0) + Min(exp(eta) - 1, 0)``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

ELU = "Max(eta, 0) + Min(exp(eta) - 1, 0)"
ACTIVATIONS = ("sigmoid", "tanh", "softplus", "gelu", "eta*sigmoid(eta)", ELU, "erf")
REPARAMS = ("sigmoid", "softplus", "tanh")

_RUN = textwrap.dedent("""
    import json, sys, time, warnings
    import numpy as np
    import dekc
    family, route, spec, n, lam = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    warnings.simplefilter("ignore")
    out = {}
    try:
        t = time.perf_counter()
        ker = dekc.compile_kernel(family, **{route: spec})
        out["compile"] = time.perf_counter() - t
        out["methods"] = sorted(set(ker.methods.values()))
        out["nodes"] = ker.module.NODES_PER_ENTRY
        X = np.random.default_rng(0).normal(size=(n, 5)) / np.sqrt(5)
        # compile the chunk shape: closed forms use blocks sized by n, quadrature ones small blocks
        ker.gram(X if out["nodes"] == 1 else X[:4], lam=lam)
        t = time.perf_counter()
        ker.gram(X, lam=lam)
        out["entry"] = (time.perf_counter() - t) / (n * (n + 1) / 2)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:90]}"
    print(json.dumps(out))
""")


def measure(family: str, route: str, spec: str, n: int, lam: float, limit: float) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DEKC_CACHE_DIR": cache}
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _RUN, family, route, spec, str(n), str(lam)],
                capture_output=True,
                text=True,
                env=env,
                timeout=limit,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"not finished within {limit:g} s"}
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            return {"error": f"process failed ({proc.stderr.strip().splitlines()[-1:]})"}
        result = json.loads(lines[-1])
        result["wall"] = time.perf_counter() - started
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="inputs per Gram matrix")
    parser.add_argument("--lam", type=float, default=4.0)
    parser.add_argument("--limit", type=float, default=120.0, help="seconds per (family, route)")
    parser.add_argument("--only", default=None, help="comma-separated families (default: every built-in)")
    args = parser.parse_args()

    import dekc

    families = args.only.split(",") if args.only else dekc.families()
    base = measure("gaussian", "reparam", "relu", 2000, args.lam, args.limit)
    base_time = base["entry"] * 2000 * 2001 / 2
    print(
        f"n = {args.n}, lam = {args.lam}, limit {args.limit:g} s per kernel; "
        f"gaussian + relu at n = 2000: {base_time:.3g} s ({base['entry'] * 1e6:.3g} µs per entry)"
    )
    print(
        "| family | route | outcome | methods | nodes/entry | cold compile s | µs/entry | vs relu | n=2000 Gram (est.) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for family in families:
        for route, specs in (("activation", ACTIVATIONS), ("reparam", REPARAMS)):
            for spec in specs:
                r = measure(family, route, spec, args.n, args.lam, args.limit)
                if "entry" in r:
                    full = r["entry"] * 2000 * 2001 / 2
                    ratio = full / base_time
                    print(
                        f"| {family} | {route}={spec} | ok | {', '.join(r['methods'])} | {r['nodes']:,} | "
                        f"{r['compile']:.1f} | {r['entry'] * 1e6:.3g} | {ratio:.3g} | {full:.3g} s |",
                        flush=True,
                    )
                else:
                    print(f"| {family} | {route}={spec} | {r['error']} | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
