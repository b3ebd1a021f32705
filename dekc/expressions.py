"""Expression text to sympy through a whitelist, never through ``eval`` or ``sympify``.

The text is read by :func:`ast.parse` (which only builds a syntax tree) and the tree is walked
node by node: numbers, the arithmetic operators ``+ - * / **``, whitelisted names and calls of
whitelisted functions with positional arguments. Anything else (attributes, subscripts, strings,
keywords, lambdas, comprehensions, unknown names) is refused with an :class:`ExpressionError`.
Limits keep a short text from demanding a huge computation: at most :data:`MAX_TEXT_LENGTH`
characters, :data:`MAX_NODES` syntax nodes and :data:`MAX_CALL_DEPTH` nested function calls; a
numeric power may not produce a number of more than ``_MAX_RESULT_DIGITS`` digits (in either
direction: ``0.5**(10**400)`` is refused like ``2**(10**400)``); ``factorial`` and ``binomial``
of numbers take whole numbers up to 1000. The result must be a real expression: non-real
constants (``asin(10)``), infinities and undefined values (``tan(-oo)``) are refused.
Derivations that start from a parsed expression run under a time budget (:mod:`dekc.budget`).

Sympy expressions passed in place of text are held to the same whitelist (:func:`check_sympy`).
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable, Mapping

import mpmath
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .errors import ExpressionError

#: The pre-activation variable of the link stage, ``η``.
ETA = sp.Symbol("eta", real=True)

MAX_TEXT_LENGTH = 2000
MAX_NODES = 400  # syntax-tree nodes of one text
MAX_CALL_DEPTH = 8  # function calls nested inside one another
_MAX_RESULT_DIGITS = 1000  # largest exact number (numerator or denominator) a numeric power may produce
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


class NormalCdf(sp.Function):
    """``Φ(x)``, kept whole (``(1 + erf(x/√2))/2`` cancels for negative ``x``); printed as ``ndtr``.

    Closed-form expectations and the link stage's float64 forms produce it (``1 + erf(x) = 2Φ(√2 x)``);
    it is not part of the text whitelist, but a sympy expression may contain it."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)

    def _eval_rewrite_as_erf(self, x, **kwargs):
        return (1 + sp.erf(x / sp.sqrt(2))) / 2


class ExpNormalCdf(sp.Function):
    """``e^k Φ(x)``, kept whole: the Gaussian expectation of ``e^{sX}`` over a half-line. Printed as
    ``exp(k + log_ndtr(x))``, finite where ``e^k`` overflows and ``Φ(x)`` underflows (``e^{5000}``
    times ``Φ(−100)``). Internal: conditional expectations produce it; not part of the text whitelist."""

    nargs = 2
    is_real = True

    def fdiff(self, argindex=1):
        k, x = self.args
        if argindex == 1:
            return self
        return sp.exp(k - x**2 / 2) / sp.sqrt(2 * sp.pi)

    def _eval_rewrite_as_erf(self, k, x, **kwargs):
        return sp.exp(k) * (1 + sp.erf(x / sp.sqrt(2))) / 2


def relu(x):
    """``max(x, 0)``."""
    return sp.Max(x, 0)


def elu(x):
    """``max(x, 0) + min(e^x − 1, 0)`` (the exponential linear unit with scale 1)."""
    return sp.Max(x, 0) + sp.Min(sp.exp(x) - 1, 0)


def _neg_li2_exp_taylor(x):
    """``−Li₂(−e^x)`` for real ``|x| < 1`` by its Taylor series at 0 (radius π), to the working
    precision: ``π²/12 + x log 2 + x²/4 + Σ_k (4^k − 1) B_2k x^(2k+1) / ((2k + 1) 2k (2k)!)`` (twice
    integrated ``σ(x) = 1/2 + Σ_k (4^k − 1) B_2k x^(2k−1)/(2k)!``). ``polylog`` near ``−1``
    converges slowly: this is 10–50 times faster there."""
    total = mpmath.pi**2 / 12 + x * mpmath.log(2) + x * x / 4
    x2, power, k = x * x, x**3, 1
    while power != 0:
        term = (4**k - 1) * mpmath.bernoulli(2 * k) * power / ((2 * k + 1) * (2 * k) * mpmath.factorial(2 * k))
        total += term
        if abs(term) <= mpmath.eps * abs(total):
            break
        k, power = k + 1, power * x2
    return total


