"""dekc: a symbolic-plus-numeric compiler for deep equilibrium kernels (DEKers)."""

from ._version import __version__
from .errors import (CacheError, ConvergenceError, DataFileError, DekcError, DekcWarning, DerivationError,
                     ExpressionError, FamilyError, InputError, LinkError, MemoryBudgetError, NoExpectationError,
                     ScaleError, TimeBudgetError, UnknownFamilyError, UnprintableError, VerifyError)
from .budget import time_budget
from . import reference
from .baselines import NNGP, NTK, nngp, ntk
from .expectations import GaussianExpectation, gaussian_expectation
from .kernel import Kernel, compile_kernel
from .links import Link, link
from .registry import Family, families, family, register_family
from .verify import Item, Report, verify

__all__ = [
    "__version__",
    "CacheError",
    "ConvergenceError",
    "DataFileError",
    "DekcError",
    "DekcWarning",
    "DerivationError",
    "ExpressionError",
    "FamilyError",
    "InputError",
    "LinkError",
    "MemoryBudgetError",
    "NoExpectationError",
    "ScaleError",
    "TimeBudgetError",
    "UnknownFamilyError",
    "UnprintableError",
    "VerifyError",
    "time_budget",
    "Item",
    "Kernel",
    "Report",
    "verify",
    "NNGP",
    "NTK",
    "nngp",
    "ntk",
    "compile_kernel",
    "Family",
    "GaussianExpectation",
    "Link",
    "families",
    "gaussian_expectation",
    "reference",
    "link",
    "family",
    "register_family",
]
