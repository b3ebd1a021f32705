"""Typed errors: every error dekc raises on purpose is one of these classes.

Each message names what is wrong (the argument, file, field or entry) and what would fix it.
Every class derives from :class:`DekcError` and from the built-in exception a Python user
would expect (``ValueError`` for bad values, ``TimeoutError`` for a spent time budget, ...), so
``except dekc.DekcError`` catches everything dekc raises deliberately.
"""

from __future__ import annotations


class DekcError(Exception):
    """Base class of every error dekc raises on purpose."""


class ExpressionError(DekcError, ValueError):
    """An expression text uses syntax, a symbol or a function outside the whitelist, or is too
    large or too deeply nested to be derived within dekc's limits."""


class FamilyError(DekcError, ValueError):
    """A family declaration is malformed or mathematically invalid.

    ``source`` is the file (or ``"<Family object>"``) and ``field`` the offending key;
    both are part of the message.
    """

    def __init__(self, source: str, field: str, problem: str):
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: field '{field}': {problem}")


class UnknownFamilyError(DekcError, LookupError):
    """No family of that name is registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class LinkError(DekcError, ValueError):
    """No valid link reparameterisation exists for the requested family and activation."""


class NoExpectationError(DekcError, ValueError):
    """The expectation does not exist (a function grows too fast) or is not real."""


class NotClosedForm(DekcError):
    """No rule gives this pair a closed form (quadrature takes over); internal, never escapes."""


class UnprintableError(DekcError, NotImplementedError):
    """The expression uses a function (or a constant) the JAX printer has no safe translation for."""


class DerivationError(DekcError, ValueError):
    """The symbolic stage could not handle an expression (sympy failed on it); the message names
    the expression and the stage, and suggests a simpler equivalent form."""


class TimeBudgetError(DekcError, TimeoutError):
    """Parsing or deriving a user expression did not finish within the time budget
    (``DEKC_TIME_BUDGET`` seconds, see :func:`dekc.time_budget`)."""


class InputError(DekcError, ValueError):
    """An argument has the wrong type, shape or value; the message names the argument, the value
    and the accepted range."""


class ScaleError(InputError):
    """Input moments or kernel values outside the range in which dekc's float64 arithmetic is
    validated; the message gives the range and the rescaling that would help."""


class MemoryBudgetError(InputError, MemoryError):
    """The requested result does not fit in the memory available; the message gives the size
    and what to do instead."""


class ConvergenceError(DekcError, RuntimeError):
    """A kernel iteration diverged or did not converge; the message names the entry and what would help."""


class CacheError(DekcError, OSError):
    """The kernel cache cannot be used (a path in it is not a regular file, or it is not
    writable); the message names the path to delete or the setting to change."""


class DataFileError(DekcError, ValueError):
    """A data file is missing, unreadable or not a finite numeric matrix."""


class VerifyError(DekcError, ValueError):
    """Bad arguments to :func:`dekc.verify`."""


class DekcWarning(UserWarning):
    """Something valid but worth knowing (a choice dekc made, a boundary reached, a cache file
    that was regenerated)."""