def _neg_li2_exp_mp(x):
    """``−Li₂(−e^x)`` in mpmath: near 0 by its Taylor series; for ``x > 0`` by the inversion
    ``Li₂(−e^x) = −π²/6 − x²/2 − Li₂(−e^{−x})`` (``polylog`` of a huge argument is slow and loses
    digits)."""
    x = mpmath.mpmathify(x)
    if mpmath.im(x) != 0:
        return -mpmath.polylog(2, -mpmath.exp(x))
    if abs(x) < 1:
        return _neg_li2_exp_taylor(x)
    if x <= 0:
        return -mpmath.polylog(2, -mpmath.exp(x))
    return mpmath.pi**2 / 6 + x * x / 2 + mpmath.polylog(2, -mpmath.exp(-x))


class NegLi2Exp(sp.Function):
    """``−Li₂(−e^x) = ∫_{−∞}^x log(1 + e^t) dt``, the antiderivative of softplus (dilogarithm).

    Positive and increasing on the real line, ``≈ e^x`` as ``x → −∞`` and ``≈ x²/2 + π²/6`` as
    ``x → ∞``. Whitelisted as ``negli2exp``; mpmath evaluates it with ``polylog`` and the printer
    with a helper accurate to a few ulp (series in ``e^{−|x|}``, Taylor series near 0)."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex=1):
        return sp.log(1 + sp.exp(self.args[0]))

    @classmethod
    def eval(cls, x):
        if x is sp.S.Zero:
            return sp.pi**2 / 12
        if x is sp.S.NegativeInfinity:
            return sp.S.Zero
        if x is sp.S.Infinity:
            return sp.S.Infinity
        return None

    def _eval_rewrite_as_polylog(self, x, **kwargs):
        return -sp.polylog(2, -sp.exp(x))

    def _eval_is_positive(self):
        return True if self.args[0].is_extended_real else None

    def _eval_is_finite(self):
        return True if self.args[0].is_finite and self.args[0].is_extended_real else None

    def _eval_evalf(self, prec):
        x = self.args[0]._eval_evalf(prec)
        if x is None or not x.is_Number:
            return None
        with mpmath.workprec(prec):
            return sp.Float(_neg_li2_exp_mp(mpmath.mpf(x._to_mpmath(prec))), precision=prec)


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
    "elu": (elu, (1,)),
    "negli2exp": (NegLi2Exp, (1,)),
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
    "elu": elu(ETA),
    "silu": ETA * sigmoid(ETA),
    "swish": ETA * sigmoid(ETA),
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
        self.depth = 0

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
        if base.is_number and exponent.is_number:
            if _power_digits(base, exponent) > _MAX_RESULT_DIGITS:
                raise self.fail(
                    f"numeric power too large (its exact value would need more than {_MAX_RESULT_DIGITS} digits)"
                )
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
        self.depth += 1
        if self.depth > MAX_CALL_DEPTH:
            raise self.fail(f"functions nested more than {MAX_CALL_DEPTH} deep")
        args = [self.build(arg) for arg in node.args]
        self.depth -= 1
        if fname in ("factorial", "gamma", "loggamma", "lgamma", "binomial"):
            for arg in args:
                if arg.is_number and abs(complex(sp.N(arg, 15))) > _MAX_FACTORIAL_ARGUMENT:
                    raise self.fail(f"numeric argument of '{fname}' above {_MAX_FACTORIAL_ARGUMENT}")
                if fname in ("factorial", "binomial") and arg.is_number and not arg.is_integer:
                    raise self.fail(f"'{fname}' of a number takes a whole number; for other values write gamma(x + 1)")
        return builder(*args)


def parse_expression(
    text: str, symbols: Mapping[str, sp.Symbol], *, what: str = "expression", allow_infinite: bool = False
) -> sp.Expr:
    """Parse ``text`` into a sympy expression using only whitelisted syntax.

    ``symbols`` maps the names the text may use to the sympy symbols they stand for;
    ``allow_infinite`` admits ``oo`` in the result (the ends of an interval). Raises
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
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise builder.fail(f"more than {MAX_NODES} syntax elements; dekc derives expressions of moderate size")
    try:
        result = builder.build(tree)
    except RecursionError:
        raise builder.fail("nested too deeply") from None
    except ExpressionError:
        raise
    except (TypeError, ValueError, ArithmeticError, AttributeError, NotImplementedError) as exc:
        raise builder.fail(f"cannot be formed ({type(exc).__name__}: {_first_line(exc)})") from None
    problem = _problem(result, allow_infinite)
    if problem:
        raise builder.fail(problem)
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _power_digits(base: sp.Expr, exponent: sp.Expr) -> float:
    """An upper estimate of the digits of ``base**exponent`` as an exact number (0 when harmless)."""
    try:
        e = abs(complex(sp.N(exponent, 15)))
        if not math.isfinite(e):
            return math.inf
        if e <= 2:
            return 0.0
        if base.is_Rational:
            p, q = abs(int(base.p)), int(base.q)
            if p in (0, 1) and q == 1:
                return 0.0
            return e * (math.log10(max(p, 1)) + math.log10(q) + 1e-300)
        magnitude = abs(complex(sp.N(base, 15)))
    except (TypeError, ValueError, ArithmeticError):
        return math.inf
    if magnitude in (0.0, 1.0):
        return 0.0  # 0 to a negative power is refused later as undefined
    if not math.isfinite(magnitude):
        return math.inf
    return e * abs(math.log10(magnitude))


