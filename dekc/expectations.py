"""Gaussian expectations ``K_fg(a, b, c) = E[f(u) g(v)]``, ``(u, v) ~ N(0, [[a, c], [c, b]])``.

:class:`GaussianExpectation` is the user-facing engine: it derives a closed form from the rule
layer (:mod:`dekc.gaussian`: ``f`` and ``g`` as sums of atoms, one rule per atom pair) and, where
none exists, builds a quadrature rule (:mod:`dekc.quadrature`). Either way the numerical
functions are generated source (:mod:`dekc.codegen`) that runs under ``jit`` and ``grad``.
Closed forms are accurate to :data:`CLOSED_FORM_TOLERANCE` of the Cauchy–Schwarz scale;
quadrature to the ``tol`` asked for. Both are checked against :mod:`dekc.reference` in the tests.
"""

from __future__ import annotations

import functools
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from numpy.typing import ArrayLike

from . import codegen
from .budget import limited
from .errors import InputError, NoExpectationError, NotClosedForm, UnprintableError
from .expressions import ETA, as_eta_expression, to_mpmath
from .gaussian import ClosedForm, closed_form, with_correlation
from .quadrature import QuadratureExpectation

#: float64 accuracy the closed forms are tested to (relative to the Cauchy–Schwarz scale)
CLOSED_FORM_TOLERANCE = 1e-12


def _growth_check(f: sp.Expr, what: str) -> None:
    """Refuse functions that are not real and finite on ℝ or that grow like ``exp(x²)``."""
    fn = to_mpmath(f, ETA)

    def evaluate(x, dps):
        with mpmath.workdps(dps):
            try:
                return mpmath.mpmathify(fn(mpmath.mpf(x))), False
            except (ValueError, ZeroDivisionError, OverflowError, TypeError):
                return mpmath.nan, True  # an exact pole or domain error: more digits cannot help

    with mpmath.workdps(30):
        for x in (-1e4, -100, -3, -0.5, 0, 0.7, 2.5, 100, 1e4):  # 0 catches poles such as 1/eta
            value, raised = evaluate(x, 30)
            if not raised and not mpmath.isfinite(value):  # e.g. log(1 + e^x) at x = -1e4 needs ~|x|/ln 10 digits
                value, _ = evaluate(x, 50 + int(abs(x) / 2.3))
            if mpmath.isnan(value) or mpmath.im(value) != 0 or (abs(x) < 1e3 and not mpmath.isfinite(value)):
                raise NoExpectationError(
                    f"{what} {f} is not real and finite at eta = {x}; its Gaussian expectation is undefined"
                )
            if abs(x) >= 1e3 and (not mpmath.isfinite(value) or mpmath.log(abs(value) + 1) / x**2 > 1e-3):
                raise NoExpectationError(
                    f"{what} {f} grows like exp(eta^2) or faster: its Gaussian expectation does not "
                    "exist for every variance"
                )


