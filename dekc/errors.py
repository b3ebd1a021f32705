"""Typed errors. Each message names what is wrong and what would fix it."""

from __future__ import annotations


class DekcError(Exception):
    """Base class of every error dekc raises on purpose."""


class ExpressionError(DekcError, ValueError):
    """An expression text uses syntax, a symbol or a function outside the whitelist."""


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


class ConvergenceError(DekcError, RuntimeError):
    """A kernel iteration diverged or did not converge; the message names the entry and what would help."""


class DekcWarning(UserWarning):
    """Something valid but worth knowing (a choice dekc made, a boundary reached)."""