_UNDEFINED = (sp.zoo, sp.nan)


def _problem(expr, allow_infinite: bool) -> str:
    """Why ``expr`` cannot be used as real mathematics (an empty string when it can)."""
    if not isinstance(expr, sp.Expr):
        return "does not evaluate to a scalar expression"
    if expr.has(*_UNDEFINED) or expr.has(sp.AccumBounds):
        return "is undefined (division by zero, a limit that does not exist, or similar)"
    if expr.has(sp.I):
        return "is not real (it contains the imaginary unit)"
    if not allow_infinite and expr.has(sp.oo, -sp.oo):
        return "contains an infinite value ('oo' may only end an interval)"
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Expr) and node.is_number and not node.is_Atom and node.is_extended_real is False:
            return f"{node} is not a real number"
    return ""


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
        check_sympy(spec, what=what)
        expr = spec.subs({s: ETA for s in spec.free_symbols if s.name == "eta"})
        extra = expr.free_symbols - {ETA}
        if extra:
            raise ExpressionError(f"{what} {spec}: free symbols {sorted(map(str, extra))}; only 'eta' is allowed")
        return expr
    raise ExpressionError(
        f"{what}: expected a shorthand ({', '.join(SHORTHANDS)}), an expression in eta "
        f"or a sympy expression, got {type(spec).__name__}"
    )


#: sympy classes a sympy expression given in place of text may contain (what the parser builds)
_ALLOWED_HEADS = (
    sp.Add,
    sp.Mul,
    sp.Pow,
    sp.Symbol,
    sp.Number,
    sp.NumberSymbol,
    sp.Piecewise,
    sp.exp,
    sp.log,
    sp.sin,
    sp.cos,
    sp.tan,
    sp.sinh,
    sp.cosh,
    sp.tanh,
    sp.asin,
    sp.acos,
    sp.atan,
    sp.asinh,
    sp.atanh,
    sp.erf,
    sp.erfc,
    sp.Abs,
    sp.sign,
    sp.Heaviside,
    sp.Max,
    sp.Min,
    sp.gamma,
    sp.loggamma,
    sp.factorial,
    sp.binomial,
    NegLi2Exp,
    expm1,
    log1p,
    NormalCdf,
    sp.functions.elementary.piecewise.ExprCondPair,
    sp.core.relational.Relational,
    sp.And,
    sp.Or,
    sp.Not,
    sp.logic.boolalg.BooleanAtom,
    sp.core.numbers.ImaginaryUnit,
)