class GaussianExpectation:
    """``E(a, b, c) = E[f(u) g(v)]`` for ``(u, v) ~ N(0, [[a, c], [c, b]])``, vectorised.

    Attributes: ``f``, ``g`` (sympy in ``eta``), ``method`` (``"closed-form"`` or
    ``"quadrature"``), ``expr`` (sympy in ``a, b, c`` or ``None``), ``one_point_expr``,
    ``dc_expr``, ``error_bound`` (relative to the Cauchy–Schwarz scale
    ``√(E f(u)² E g(v)²)``), ``closed`` (the :class:`dekc.gaussian.ClosedForm` or ``None``),
    ``quadrature`` (the :class:`dekc.quadrature.QuadratureExpectation` or ``None``). Calls accept numpy or JAX arrays (broadcast together) and return
    the same kind; JAX inputs stay traceable under ``jit`` and ``grad``.
    """

    def __init__(self, f: str | sp.Expr, g: str | sp.Expr, *, tol: float = 1e-9, derived: bool = False):
        """``derived=True``: ``f`` and ``g`` are sympy expressions dekc derived itself (a link's σ
        and ρ), which may contain functions outside the text whitelist."""
        tol = check_tolerance(tol)
        with limited(f"the Gaussian expectation of f = {str(f)[:80]}, g = {str(g)[:80]}"):
            self._derive(f, g, tol, derived)

    def _derive(self, f, g, tol, derived):
        self.f = f if derived and isinstance(f, sp.Expr) else as_eta_expression(f, what="f")
        self.g = g if derived and isinstance(g, sp.Expr) else as_eta_expression(g, what="g")
        _growth_check(self.f, "f")
        _growth_check(self.g, "g")
        self.closed: ClosedForm | None = None
        self.quadrature: QuadratureExpectation | None = None
        try:
            self.closed = closed_form(self.f, self.g)
            functions = self.source("K")
        except (NotClosedForm, UnprintableError):
            self.closed = None
        if self.closed is not None:
            self.method = "closed-form"
            pair = self.closed.pair
            self.expr = sp.simplify(with_correlation(pair)) if sp.count_ops(pair) < 300 else with_correlation(pair)
            self.dc_expr = with_correlation(self.closed.dc())
            self.one_point_expr = self.closed.one_point
            self.error_bound = CLOSED_FORM_TOLERANCE
            self._functions = _closed_form_functions(functions)
        else:
            self.method = "quadrature"
            self.expr = self.dc_expr = self.one_point_expr = None
            self.quadrature = QuadratureExpectation(self.f, self.g, tol=tol)
            self.error_bound = max(self.quadrature.error_bound, self.quadrature.one_point_error)
            self._functions = self.quadrature.functions()

    def source(self, prefix: str, title: str = "") -> str:
        """Generated source defining ``prefix``, ``prefix_dc`` and ``prefix_one_point``."""
        if self.quadrature is not None:
            return self.quadrature.source(prefix, title)
        assert self.closed is not None
        return codegen.closed_form_functions(prefix, self.closed, title)

    def describe(self) -> str:
        """One line: how the expectation is computed."""
        if self.quadrature is None:
            return f"closed-form ({sp.count_ops(self.expr)} ops): {self.expr}"
        q = self.quadrature
        return (
            f"quadrature ({q.dimension}-D, {q.n} Gauss-Legendre nodes per piece, "
            f"estimated error {self.error_bound:.1e} of the Cauchy-Schwarz scale)"
        )

    def emitted(self) -> codegen.ExpectationText:
        """What a kernel module needs from this expectation (see :func:`dekc.codegen.kernel_module`)."""
        return codegen.ExpectationText(
            method=self.method,
            description=self.describe(),
            error_bound=float(self.error_bound),
            nodes_per_entry=1 if self.quadrature is None else self.quadrature.nodes_per_entry,
            functions=self.source,
            closed=self.closed,
        )

    @property
    def positive(self):
        """The pair function for ``a, b > 0`` only (one evaluation instead of two; JAX arrays)."""
        return self._functions["positive"]

    def __repr__(self) -> str:
        return f"GaussianExpectation(f={self.f}, g={self.g}, method={self.method!r})"

    def __call__(self, a: ArrayLike, b: ArrayLike, c: ArrayLike) -> Any:
        return _apply(self._functions["pair"], a, b, c)

    def dc(self, a: ArrayLike, b: ArrayLike, c: ArrayLike) -> Any:
        """``∂K/∂c`` (Price: ``K_{f'g'}``)."""
        return _apply(self._functions["dc"], a, b, c)

    def one_point(self, a: ArrayLike) -> Any:
        """``E[f(u) g(u)]``, ``u ~ N(0, a)``."""
        return _apply(self._functions["one_point"], a)

    def estimate(self, a: ArrayLike, b: ArrayLike, c: ArrayLike) -> tuple[Any, Any]:
        """``(value, error estimate)``; the estimate is 0 for closed forms."""
        if self.quadrature is not None:
            return self.quadrature.estimate(a, b, c)
        value = self(a, b, c)
        return value, value * 0


def _closed_form_functions(functions: str) -> dict:
    """The jitted ``pair``, ``dc`` and ``one_point`` functions of generated closed-form source, and
    ``positive``, the pair form for ``a, b > 0`` only (one evaluation instead of two)."""
    from ._jax import jax

    text = codegen.expectation_module(functions, quadrature=False)
    module = codegen.load_module(text, f"dekc_expectation_{codegen.text_digest(text)[:16]}")
    return {
        "pair": jax.jit(module.K),
        "dc": jax.jit(module.K_dc),
        "one_point": jax.jit(module.K_one_point),
        "positive": jax.jit(module._K_form),
    }


def _apply(fn, *args):
    from ._jax import jax

    if any(isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) for x in args):
        return fn(*args)
    out = fn(*(np.asarray(x, dtype=np.float64) for x in args))
    out = np.asarray(out)
    return out if out.ndim else float(out)


def check_tolerance(tol) -> float:
    """The accuracy asked of quadrature: a number in ``[1e-15, 1e-2]``."""
    if (
        isinstance(tol, bool)
        or not isinstance(tol, (int, float, np.floating, np.integer))
        or not 1e-15 <= float(tol) <= 1e-2
    ):
        raise InputError(
            f"tol must be a number between 1e-15 and 1e-2 (the relative accuracy asked of quadrature), got {tol!r}"
        )
    return float(tol)


def gaussian_expectation(f: str | sp.Expr, g: str | sp.Expr, *, tol: float = 1e-9) -> GaussianExpectation:
    """The Gaussian expectation engine for the pair ``(f, g)`` (shorthands, text in ``eta``, sympy)."""
    return _cached_expectation(
        as_eta_expression(f, what="f"), as_eta_expression(g, what="g"), check_tolerance(tol), False
    )


def derived_expectation(f: sp.Expr, g: sp.Expr, *, tol: float = 1e-9) -> GaussianExpectation:
    """As :func:`gaussian_expectation`, for sympy expressions in ``eta`` that dekc derived itself
    (a link's σ and ρ, an activation's derivative): they may contain functions outside the
    text whitelist that the derivation produced."""
    return _cached_expectation(f, g, check_tolerance(tol), True)


@functools.lru_cache(maxsize=256)
def _cached_expectation(f, g, tol, derived):
    return GaussianExpectation(f, g, tol=tol, derived=derived)
