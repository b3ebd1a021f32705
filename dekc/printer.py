"""A strict printer from sympy to Python source that uses only ``jnp`` and ``jsp``.

``jnp`` is ``jax.numpy`` and ``jsp`` is ``jax.scipy.special``. Every function has an explicit
entry; anything else raises :class:`UnprintableError`, so no expression silently falls back to
``math`` or ``mpmath`` (which break under ``jit``). Safety rules:

* ``asin``/``acos`` print as the helpers ``_asin``/``_acos`` of :data:`ARC_HELPERS` (which every
  generated module carries): they clip their argument to ``[-1, 1]`` (rounding can push
  ``c/√(ab)`` past 1) and are within 2 ulp of the exact value, with finite gradients inside
  ``(-1, 1)``; being polynomial, they are cheaper than XLA's ``arcsin`` on CPU;
* ``Piecewise`` prints with the double-``where`` pattern: inside each branch every variable is
  replaced by ``jnp.where(cond, x, x_safe)`` with ``x_safe`` a point where the branch is valid, so
  the branch not taken is evaluated at a harmless point and cannot poison values or gradients
  (``jnp.where(x > 0, sqrt(x), 0)`` alone has a NaN gradient at ``x = 0``);
* ``e^x/(1 + e^x)`` prints as ``expit(x)``, ``log(1 + e^x)`` as ``logaddexp(0, x)`` and ``log(1 + x)`` as
  ``log1p(x)`` (no overflow or cancellation in the tails);
* ``Heaviside(x)`` prints as ``jnp.heaviside(x, 0.5)`` (the sympy convention ``H(0) = 1/2``);
* ``expm1``/``log1p`` (sympy's ``codegen.cfunctions``) print as ``jnp.expm1``/``jnp.log1p``, and the
  dilogarithm ``NegLi2Exp(x) = −Li₂(−e^x)`` as the helper ``_neg_li2_exp`` of :data:`ARC_HELPERS`
  (Taylor series for ``|x| < 1``, a series in ``e^{−|x|}`` and the inversion formula beyond; within
  a few ulp).
"""

from __future__ import annotations

import fractions
import functools
import itertools
import math
import re

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .errors import UnprintableError
from .expressions import ExpNormalCdf, NegLi2Exp, NormalCdf

# asin(z) = z + z t P(t), t = z² ≤ 1/4: P interpolates (asin(√t)/√t − 1)/t at 13 Chebyshev nodes of
# [0, 1/4] (interpolation error 1.5e-17). tools/precompute_arcsine.py regenerates these constants
# with mpmath at 50 digits; the tests check them against it and the helpers against mpmath. |x| > 1/2 uses asin(x) = π/2 − 2 asin(√((1 − |x|)/2)).
_ASIN_P = (
    0.16666666666666669,
    0.07499999999998433,
    0.04464285714635543,
    0.030381944138531247,
    0.02237217294214989,
    0.017352392720869973,
    0.013971212973552933,
    0.011479177415184906,
    0.01032281435018578,
    0.005457506718640358,
    0.01740087944269402,
    -0.014851887071247204,
    0.028757851367421566,
)
_HALF_PI = (1.5707963267948966, 6.123233995736766e-17)  # π/2 as a double and its remainder
_PI = (3.141592653589793, 1.2246467991473532e-16)


# −Li₂(−e^x) = π²/12 + x log 2 + x²/4 + x³ Σ_m a_m x^{2m−2} for |x| < 1, a_m = b_m/(2m + 1) with
# b_m = (4^m − 1) B_{2m}/(2m (2m)!) the Taylor coefficients of log(2 cosh(x/2)) (B = Bernoulli numbers);
# the terms decay like π^{−2m}, so 16 of them reach 1e-19 at |x| = 1.
_NEG_LI2_NEAR = tuple(
    float(sp.Rational(4**m - 1) * sp.bernoulli(2 * m) / (2 * m * sp.factorial(2 * m)) / (2 * m + 1))
    for m in range(1, 17)
)
# for |x| ≥ 1, y = −Li₂(−u) = Σ_k (−1)^{k+1} u^k/k², u = e^{−|x|} ≤ 1/e: 36 terms reach 1e-17 relative
_NEG_LI2_FAR = tuple((-1) ** (k + 1) / (k * k) for k in range(1, 37))
_LOG2 = 0.6931471805599453
_PI2_12 = (0.8224670334241132, -3.9634141667166074e-17)  # π²/12 as a double and its remainder