def check_sympy(expr, *, what: str = "expression", allow_infinite: bool = False) -> None:
    """Hold a sympy expression given in place of text to the parser's whitelist and limits."""
    if not isinstance(expr, sp.Expr):
        raise ExpressionError(f"{what}: expected a sympy expression, got {type(expr).__name__}")
    count = 0
    for node in sp.preorder_traversal(expr):
        count += 1
        if count > 4 * MAX_NODES:
            raise ExpressionError(f"{what} is too large: more than {4 * MAX_NODES} sympy nodes")
        if not isinstance(node, _ALLOWED_HEADS) or isinstance(node, sp.Dummy):
            raise ExpressionError(
                f"{what} {str(expr)[:200]}: {type(node).__name__} is not a whitelisted function or "
                f"symbol; allowed functions: {', '.join(sorted(set(FUNCTIONS)))}"
            )
        if (
            isinstance(node, sp.Pow)
            and node.base.is_number
            and node.exp.is_number
            and _power_digits(node.base, node.exp) > _MAX_RESULT_DIGITS
        ):
            raise ExpressionError(f"{what}: numeric power too large")
    problem = _problem(expr, allow_infinite)
    if problem:
        raise ExpressionError(f"{what} {str(expr)[:200]}: {problem}")


def parse_number(value, *, what: str = "number") -> sp.Expr:
    """A finite real constant: an int, a finite float, a sympy number or a text such as ``"1/2"``,
    ``"log(2)"`` (through the whitelist parser; never evaluated as Python)."""
    if isinstance(value, bool):
        raise ExpressionError(f"{what}: expected a real number, got {value!r}")
    if isinstance(value, int):
        return parse_expression(str(value), {}, what=what)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"{what}: expected a finite number, got {value!r}")
        return sp.Rational(repr(value))
    if isinstance(value, str):
        number = parse_expression(value, {}, what=what)
    elif isinstance(value, sp.Basic):
        check_sympy(value, what=what)
        number = value
    else:
        raise ExpressionError(f"{what}: expected a real number or a text such as '1/2', got {type(value).__name__}")
    if number.free_symbols or not number.is_number or number.is_extended_real is False or not number.is_finite:
        raise ExpressionError(f"{what}: {number} is not a finite real number")
    return number


def _heaviside(x, h0=mpmath.mpf(1) / 2):
    if x > 0:
        return mpmath.mpf(1)
    if x < 0:
        return mpmath.mpf(0)
    return mpmath.mpf(h0)


def _dirac(x, *derivative):
    return mpmath.inf if x == 0 else mpmath.mpf(0)


def _with_log1p(expr):
    """``log(1 + x)`` as ``log1p(x)``: ``log(1 + e^{−10⁴})`` is ``e^{−10⁴}``, not 0, at any precision."""
    if not isinstance(expr, sp.Basic):
        return expr
    return expr.replace(
        lambda e: isinstance(e, sp.log) and e.args[0].is_Add and sp.S.One in e.args[0].args,
        lambda e: log1p(e.args[0] - 1),
    )


@functools.lru_cache(maxsize=256)
def to_mpmath(expr: sp.Expr, *symbols: sp.Symbol) -> Callable:
    """A scalar mpmath function of ``symbols`` evaluating ``expr`` (``H(0) = 1/2``; ``δ`` is 0 off
    the origin; ``log(1 + x)`` by ``log1p``). Remembered per expression: a compile asks for the
    same few functions dozens of times (the functions are pure)."""
    try:
        return sp.lambdify(
            symbols,
            _with_log1p(expr),
            modules=[
                {
                    "Heaviside": _heaviside,
                    "DiracDelta": _dirac,
                    "NegLi2Exp": _neg_li2_exp_mp,
                    "NormalCdf": mpmath.ncdf,
                    "ExpNormalCdf": lambda k, x: mpmath.exp(k) * mpmath.ncdf(x),
                },
                "mpmath",
            ],
        )
    except (TypeError, ValueError, NameError, SyntaxError, RecursionError) as exc:
        raise ExpressionError(
            f"cannot evaluate {str(expr)[:200]} numerically ({type(exc).__name__}); "
            "give a simpler equivalent expression"
        ) from None


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
    points: set = set()
    for arg in arguments:
        if not arg.has(symbol):
            continue
        try:
            roots = sp.solve(sp.Eq(arg, 0), symbol)
        except NotImplementedError:
            raise ExpressionError(f"cannot locate where {arg} changes sign; give a simpler expression") from None
        points.update(r for r in roots if r.is_real)
    return points
