"""Regenerate the coefficients of the arcsine helpers in ``dekc/printer.py``.

``asin(z) = z + z t P(t)`` with ``t = z² ≤ 1/4``; ``P`` is the degree-12 polynomial interpolating
``(asin(√t)/√t − 1)/t`` at the 13 Chebyshev nodes of ``[0, 1/4]``, solved at 50 significant
digits with mpmath and rounded to float64. Also the two-double splits of ``π/2`` and ``π``.

    python tools/precompute_arcsine.py          # print the constants as Python source
    python tools/precompute_arcsine.py --check  # exit 1 unless dekc/printer.py holds exactly these
"""

from __future__ import annotations

import argparse
import sys

import mpmath

DEGREE = 12
DIGITS = 50


def coefficients(degree: int = DEGREE, digits: int = DIGITS) -> tuple[float, ...]:
    """The interpolating polynomial's coefficients, lowest power first, as float64."""
    n = degree + 1
    with mpmath.workdps(digits):

        def target(t):
            s = mpmath.sqrt(t)
            return (mpmath.asin(s) / s - 1) / t

        nodes = [mpmath.mpf(1) / 8 * (1 + mpmath.cos(mpmath.pi * (k + mpmath.mpf(1) / 2) / n)) for k in range(n)]
        vandermonde = mpmath.matrix([[x**m for m in range(n)] for x in nodes])
        solution = mpmath.lu_solve(vandermonde, mpmath.matrix([target(x) for x in nodes]))
        return tuple(float(c) for c in solution)


def split(value) -> tuple[float, float]:
    """``value`` as a double and the double nearest its remainder."""
    with mpmath.workdps(DIGITS):
        high = float(value)
        return high, float(value - mpmath.mpf(high))


def constants() -> dict[str, tuple[float, ...]]:
    with mpmath.workdps(DIGITS):
        return {"_ASIN_P": coefficients(), "_HALF_PI": split(mpmath.pi / 2), "_PI": split(mpmath.pi)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the constants in dekc/printer.py")
    args = parser.parse_args(argv)
    values = constants()
    if not args.check:
        for name, value in values.items():
            print(f"{name} = {value!r}")
        return 0
    from dekc import printer

    wrong = [name for name, value in values.items() if tuple(getattr(printer, name)) != value]
    for name in wrong:
        print(f"{name} in dekc/printer.py differs from the recomputed {values[name]!r}", file=sys.stderr)
    if not wrong:
        print("dekc/printer.py holds the recomputed constants")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