def _horner(coefficients, var: str) -> str:
    out = repr(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = f"({out} * {var} + {c!r})"
    return out


ARC_HELPERS = f'''def _arc_parts(x):
    """x clipped to [-1, 1], |x| > 1/2, z and asin(z) - z with asin(x) = asin(z) (|x| <= 1/2) or
    pi/2 - 2 asin(z) (|x| > 1/2), z <= 1/2."""
    x = jnp.clip(x, -1.0, 1.0)
    outer = jnp.abs(x) > 0.5
    t = jnp.where(outer, 0.5 - 0.5 * jnp.abs(x), x * x)
    z = jnp.where(outer, jnp.sqrt(jnp.where(outer, t, 1.0)), x)
    return x, outer, z, z * (t * {_horner(_ASIN_P, "t")})


def _asin(x):
    """arcsin of x clipped to [-1, 1], within 2 ulp."""
    x, outer, z, tail = _arc_parts(x)
    far = {_HALF_PI[0]!r} - (2.0 * z + (2.0 * tail - {_HALF_PI[1]!r}))
    return jnp.where(outer, jnp.copysign(far, x), z + tail)


def _acos(x):
    """arccos of x clipped to [-1, 1], within 2 ulp."""
    x, outer, z, tail = _arc_parts(x)
    far = jnp.where(x > 0, 2.0 * (z + tail), {_PI[0]!r} - (2.0 * z + (2.0 * tail - {_PI[1]!r})))
    return jnp.where(outer, far, {_HALF_PI[0]!r} - (x + (tail - {_HALF_PI[1]!r})))
'''

#: the dilogarithm helper, carried only by modules that call it (see :func:`helpers_for`)
DILOG_HELPER = f"""def _neg_li2_exp(x):
    \"\"\"-Li2(-e^x), the antiderivative of softplus vanishing at -inf, to a few ulp: Taylor series
    for |x| < 1, else y = -Li2(-e^-|x|) as a series in e^-|x| and, for x > 0, the inversion
    -Li2(-e^x) = pi^2/6 + x^2/2 - y.\"\"\"
    near = jnp.abs(x) < 1.0
    t = jnp.where(near, x, 0.0)
    s = t * t
    series = {_PI2_12[0]!r} + (t * ({_LOG2!r} + t * (0.25 + t * {_horner(_NEG_LI2_NEAR, "s")})) + {_PI2_12[1]!r})
    u = jnp.exp(-jnp.where(near, 1.0, jnp.abs(x)))
    y = u * {_horner(_NEG_LI2_FAR, "u")}
    far = jnp.where(x < 0, y, (2.0 * {_PI2_12[0]!r} + 0.5 * x * x) - (y - 2.0 * {_PI2_12[1]!r}))
    return jnp.where(near, series, far)
"""


def helpers_for(text: str) -> str:
    """The helper functions a generated ``text`` needs: :data:`ARC_HELPERS`, and
    :data:`DILOG_HELPER` when it calls ``_neg_li2_exp``."""
    return ARC_HELPERS + ("\n\n" + DILOG_HELPER if "_neg_li2_exp(" in text else "")


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
    expm1: "jnp.expm1",
    log1p: "jnp.log1p",
    NegLi2Exp: "_neg_li2_exp",
}


_EXACT = 2**53  # integers up to this are exact doubles


def _rational(p: int, q: int) -> str:
    """``p/q`` as a float64 literal: exact small integers and quotients of exact doubles as written
    (one correctly rounded division), anything larger as the correctly rounded double itself (so
    ``(10**320 + 1)/10**320`` prints as 1.0, not inf/inf)."""
    if abs(p) <= _EXACT and q <= _EXACT:
        return f"{p}.0" if q == 1 else f"({p}.0 / {q}.0)"
    try:
        value = float(fractions.Fraction(p, q))
    except OverflowError:
        raise UnprintableError(f"the constant {p}/{q} is beyond the float64 range") from None
    return repr(value)


