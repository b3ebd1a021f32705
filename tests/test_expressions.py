"""The whitelist parser: right expressions for allowed text, typed refusals for everything else."""

import pytest
import sympy as sp

from dekc.errors import ExpressionError
from dekc.expressions import ETA, SHORTHANDS, as_eta_expression, parse_expression

THETA = sp.Symbol("theta", real=True)
N = sp.Symbol("n", real=True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("theta**2/2", THETA**2 / 2),
        ("n*log(1 + exp(theta))", N * sp.log(1 + sp.exp(THETA))),
        ("-sqrt(-2*theta)", -sp.sqrt(-2 * THETA)),
        ("0.5*theta", THETA / 2),
        ("Max(theta, 0) + abs(theta)", sp.Max(THETA, 0) + sp.Abs(THETA)),
        ("exp(-theta**2) * pi", sp.pi * sp.exp(-(THETA**2))),
    ],
)
def test_allowed_text_builds_the_expression(text, expected):
    assert sp.simplify(parse_expression(text, {"theta": THETA, "n": N}) - expected) == 0


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("__import__('os').system('true')", "only plain function names"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "Attribute"),
        ("theta.real", "Attribute"),
        ("open('x')", "unknown function 'open'"),
        ("lambda: 1", "Lambda"),
        ("[theta]", "List"),
        ("'theta'", "not a real number"),
        ("theta if theta else 1", "IfExp"),
        ("exp(theta, theta)", "'exp' takes 1"),
        ("exp(x=theta)", "keyword arguments"),
        ("theta ^ 2", "write '**'"),
        ("9**9**9", "numeric power too large"),
        ("factorial(100000)", "above 1000"),
        ("exp(*theta)", "starred"),
        ("y", "unknown name 'y'"),
        ("exp", "must be called"),
        ("theta +", "not a valid expression"),
        ("(" * 300 + "theta" + ")" * 300, "theta"),
        ("1/0", "undefined"),
        ("", "empty"),
        ("theta" + " + theta" * 400, "longer than"),
    ],
)
def test_everything_else_is_refused(text, complaint):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, {"theta": THETA})
    assert complaint in str(info.value)


def test_refused_text_never_runs(tmp_path):
    sentinel = tmp_path / "ran"
    attack = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    with pytest.raises(ExpressionError):
        parse_expression(attack, {"theta": THETA})
    assert not sentinel.exists()


def test_shorthands_are_expressions_in_eta():
    for name, expr in SHORTHANDS.items():
        assert as_eta_expression(name) == expr
        assert expr.free_symbols <= {ETA}


def test_sympy_input_is_rebased_on_eta_and_checked():
    plain_eta = sp.Symbol("eta")
    assert as_eta_expression(sp.tanh(plain_eta)) == sp.tanh(ETA)
    with pytest.raises(ExpressionError, match="only 'eta'"):
        as_eta_expression(sp.Symbol("x") + 1)
