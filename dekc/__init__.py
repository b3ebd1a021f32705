"""dekc: a symbolic-plus-numeric compiler for deep equilibrium kernels (DEKers).

Importing dekc turns on JAX's 64-bit mode (``jax_enable_x64``) for the whole process: every
kernel, expectation and tolerance is float64, and JAX cannot switch precision per function.
Code that needs JAX's 32-bit default should run in another process.
"""

from . import reference
from ._version import __version__
from .baselines import NNGP, NTK, nngp, ntk
from .budget import time_budget
from .compiler import compile_kernel
from .errors import (
    CacheError,
    ConvergenceError,
    DataFileError,
    DekcError,
    DekcWarning,
    DerivationError,
    ExpressionError,
    FamilyError,
    InputError,
    LinkError,
    MemoryBudgetError,
    NoExpectationError,
    ScaleError,
    TimeBudgetError,
    UnknownFamilyError,
    UnprintableError,
    VerifyError,
)
from .expectations import GaussianExpectation, gaussian_expectation
from .kernel import GramDiagnostics, GramPlan, Kernel
from .links import Link, link
from .registry import Family, families, family, register_family
from .verification import VerificationItem, VerificationReport, verify

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
    "VerificationItem",
    "GramDiagnostics",
    "GramPlan",
    "Kernel",
    "VerificationReport",
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