class JaxPrinter:
    """Prints one expression; :meth:`doprint` returns the source of a Python expression."""

    def __init__(self, names: dict | None = None, bindings: dict | None = None):
        """``bindings``: where given, each guarded variable of a ``Piecewise`` branch becomes a local
        ``_g0, _g1, ...`` (source text → name, in order of first use) computed once, instead of its
        guard being printed at every occurrence (long polynomial branches repeat the variable tens
        of times: the traced graph would repeat the guard as often)."""
        self.names = names or {}
        self.bindings = bindings

    def doprint(self, expr) -> str:
        return self._print(stabilise(sp.sympify(expr)))

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
        if isinstance(e, sp.Rational):
            return _rational(int(e.p), int(e.q))
        if isinstance(e, sp.Float):
            if not math.isfinite(float(e)):
                raise UnprintableError(f"the constant {e} is beyond the float64 range")
            return repr(float(e))
        if e.is_number and e.is_real:
            value = float(e)
            if not math.isfinite(value):
                raise UnprintableError(f"the constant {e} is beyond the float64 range")
            return repr(value)
        if isinstance(e, sp.Add):
            return "(" + " + ".join(self._print(t) for t in e.args) + ")"
        if isinstance(e, sp.Mul):
            return "(" + " * ".join(self._print(f) for f in e.args) + ")"
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, _Expit):
            return f"jsp.expit({self._print(e.args[0])})"
        if isinstance(e, _Softplus):
            return f"jnp.logaddexp(0.0, {self._print(e.args[0])})"
        if isinstance(e, _Log1p):
            return f"jnp.log1p({self._print(e.args[0])})"
        if type(e) in _UNARY:
            return f"{_UNARY[type(e)]}({self._print(e.args[0])})"
        if isinstance(e, sp.asin):
            return f"_asin({self._print(e.args[0])})"
        if isinstance(e, sp.acos):
            return f"_acos({self._print(e.args[0])})"
        if isinstance(e, sp.atan2):
            return f"jnp.arctan2({self._print(e.args[0])}, {self._print(e.args[1])})"
        if isinstance(e, NormalCdf):
            return f"jsp.ndtr({self._print(e.args[0])})"
        if isinstance(e, ExpNormalCdf):
            return f"jnp.exp({self._print(e.args[0])} + jsp.log_ndtr({self._print(e.args[1])}))"
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
        if isinstance(e, sp.core.relational.Relational):
            ops = {
                sp.StrictLessThan: "<",
                sp.LessThan: "<=",
                sp.StrictGreaterThan: ">",
                sp.GreaterThan: ">=",
                sp.Equality: "==",
                sp.Unequality: "!=",
            }
            return f"({self._print(e.lhs)} {ops[type(e)]} {self._print(e.rhs)})"
        if isinstance(e, sp.And):
            return "(" + " & ".join(self._print(a) for a in e.args) + ")"
        if isinstance(e, sp.Or):
            return "(" + " | ".join(self._print(a) for a in e.args) + ")"
        if isinstance(e, sp.Not):
            return f"(~{self._print(e.args[0])})"
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

    def _piecewise(self, pieces, taken=()) -> str:
        """``taken``: conditions of earlier branches (all false in this one)."""
        (value, cond), rest = pieces[0], pieces[1:]
        valid = sp.And(*(sp.Not(t) for t in taken), cond)
        if cond is sp.true or not rest:
            return self._guarded(value, valid)
        return (
            f"jnp.where({self._print(cond)}, {self._guarded(value, valid)}, {self._piecewise(rest, taken + (cond,))})"
        )

    def _guarded(self, value, valid) -> str:
        """``value`` with its variables moved to a safe point where ``valid`` is false."""
        if valid is sp.true or not value.free_symbols:
            return self._print(value)
        safe = _safe_point(value, valid)
        if safe is None:  # no safe point found: the branch is evaluated as is
            return self._print(value)
        condition = self._print(valid)
        guarded = {s: f"jnp.where({condition}, {self._print(s)}, {float(x)!r})" for s, x in safe.items()}
        if self.bindings is not None:
            guarded = {s: self.bindings.setdefault(text, f"_g{len(self.bindings)}") for s, text in guarded.items()}
        return JaxPrinter({**self.names, **guarded}, self.bindings).doprint(value)


class _Expit(sp.Function):
    """Printing placeholder: ``e^x/(1 + e^x)`` evaluated as ``jsp.expit(x)`` (no inf/inf)."""


class _Softplus(sp.Function):
    """Printing placeholder: ``log(1 + e^x)`` evaluated as ``logaddexp(0, x)`` (no overflow or underflow)."""


class _Log1p(sp.Function):
    """Printing placeholder: ``log(1 + x)`` evaluated as ``log1p(x)``."""


def stabilise(expr):
    """Rewrite the numerically fragile forms above into their placeholders (before CSE, which
    would otherwise split them apart)."""

    def log_rule(arg):
        rest = arg - 1
        if arg.is_Add and 1 in arg.args:
            return _Softplus(rest.args[0]) if isinstance(rest, sp.exp) else _Log1p(rest)
        return sp.log(arg)

    # only products with an exponential factor: rebuilding every product unevaluated would leave
    # e.g. the 3*eta/2 inside exp(3*eta/2 + 1/2) unevaluated and no longer equal to its twin
    expr = expr.replace(
        lambda e: isinstance(e, sp.Mul) and any(isinstance(a, sp.exp) for a in e.args),
        lambda e: sp.Mul(*_logistic(e.args), evaluate=False),
    )
    return expr.replace(lambda e: isinstance(e, sp.log), lambda e: log_rule(e.args[0]))


