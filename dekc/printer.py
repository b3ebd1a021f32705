"""A strict printer from sympy to Python source that uses only ``jnp`` and ``jsp``.

``jnp`` is ``jax.numpy`` and ``jsp`` is ``jax.scipy.special``. Every function has an explicit
entry; anything else raises :class:`UnprintableError`, so no expression silently falls back to
``math`` or ``mpmath`` (which break under ``jit``). Safety rules:

* ``asin``/``acos`` clip their argument to ``[-1, 1]`` (rounding can push ``c/√(ab)`` past 1);
* ``Piecewise`` prints as nested ``jnp.where``; each branch's argument is not guarded here —
  callers that need NaN-free gradients through branches use :func:`safe_piecewise` forms;
* ``Heaviside(x)`` prints as ``jnp.heaviside(x, 0.5)`` (the sympy convention ``H(0) = 1/2``).
"""

from __future__ import annotations

import sympy as sp

from .errors import DekcError


class UnprintableError(DekcError, NotImplementedError):
    """The expression uses a function the JAX printer has no safe translation for."""


_UNARY = {
    sp.exp: "jnp.exp",
    sp.log: "jnp.log",
    sp.sin: "jnp.sin",
    sp.cos: "jnp.cos",
    sp.tan: "jnp.tan",
    sp.sinh: "jnp.sinh",
    sp.cosh: "jnp.cosh",
    sp.tanh: "jnp.tanh",
    sp.atan: "jnp.arctan",
    sp.asinh: "jnp.arcsinh",
    sp.atanh: "jnp.arctanh",
    sp.Abs: "jnp.abs",
    sp.sign: "jnp.sign",
    sp.erf: "jsp.erf",
    sp.erfc: "jsp.erfc",
    sp.loggamma: "jsp.gammaln",
}


class JaxPrinter:
    """Prints one expression; :meth:`doprint` returns the source of a Python expression."""

    def __init__(self, names: dict | None = None):
        self.names = names or {}

    def doprint(self, expr) -> str:
        return self._print(sp.sympify(expr))

    def _print(self, e) -> str:
        if e in self.names:
            return self.names[e]
        if isinstance(e, sp.Symbol):
            raise UnprintableError(f"free symbol {e} has no argument name")
        if e is sp.pi:
            return "jnp.pi"
        if e is sp.E:
            return "jnp.e"
        if e in (sp.oo, -sp.oo, sp.zoo, sp.nan):
            raise UnprintableError(f"cannot print the non-finite constant {e}")
        if isinstance(e, sp.Integer):
            return f"{int(e)}.0"
        if isinstance(e, sp.Rational):
            return f"({int(e.p)}.0 / {int(e.q)}.0)"
        if isinstance(e, sp.Float):
            return repr(float(e))
        if e.is_number and e.is_real:
            return repr(float(e))
        if isinstance(e, sp.Add):
            return "(" + " + ".join(self._print(t) for t in e.args) + ")"
        if isinstance(e, sp.Mul):
            return "(" + " * ".join(self._print(f) for f in e.args) + ")"
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if type(e) in _UNARY:
            return f"{_UNARY[type(e)]}({self._print(e.args[0])})"
        if isinstance(e, sp.asin):
            return f"jnp.arcsin(jnp.clip({self._print(e.args[0])}, -1.0, 1.0))"
        if isinstance(e, sp.acos):
            return f"jnp.arccos(jnp.clip({self._print(e.args[0])}, -1.0, 1.0))"
        if isinstance(e, sp.atan2):
            return f"jnp.arctan2({self._print(e.args[0])}, {self._print(e.args[1])})"
        if type(e).__name__ == "NormalCdf":
            return f"jsp.ndtr({self._print(e.args[0])})"
        if isinstance(e, sp.Heaviside):
            return f"jnp.heaviside({self._print(e.args[0])}, 0.5)"
        if isinstance(e, (sp.Max, sp.Min)):
            fn = "jnp.maximum" if isinstance(e, sp.Max) else "jnp.minimum"
            out = self._print(e.args[0])
            for arg in e.args[1:]:
                out = f"{fn}({out}, {self._print(arg)})"
            return out
        if isinstance(e, sp.Piecewise):
            return self._piecewise(list(e.args))
        if isinstance(e, sp.Relational):
            ops = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">",
                   sp.GreaterThan: ">=", sp.Equality: "==", sp.Unequality: "!="}
            return f"({self._print(e.lhs)} {ops[type(e)]} {self._print(e.rhs)})"
        if isinstance(e, sp.And):
            return "(" + " & ".join(self._print(a) for a in e.args) + ")"
        if isinstance(e, sp.Or):
            return "(" + " | ".join(self._print(a) for a in e.args) + ")"
        raise UnprintableError(f"no JAX translation for {type(e).__name__} in {e}")

    def _pow(self, e: sp.Pow) -> str:
        base, exp = e.args
        b = self._print(base)
        if exp == sp.Rational(1, 2):
            return f"jnp.sqrt({b})"
        if exp == -sp.Rational(1, 2):
            return f"(1.0 / jnp.sqrt({b}))"
        if exp.is_Integer:
            n = int(exp)
            if n == 2:
                return f"jnp.square({b})"
            if n == -1:
                return f"(1.0 / {b})"
            return f"({b} ** {n})"
        if exp.is_Rational and exp.q == 2:
            return f"(jnp.sqrt({b}) ** {int(exp.p)})"
        return f"jnp.power({b}, {self._print(exp)})"

    def _piecewise(self, pieces) -> str:
        (value, cond), rest = pieces[0], pieces[1:]
        if cond is sp.true or not rest:
            return self._print(value)
        return f"jnp.where({self._print(cond)}, {self._print(value)}, {self._piecewise(rest)})"


def jax_source(expr, names: dict) -> str:
    """Source of a Python expression for ``expr``; ``names`` maps symbols to variable names."""
    return JaxPrinter(names).doprint(expr)
