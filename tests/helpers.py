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


def save_outcomes(folder, worker: str) -> None:
    """Write this process's counts to ``folder`` (one file per test process)."""
    if folder and OUTCOMES:
        with open(os.path.join(folder, f"{worker}.json"), "w") as handle:
            json.dump([[c, k, n] for (c, k), n in OUTCOMES.items()], handle)


def outcome_table(folder) -> list[str]:
    """One line per category: the count of each outcome over every test process (and the JSON
    file ``DEKC_PROPERTY_REPORT`` when asked for)."""
    totals: collections.Counter = collections.Counter()
    for name in sorted(os.listdir(folder)) if folder and os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as handle:
            for c, k, n in json.load(handle):
                totals[(c, k)] += n
    categories = sorted({c for c, _ in totals})
    kinds = ("value", "typed error", "untyped", "wrong", "past budget")
    lines = [
        f"{c:<13} {sum(totals[(c, k)] for k in kinds):>6} cases: " + ", ".join(f"{k} {totals[(c, k)]}" for k in kinds)
        for c in categories
    ]
    target = os.environ.get("DEKC_PROPERTY_REPORT")
    if target and categories:
        with open(target, "w") as handle:
            json.dump({f"{c}/{k}": n for (c, k), n in sorted(totals.items())}, handle, indent=1)
    return lines
