"""Shared test helpers (not fixtures)."""

import collections
import json
import os
import warnings

import mpmath

import dekc
from dekc.expressions import ETA, to_mpmath


def numeric(expr, symbol=ETA):
    return to_mpmath(expr, symbol)


def quiet_link(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dekc.DekcWarning)
        return dekc.link(*args, **kwargs)


# smooth sample points, away from the kink at 0 that relu-like links have
ETA_POINTS = [mpmath.mpf(x) for x in (-7.5, -3.2, -1.1, -0.37, 0.29, 0.8, 1.7, 4.4, 9.1)]


#: outcomes of the property-based cases: (category, outcome) -> count
OUTCOMES: collections.Counter = collections.Counter()


def record(category: str, outcome: str) -> None:
    OUTCOMES[(category, outcome)] += 1


def outcome_table() -> list[str]:
    """One line per category: the count of each outcome (and the JSON file when asked for)."""
    categories = sorted({c for c, _ in OUTCOMES})
    kinds = ("value", "typed error", "untyped", "wrong", "past budget")
    lines = [f"{c:<13} {sum(OUTCOMES[(c, k)] for k in kinds):>6} cases: "
             + ", ".join(f"{k} {OUTCOMES[(c, k)]}" for k in kinds) for c in categories]
    target = os.environ.get("DEKC_PROPERTY_REPORT")
    if target and categories:
        with open(target, "w") as handle:
            json.dump({f"{c}/{k}": n for (c, k), n in sorted(OUTCOMES.items())}, handle, indent=1)
    return lines
