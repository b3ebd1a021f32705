"""dekc: a symbolic-plus-numeric compiler for deep equilibrium kernels (DEKers)."""

from ._version import __version__
from .errors import ConvergenceError, DekcError, DekcWarning, ExpressionError, FamilyError, LinkError, UnknownFamilyError
from . import reference
from .baselines import NNGP, NTK, nngp, ntk
from .expectations import GaussianExpectation, NoExpectationError, gaussian_expectation
from .kernel import InputError, Kernel, compile_kernel
from .links import Link, link
from .registry import Family, families, family, register_family
from .verify import Item, Report, VerifyError, verify

__all__ = [
    "__version__",
    "ConvergenceError",
    "InputError",
    "Item",
    "Kernel",
    "Report",
    "VerifyError",
    "verify",
    "NNGP",
    "NTK",
    "nngp",
    "ntk",
    "compile_kernel",
    "DekcError",
    "DekcWarning",
    "ExpressionError",
    "Family",
    "GaussianExpectation",
    "NoExpectationError",
    "FamilyError",
    "Link",
    "LinkError",
    "UnknownFamilyError",
    "families",
    "gaussian_expectation",
    "reference",
    "link",
    "family",
    "register_family",
]