def _logistic(factors):
    """Pair each ``exp(x)`` with a ``(k·(exp(x) + 1))^(-1)`` among ``factors`` into ``expit(x)/k``."""
    factors = list(factors)
    for k, f in enumerate(factors):
        if not isinstance(f, sp.exp):
            continue
        for m, g in enumerate(factors):
            if isinstance(g, sp.Pow) and g.exp == -1 and g.base.is_Add:
                # the base as k·(exp(x) + 1); factor_terms would also refactor x itself
                coeff = sp.cancel(g.base / (f + 1))
                if coeff.is_number and coeff != 0:
                    kept = [h for i, h in enumerate(factors) if i not in (k, m)]
                    return _logistic(kept + [_Expit(f.args[0]), sp.Integer(1) / coeff])
    return factors


_SAFE_CANDIDATES = (1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.0, 4.0, -4.0, 0.25, -0.25, 10.0, -10.0)


@functools.lru_cache(maxsize=1024)
def _safe_point(value, valid):
    """A point (one value per free symbol, tried jointly) where ``valid`` holds and ``value`` is finite
    (remembered: a kernel prints σ and ρ several times)."""
    value = (
        value.replace(_Expit, lambda x: 1 / (1 + sp.exp(-x)))
        .replace(_Softplus, lambda x: sp.log(1 + sp.exp(x)))
        .replace(_Log1p, lambda x: sp.log(1 + x))
    )
    symbols = sorted(value.free_symbols | valid.free_symbols, key=str)
    if len(symbols) > 3:
        return None
    for combo in itertools.product(_SAFE_CANDIDATES, repeat=len(symbols)):
        point = dict(zip(symbols, (sp.Float(x) for x in combo)))
        try:
            if valid.subs(point) is not sp.true:
                continue
            number = complex(value.subs(point).evalf())
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if number.imag == 0 and math.isfinite(number.real):
            return dict(zip(symbols, combo))
    return None


def jax_source(expr, names: dict, bindings: dict | None = None) -> str:
    """Source of a Python expression for ``expr``; ``names`` maps symbols to variable names;
    ``bindings`` collects guarded variables to assign first (see :class:`JaxPrinter`)."""
    return JaxPrinter(names, bindings).doprint(expr)


def function_source(
    name: str, args: list[str], expr, names: dict, *, prelude=(), doc: str = "", result: str = "{}"
) -> str:
    """Source of ``def name(*args)`` returning ``expr`` (or a tuple of expressions).

    Repeated subexpressions become temporaries ``_t0, _t1, ...`` (``sympy.cse``), except in
    expressions with ``Piecewise``, whose branches must stay guarded (see :meth:`JaxPrinter._guarded`):
    there each branch's guarded variables are locals ``_g0, _g1, ...`` computed once.
    ``prelude`` lines run first (argument guards); ``doc`` becomes the docstring; ``result``
    formats the returned expression (e.g. a broadcast).
    """
    several = isinstance(expr, (tuple, list))
    exprs = [stabilise(sp.sympify(e)) for e in (expr if several else [expr])]
    lines = [f"def {name}({', '.join(args)}):"]
    if doc:
        lines.append(f'    """{doc}"""')
    lines += [f"    {line}" for line in prelude]
    names = dict(names)
    if not any(e.has(sp.Piecewise) for e in exprs):
        temps, exprs = sp.cse(exprs, symbols=sp.numbered_symbols("_t"), optimizations="basic")
        for symbol, sub in temps:
            lines.append(f"    {symbol} = {jax_source(sub, names)}")
            names[symbol] = str(symbol)
    bindings: dict = {}
    printed = [result.format(jax_source(e, names, bindings)) for e in exprs]
    lines += [f"    {local} = {text}" for text, local in bindings.items()]
    lines.append(f"    return {', '.join(printed) if several else printed[0]}")
    return "\n".join(_without_dead_assignments(lines)) + "\n"


def _without_dead_assignments(lines: list[str]) -> list[str]:
    """Drop ``name = ...`` lines whose name no later line reads (unused guards and temporaries)."""
    kept: list[str] = []
    for line in reversed(lines):
        match = re.match(r"\s+(\w+) = ", line)
        if match and not any(re.search(rf"\b{match.group(1)}\b", later) for later in kept):
            continue
        kept.append(line)
    return kept[::-1]
