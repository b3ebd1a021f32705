"""Expression text to sympy through a whitelist, never through ``eval`` or ``sympify``.

The text is read by :func:`ast.parse` (which only builds a syntax tree) and the tree is walked
node by node: numbers, the arithmetic operators ``+ - * / **``, whitelisted names and calls of
whitelisted functions with positional arguments. Anything else (attributes, subscripts, strings,
keywords, lambdas, comprehensions, unknown names) is refused with an :class:`ExpressionError`.
Numeric powers and factorials are bounded so a short text cannot demand a huge computation.
"""

from __future__ import annotations

import ast
import math
from typing import Callable, Mapping

import mpmath
import sympy as sp

from .errors import ExpressionError

#: The pre-activation variable of the link stage, ``η``.
ETA = sp.Symbol("eta", real=True)

MAX_TEXT_LENGTH = 2000
_MAX_RESULT_DIGITS = 1000  # largest exact number a numeric power may produce
_MAX_FACTORIAL_ARGUMENT = 1000


def sigmoid(x):
    """Logistic function ``1/(1 + e^{-x})``."""
    return 1 / (1 + sp.exp(-x))


def softplus(x):
    """``log(1 + e^x)``."""
    return sp.log(1 + sp.exp(x))


def normal_cdf(x):
    """Standard normal cdf ``Φ(x) = (1 + erf(x/√2))/2``."""
    return (1 + sp.erf(x / sp.sqrt(2))) / 2


def relu(x):
    """``max(x, 0)``."""
    return sp.Max(x, 0)


def gelu(x):
    """``x Φ(x)``."""
    return x * normal_cdf(x)


# name -> (builder, allowed argument counts; None = two or more)
FUNCTIONS: dict[str, tuple[Callable, tuple[int, ...] | None]] = {
    "exp": (sp.exp, (1,)),
    "log": (sp.log, (1,)),
    "sqrt": (sp.sqrt, (1,)),
    "sin": (sp.sin, (1,)),
    "cos": (sp.cos, (1,)),
    "tan": (sp.tan, (1,)),
    "sinh": (sp.sinh, (1,)),
    "cosh": (sp.cosh, (1,)),
    "tanh": (sp.tanh, (1,)),
    "asin": (sp.asin, (1,)),
    "acos": (sp.acos, (1,)),
    "atan": (sp.atan, (1,)),
    "asinh": (sp.asinh, (1,)),
    "atanh": (sp.atanh, (1,)),
    "erf": (sp.erf, (1,)),
    "erfc": (sp.erfc, (1,)),
    "abs": (sp.Abs, (1,)),
    "Abs": (sp.Abs, (1,)),
    "sign": (sp.sign, (1,)),
    "Heaviside": (sp.Heaviside, (1,)),
    "heaviside": (sp.Heaviside, (1,)),
    "Max": (sp.Max, None),
    "Min": (sp.Min, None),
    "max": (sp.Max, None),
    "min": (sp.Min, None),
    "gamma": (sp.gamma, (1,)),
    "loggamma": (sp.loggamma, (1,)),
    "lgamma": (sp.loggamma, (1,)),
    "factorial": (sp.factorial, (1,)),
    "binomial": (sp.binomial, (2,)),
    "sigmoid": (sigmoid, (1,)),
    "softplus": (softplus, (1,)),
    "relu": (relu, (1,)),
    "Phi": (normal_cdf, (1,)),
    "gelu": (gelu, (1,)),
}

CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E, "oo": sp.oo}

