"""Time budgets for the symbolic stage, and a typed error for whatever sympy cannot handle.

Parsing is bounded by the parser's own limits (:mod:`dekc.expressions`), but deriving a link or
an expectation from a legal expression can still be slow: sympy's simplification and
integration, or mpmath evaluating a special function at thousands of digits. Every public entry
point that derives from user input (:func:`dekc.link`, :func:`dekc.gaussian_expectation`,
:func:`dekc.compile_kernel`, family registration) runs under a wall-clock budget: past it the
derivation is interrupted and :class:`~dekc.errors.TimeBudgetError` is raised.

The budget is ``DEKC_TIME_BUDGET`` seconds (default :data:`DEFAULT_SECONDS`), or the value set
for a block with ``with dekc.time_budget(seconds): ...``. Nested calls share the outermost
budget. The interruption is delivered between Python bytecodes of the deriving thread; each
single step below that (one big-integer operation) is kept small by the parser's limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from .errors import DekcError, DerivationError, TimeBudgetError

#: the budget in seconds when neither ``DEKC_TIME_BUDGET`` nor :func:`time_budget` sets one
DEFAULT_SECONDS = 120.0

#: how often a spent budget's interruption is delivered again while the block still runs
_REFIRE_SECONDS = 0.2
_local = threading.local()
T = TypeVar("T")


class _Interrupt(BaseException):
    """Raised inside the deriving thread when its budget is spent (a BaseException, so library
    code that catches ``Exception`` cannot swallow it)."""


def _configured() -> float:
    override = getattr(_local, "override", None)
    if override is not None:
        return override
    text = os.environ.get("DEKC_TIME_BUDGET", "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        raise TimeBudgetError(
            f"DEKC_TIME_BUDGET={text!r} is not a number of seconds; unset it or give e.g. 60"
        ) from None
    if not value > 0:
        raise TimeBudgetError(f"DEKC_TIME_BUDGET={text!r} must be a positive number of seconds")
    return value


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Run the derivations in this block under a budget of ``seconds`` (in this thread)."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not seconds > 0
        or seconds != seconds
        or seconds == float("inf")
    ):
        raise TimeBudgetError(f"time_budget takes a positive finite number of seconds, got {seconds!r}")
    previous = getattr(_local, "override", None)
    _local.override = float(seconds)
    try:
        yield
    finally:
        _local.override = previous


def _raise_in(thread_id: int, exc) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


@contextlib.contextmanager
def limited(what: str) -> Iterator[None]:
    """Run the block under the current budget; ``what`` names the derivation in the error.

    Unexpected exceptions from sympy or mpmath inside the block (anything that is not a
    :class:`DekcError`) become a :class:`DerivationError` that names ``what``.
    """
    if getattr(_local, "active", False):  # an outer budget governs
        yield
        return
    seconds = _configured()
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"armed": True, "fired": False}

    def fire():
        with lock:
            if state["armed"]:
                state["fired"] = True
                _raise_in(thread_id, ctypes.py_object(_Interrupt))
                # an interruption delivered inside a callback that ignores exceptions (a garbage
                # collector hook, a __del__) is lost: deliver it again until the block ends
                again = threading.Timer(_REFIRE_SECONDS, fire)
                again.daemon = True
                again.start()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    started = time.monotonic()
    _local.active = True
    try:
        try:
            timer.start()
            yield
        finally:
            with lock:
                state["armed"] = False
            timer.cancel()
            if state["fired"]:
                _raise_in(thread_id, None)  # clear an interruption not yet delivered
        if state["fired"]:  # every delivery was lost: the budget was spent all the same
            raise _Interrupt
    except _Interrupt:
        raise TimeBudgetError(
            f"{what} did not finish within the time budget of {seconds:g} s (after {time.monotonic() - started:.1f} s); "
            "give a simpler expression, or raise the budget with DEKC_TIME_BUDGET=SECONDS or "
            "dekc.time_budget(seconds)"
        ) from None
    except DekcError:
        raise
    except RecursionError:
        raise DerivationError(
            f"{what}: the expression is nested too deeply for the symbolic stage; give a simpler equivalent form"
        ) from None
    except (
        ArithmeticError,
        TypeError,
        ValueError,
        AttributeError,
        NotImplementedError,
        KeyError,
        IndexError,
        NameError,
        AssertionError,
    ) as exc:
        message = str(exc).strip().splitlines()
        raise DerivationError(
            f"{what}: the symbolic stage failed ({type(exc).__name__}: "
            f"{message[0][:200] if message else ''}); give a simpler equivalent expression, "
            "or R directly with reparam="
        ) from None
    finally:
        _local.active = False


def run_limited(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` under :func:`limited`."""
    with limited(what):
        return fn(*args, **kwargs)
