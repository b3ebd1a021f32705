"""Every built-in family with the common smooth activations and reparameterisations: does the
kernel compile, how, and what does an n = 2000 Gram matrix cost against gaussian + relu?

For each (family, route) a fresh process with an empty kernel cache derives the link, compiles
the kernel (cold compile time), loads it again from the cache in a second fresh process (cached
load time), and computes the Gram matrix of ``--n`` inputs (5 dimensions, N(0, I/5), relu
features, lam = ``--lam``) twice: the second time is reported (the first includes JAX's
compilation of the chunk shapes). The table gives the outcome (the error class and its first
words when the route is refused), the expectation methods, the series terms, the entries solved
again with the long series and those that fell back to quadrature (:attr:`dekc.Kernel.diagnostics`),
the largest error bound of the kernel's expectations (``Kernel.error_bounds``: 1e-12 for closed
forms, the quadrature rule's estimate otherwise), the times, the ratio of the Gram time to that
of gaussian + relu measured the same way in the same run, and ``dekc.verify(ker, dps=20, points=0, fixed_points=0)`` (every
pair and one-point form against the mpmath reference at ``c = ±√(ab)``, ``c = 0``, ``a = 0``,
``a = 1e-4`` against ``b = 1e4``, and one-point forms at variances from 1e-4 to 1e4): its outcome
and largest error relative to the Cauchy–Schwarz scale. Nothing here fails a build.

With ``--compile-only`` each route is compiled cold and loaded from the cache, nothing more: a
table of cold compile and cached load times, and the chosen quadrature node counts.

Run: ``python benchmarks/activations.py [--n 2000] [--limit 600] [--only gaussian,bernoulli]
[--compile-only] [--markdown docs/routes.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time

ACTIVATIONS = ("sigmoid", "tanh", "softplus", "gelu", "silu", "elu", "erf")
REPARAMS = ("sigmoid", "softplus", "tanh")

_RUN = textwrap.dedent("""
    import json, sys, time, warnings
    import numpy as np
    import dekc
    family, route, spec, n, lam, stage = sys.argv[1:4] + [int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]]
    warnings.simplefilter("ignore")
    out = {}
    try:
        t = time.perf_counter()
        ker = dekc.compile_kernel(family, **{route: spec})
        out["compile"] = time.perf_counter() - t
        out["methods"] = sorted(set(ker.methods.values()))
        out["bound"] = max(ker.error_bounds.values())
        if stage == "gram":
            X = np.random.default_rng(0).normal(size=(n, 5)) / np.sqrt(5)
            ker.gram(X, lam=lam)
            t = time.perf_counter()
            ker.gram(X, lam=lam)
            out["gram"] = time.perf_counter() - t
            d = ker.diagnostics
            out["terms"], out["long"], out["fallback"] = d.series_terms, d.long_series_entries, d.fallback_entries
            report = dekc.verify(ker, dps=20, points=0, fixed_points=0, workers=1)
            out["verify"] = "ok" if report.ok else f"{len(report.failures)} FAIL"
            out["verify_error"] = report.max_rel_error
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:110]}"
    print(json.dumps(out))
""")


def _run(args: list[str], env: dict, limit: float) -> dict:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, timeout=limit
        )
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {limit:g} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"process failed ({proc.stderr.strip().splitlines()[-1:]})"}
    return json.loads(lines[-1])


def measure(family: str, route: str, spec: str, n: int, lam: float, limit: float, stage: str = "gram") -> dict:
    """Cold compile (and Gram, for ``stage="gram"``) in one fresh process, then the cached load in another."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DEKC_CACHE_DIR": cache}
        result = _run([family, route, spec, str(n), str(lam), stage], env, limit)
        if "error" not in result:
            result["cached"] = _run([family, route, spec, str(n), str(lam), "load"], env, limit).get("compile")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="inputs per Gram matrix")
    parser.add_argument("--lam", type=float, default=4.0)
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per process")
    parser.add_argument("--only", default=None, help="comma-separated families (default: every built-in)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--compile-only", action="store_true", help="cold compile and cached load only")
    args = parser.parse_args()

    import dekc

    families = args.only.split(",") if args.only else dekc.families()
    if args.compile_only:
        lines = _compile_table(families, args.limit)
        _write(args, lines, "Cold compile of every built-in family with the smooth activations")
        return
    base = measure("gaussian", "reparam", "relu", args.n, args.lam, args.limit)
    lines = [
        f"n = {args.n} inputs in 5 dimensions, lam = {args.lam}, relu features; gaussian + relu: "
        f"Gram {base['gram']:.3g} s, cold compile {base['compile']:.2g} s, cached load {base['cached']:.2g} s.",
        "",
        "| family | route | outcome | methods | largest error bound | series terms | long-series entries "
        "| fallback entries | cold compile s | cached load s | Gram s | vs relu | verify | verify error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for family in families:
        for route, specs in (("activation", ACTIVATIONS), ("reparam", REPARAMS)):
            for spec in specs:
                r = measure(family, route, spec, args.n, args.lam, args.limit)
                if "gram" in r:
                    cached = "" if r.get("cached") is None else f"{r['cached']:.2g}"
                    line = (
                        f"| {family} | {route}={spec} | ok | {', '.join(r['methods'])} | {r['bound']:.1e} | "
                        f"{r['terms'] or ''} | {r['long']} | "
                        f"{r['fallback']} | {r['compile']:.1f} | {cached} | {r['gram']:.3g} | "
                        f"{r['gram'] / base['gram']:.2g} | {r['verify']} | {r['verify_error']:.1e} |"
                    )
                else:
                    line = f"| {family} | {route}={spec} | {r['error']} | | | | | | | | | | | |"
                lines.append(line)
                print(line, flush=True)
    _write(args, lines, "Every built-in family with the smooth activations")


def _compile_table(families, limit: float) -> list[str]:
    lines = [
        "| family | route | outcome | methods | largest error bound | cold compile s | cached load s |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for family in families:
        for route, specs in (("activation", ACTIVATIONS), ("reparam", REPARAMS)):
            for spec in specs:
                r = measure(family, route, spec, 0, 0.0, limit, stage="compile")
                if "compile" in r:
                    cached = "" if r.get("cached") is None else f"{r['cached']:.2g}"
                    line = (
                        f"| {family} | {route}={spec} | ok | {', '.join(r['methods'])} | {r['bound']:.1e} | "
                        f"{r['compile']:.1f} | {cached} |"
                    )
                else:
                    line = f"| {family} | {route}={spec} | {r['error']} | | | | |"
                lines.append(line)
                print(line, flush=True)
    return lines


def _write(args, lines: list[str], title: str) -> None:
    import dekc

    if args.markdown:
        command = " ".join(["python", "benchmarks/activations.py", *sys.argv[1:]])
        head = [
            f"# {title}",
            "",
            f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
            f"{os.cpu_count()} cores, dekc {dekc.__version__}); the script's docstring says what each column means. "
            "A route is refused when no valid link exists (the error says why) or its computation fails.",
            "",
        ]
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