#: Activation / reparameterisation shorthands accepted wherever an expression in ``eta`` is.
SHORTHANDS: dict[str, sp.Expr] = {
    "identity": ETA,
    "linear": ETA,
    "relu": relu(ETA),
    "heaviside": sp.Heaviside(ETA),
    "step": sp.Heaviside(ETA),
    "sigmoid": sigmoid(ETA),
    "softplus": softplus(ETA),
    "tanh": sp.tanh(ETA),
    "erf": sp.erf(ETA),
    "exp": sp.exp(ETA),
    "gelu": gelu(ETA),
    "sin": sp.sin(ETA),
    "cos": sp.cos(ETA),
    "abs": sp.Abs(ETA),
    "sign": sp.sign(ETA),
}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Builder:
    """Walks a syntax tree and builds the sympy expression, refusing anything not whitelisted."""

    def __init__(self, text: str, symbols: Mapping[str, sp.Symbol], what: str):
        self.text = text
        self.symbols = symbols
        self.what = what

    def fail(self, problem: str) -> ExpressionError:
        allowed = ", ".join(sorted(self.symbols)) or "none"
        return ExpressionError(
            f"{self.what} {self.text!r}: {problem}. Allowed symbols: {allowed}; constants: "
            f"{', '.join(CONSTANTS)}; functions: {', '.join(sorted(set(FUNCTIONS)))}; "
            "operators: + - * / ** and parentheses."
        )

    def build(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            return self.number(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.build(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return self.power(self.build(node.left), self.build(node.right))
            if type(node.op) in _BINARY:
                return _BINARY[type(node.op)](self.build(node.left), self.build(node.right))
            if isinstance(node.op, ast.BitXor):
                raise self.fail("'^' is not a power here; write '**'")
            raise self.fail(f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"{type(node).__name__} syntax is not allowed")

    def number(self, value) -> sp.Expr:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"literal {value!r} is not a real number")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail("non-finite literal")
            return sp.Rational(repr(value))  # the decimal as written, exactly
        if abs(value) >= 10**_MAX_RESULT_DIGITS:
            raise self.fail("integer literal too large")
        return sp.Integer(value)

    def name(self, ident: str) -> sp.Expr:
        if ident in self.symbols:
            return self.symbols[ident]
        if ident in CONSTANTS:
            return CONSTANTS[ident]
        if ident in FUNCTIONS:
            raise self.fail(f"function '{ident}' must be called with arguments")
        raise self.fail(f"unknown name '{ident}'")

    def power(self, base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
        if base.is_number and exponent.is_number and base.is_finite and exponent.is_finite:
            magnitude = abs(complex(sp.N(base, 15)))
            if magnitude > 1 and abs(complex(sp.N(exponent, 15))) * math.log10(magnitude) > _MAX_RESULT_DIGITS:
                raise self.fail("numeric power too large")
        return base**exponent

    def call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only plain function names may be called (no attributes or calls of calls)")
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise self.fail(f"unknown function '{fname}'")
        if node.keywords:
            raise self.fail(f"keyword arguments to '{fname}' are not allowed")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.fail(f"starred arguments to '{fname}' are not allowed")
        builder, counts = FUNCTIONS[fname]
        n = len(node.args)
        if (counts is None and n < 2) or (counts is not None and n not in counts):
            expected = "two or more" if counts is None else " or ".join(map(str, counts))
            raise self.fail(f"'{fname}' takes {expected} argument(s), got {n}")
        args = [self.build(arg) for arg in node.args]
        if fname in ("factorial", "gamma", "loggamma", "lgamma", "binomial"):
            for arg in args:
                if arg.is_number and abs(complex(sp.N(arg, 15))) > _MAX_FACTORIAL_ARGUMENT:
                    raise self.fail(f"numeric argument of '{fname}' above {_MAX_FACTORIAL_ARGUMENT}")
        return builder(*args)


def parse_expression(text: str, symbols: Mapping[str, sp.Symbol], *, what: str = "expression") -> sp.Expr:
    """Parse ``text`` into a sympy expression using only whitelisted syntax.

    ``symbols`` maps the names the text may use to the sympy symbols they stand for. Raises
    :class:`ExpressionError` naming the offending construct and listing what is allowed.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"{what}: expected a string, got {type(text).__name__} {text!r}")
    if len(text) > MAX_TEXT_LENGTH:
        raise ExpressionError(f"{what}: text longer than {MAX_TEXT_LENGTH} characters")
    if not text.strip():
        raise ExpressionError(f"{what}: empty expression")
    builder = _Builder(text, symbols, what)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise builder.fail(f"not a valid expression ({exc.msg if isinstance(exc, SyntaxError) else exc})") from None
    except (RecursionError, MemoryError):
        raise builder.fail("nested too deeply") from None
    try:
        result = builder.build(tree)
    except RecursionError:
        raise builder.fail("nested too deeply") from None
    if not isinstance(result, sp.Expr):
        raise builder.fail("does not evaluate to a scalar expression")
    if result.has(sp.zoo, sp.nan):
        raise builder.fail("is undefined (division by zero or similar)")
    return result


def as_eta_expression(spec, *, what: str = "expression") -> sp.Expr:
    """A shorthand name, an expression text in ``eta`` or a sympy expression -> sympy in :data:`ETA`.

    A sympy expression may use any symbol named ``eta`` (whatever its assumptions); it is
    replaced by :data:`ETA`. Any other free symbol is an error.
    """
    if isinstance(spec, str):
        key = spec.strip()
        if key.lower() in SHORTHANDS:
            return SHORTHANDS[key.lower()]
        return parse_expression(key, {"eta": ETA}, what=what)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return parse_expression(repr(spec), {}, what=what)
    if isinstance(spec, sp.Basic):
        expr = spec.subs({s: ETA for s in spec.free_symbols if s.name == "eta"})
        extra = expr.free_symbols - {ETA}
        if extra:
            raise ExpressionError(
                f"{what} {spec}: free symbols {sorted(map(str, extra))}; only 'eta' is allowed"
            )
        return expr
    raise ExpressionError(
        f"{what}: expected a shorthand ({', '.join(SHORTHANDS)}), an expression in eta "
        f"or a sympy expression, got {type(spec).__name__}"
    )


def _heaviside(x, h0=mpmath.mpf(1) / 2):
    if x > 0:
        return mpmath.mpf(1)
    if x < 0:
        return mpmath.mpf(0)
    return mpmath.mpf(h0)


def to_mpmath(expr: sp.Expr, *symbols: sp.Symbol) -> Callable:
    """A scalar mpmath function of ``symbols`` evaluating ``expr`` (``H(0) = 1/2``)."""
    return sp.lambdify(symbols, expr, modules=[{"Heaviside": _heaviside}, "mpmath"])


def kink_points(expr: sp.Expr, symbol: sp.Symbol = ETA) -> set:
    """Real points where ``expr`` switches formula (Heaviside, Max/Min, Abs, sign, Piecewise)."""
    arguments = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Heaviside, sp.Abs, sp.sign)):
            arguments.append(node.args[0])
        elif isinstance(node, (sp.Max, sp.Min)):
            arguments.extend(a - b for a in node.args for b in node.args if a != b)
        elif isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                for rel in cond.atoms(sp.Rel):
                    arguments.append(rel.lhs - rel.rhs)
    points = set()
    for arg in arguments:
        if not arg.has(symbol):
            continue
        try:
            roots = sp.solve(sp.Eq(arg, 0), symbol)
        except NotImplementedError:
            raise ExpressionError(f"cannot locate where {arg} changes sign; give a simpler expression") from None
        points.update(r for r in roots if r.is_real)
    return points
