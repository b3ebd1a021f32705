"""Accuracy of the Mehler series against the mpmath reference, per activation.

For each activation ``f`` (sigmoid, tanh, softplus, gelu, silu, elu, erf) and each covariance of
the grid below, ``E[f(u) f(v)]`` summed by :mod:`dekc.series` (the terms a Gram matrix would use)
is compared with ``dekc.reference.expectation`` (mpmath, ``--dps`` digits). Printed per
activation: whether ``E[f f]`` has a closed form, the terms chosen, the largest error relative
to the Cauchy–Schwarz scale ``√(E f(u)² E f(v)²)``, and the certified bound at the worst point;
points the series does not certify are summed again with the long series (``LONG_TERMS``
terms) and counted, and those that does not certify either are counted too (a Gram matrix solves
those entries by quadrature). Nothing here fails a build.

Run: ``python benchmarks/series_accuracy.py [--dps 20] [ACTIVATION ...]`` (default: all of them).
"""

from __future__ import annotations

import argparse

import numpy as np

ACTIVATIONS = ("sigmoid", "tanh", "softplus", "gelu", "silu", "elu", "erf")
#: (a, b) pairs and correlations r = c/√(ab)
VARIANCES = ((1e-3, 1e-3), (0.5, 2.0), (3.0, 0.2))
CORRELATIONS = (-0.999, 0.3, 0.999)


def _sum(f, g, column: int, terms: int, r: float) -> tuple[float, float]:
    """The series of two one-input tables with ``terms`` terms at ``r``, and its truncation bound."""
    from dekc._jax import jnp

    value = float(jnp.sum(f.coef[0, :terms] * g.coef[0, :terms] * r ** jnp.arange(terms)))
    return value, abs(r) ** terms * float(jnp.sqrt(f.tail[0, column] * g.tail[0, column]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dps", type=int, default=20)
    parser.add_argument("activations", nargs="*", metavar="ACTIVATION", help=f"any of {', '.join(ACTIVATIONS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.activations) - set(ACTIVATIONS))
    if unknown:
        parser.error(f"unknown activation(s) {', '.join(unknown)}; choose from {', '.join(ACTIVATIONS)}")
    args.activations = args.activations or list(ACTIVATIONS)

    import dekc
    from dekc import codegen, expressions, printer, series
    from dekc._jax import jnp

    print(f"reference: mpmath at {args.dps} digits; a, b in {VARIANCES}, r in {CORRELATIONS}")
    print("| activation | E[f f] | terms | largest error / scale | bound at that point | long series | not certified |")
    print("|---|---|---|---|---|---|---|")
    for name in args.activations:
        expr = expressions.as_eta_expression(name)
        source = printer.function_source(
            "f", ["eta"], expr, {expressions.ETA: "eta"}, result="jnp.broadcast_to({}, jnp.shape(eta))"
        )
        module = codegen.load_module(codegen.expectation_module(source, quadrature=False), f"accuracy_{name}")
        kinks = tuple(float(k) for k in expressions.kink_points(expr))
        method = dekc.gaussian_expectation(name, name).method
        worst, worst_bound, uncertified, long_used, terms_used = 0.0, 0.0, 0, 0, set()
        for a, b in VARIANCES:
            f, g = series.Table(module.f, kinks, jnp.asarray([a])), series.Table(module.f, kinks, jnp.asarray([b]))
            terms = series.choose_terms([(f, g)])
            terms_used.add(terms)
            long = None
            scale = float(jnp.sqrt(f.second[0] * g.second[0]))
            for r in CORRELATIONS:
                c = r * np.sqrt(a * b)
                value, bound = _sum(f, g, series.TERMS.index(terms), terms, r)
                if bound > series.TOLERANCE:
                    if long is None:
                        long = [
                            series.Table(module.f, kinks, jnp.asarray([v]), checkpoints=(series.LONG_TERMS,))
                            for v in (a, b)
                        ]
                    value, bound = _sum(*long, 0, series.LONG_TERMS, r)
                    if bound > series.TOLERANCE:
                        uncertified += 1
                        continue
                    long_used += 1
                ref = float(dekc.reference.expectation(name, name, a, b, c, dps=args.dps))
                error = abs(value - ref) / scale
                if error >= worst:
                    worst, worst_bound = error, bound
        print(
            f"| {name} | {method} | {', '.join(map(str, sorted(terms_used)))} | {worst:.1e} | {worst_bound:.1e} | "
            f"{long_used} | {uncertified} of {len(VARIANCES) * len(CORRELATIONS)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
