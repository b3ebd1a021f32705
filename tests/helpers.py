"""Shared test helpers (not fixtures)."""

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
