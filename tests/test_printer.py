"""The printer's arcsine helpers against mpmath: coefficients, accuracy and gradients."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from dekc import printer


@pytest.fixture(scope="module")
def helpers():
    namespace = {"jnp": jnp}
    exec(printer.ARC_HELPERS, namespace)
    return jax.jit(namespace["_asin"]), jax.jit(namespace["_acos"]), namespace


def test_coefficients_are_what_the_precompute_script_gives():
    """tools/precompute_arcsine.py recomputes the 13 coefficients (interpolation of
    (asin(√t)/√t − 1)/t at Chebyshev nodes of [0, 1/4], 50 digits) and the splits of π/2 and π:
    the printer holds exactly those."""
    script = Path(__file__).resolve().parent.parent / "tools" / "precompute_arcsine.py"
    spec = importlib.util.spec_from_file_location("precompute_arcsine", script)
    precompute = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(precompute)
    values = precompute.constants()
    assert values["_ASIN_P"] == printer._ASIN_P
    assert values["_ASIN_P"][0] == pytest.approx(1 / 6, rel=1e-15)  # the series' first term
    assert values["_HALF_PI"] == printer._HALF_PI and values["_PI"] == printer._PI
    with mpmath.workdps(50):
        assert printer._HALF_PI[0] + printer._HALF_PI[1] == float(mpmath.pi / 2)
        assert abs(mpmath.mpf(printer._PI[0]) + mpmath.mpf(printer._PI[1]) - mpmath.pi) < 1e-32


def _points():
    rng = np.random.default_rng(0)
    near_one = 1 - np.logspace(-16, -1, 200)
    return np.concatenate(
        [
            rng.uniform(-1, 1, 4000),
            near_one,
            -near_one,
            np.logspace(-300, 0, 200),
            -np.logspace(-300, 0, 200),
            np.nextafter(0.5, [0.0, 1.0]),
            [0.5, -0.5, 0.0, 1.0, -1.0],
        ]
    )


def test_asin_and_acos_are_within_two_ulp(helpers):
    asin, acos, _ = helpers
    x = _points()
    for fn, exact in ((asin, mpmath.asin), (acos, mpmath.acos)):
        ours = np.asarray(fn(jnp.asarray(x)))
        with mpmath.workdps(40):
            ref = np.array([float(exact(mpmath.mpf(v))) for v in x])
        ulps = np.abs(ours - ref) / np.spacing(np.abs(ref))
        assert np.max(ulps[ref != 0]) <= 2.0, fn
        assert np.all(ours[ref == 0] == 0)


def test_arguments_past_one_are_clipped(helpers):
    asin, acos, _ = helpers
    assert float(asin(1.0 + 1e-12)) == float(np.pi / 2)
    assert float(asin(-1.0 - 1e-12)) == float(-np.pi / 2)
    assert float(acos(1.0 + 1e-12)) == 0.0
    assert float(acos(-1.0 - 1e-12)) == float(np.pi)


@pytest.mark.parametrize("x", [0.0, 1e-200, 0.3, -0.45, 0.5, 0.7, -0.93, 1 - 1e-9])
def test_gradients_are_the_exact_derivatives(helpers, x):
    _, _, namespace = helpers
    exact = 1 / np.sqrt(1 - x * x)
    assert float(jax.grad(namespace["_asin"])(x)) == pytest.approx(exact, rel=1e-6 if x > 0.99 else 1e-14)
    assert float(jax.grad(namespace["_acos"])(x)) == pytest.approx(-exact, rel=1e-6 if x > 0.99 else 1e-14)


def test_generated_modules_use_the_helpers():
    import sympy as sp

    from dekc.codegen import closed_form_functions
    from dekc.gaussian import RHO, ClosedForm

    source = closed_form_functions("K", ClosedForm(sp.asin(RHO) + sp.acos(RHO), sp.Integer(0)))
    assert "_asin(" in source and "_acos(" in source and "jnp.arcsin" not in source


def test_a_guarded_branch_variable_is_computed_once():
    """Each Piecewise branch's guarded variable is one local (a long polynomial branch would
    otherwise repeat its guard at every occurrence); values and gradients are unchanged."""
    import sympy as sp

    from dekc import codegen
    from dekc.expressions import ETA

    x = ETA
    poly = sum((k + 1) * x**k for k in range(12))
    expr = sp.Piecewise((sp.sqrt(x) * poly, x > 0), (x**2 * poly, True))
    source = codegen.elementwise_source("fn", expr, "f")
    assert source.count("jnp.where(((x > 0.0)), x,") <= 1 and source.count("_g0 = ") == 1
    assert source.count("jnp.where(") <= 3  # two guards and the branch choice
    module = codegen.load_module(codegen.expectation_module(source, quadrature=False), "test_printer_guard_once")
    points = np.array([-2.0, -0.3, 0.0, 0.4, 3.0])
    p = np.polynomial.polynomial.polyval(points, np.arange(1, 13))
    want = np.where(points > 0, np.sqrt(np.abs(points)) * p, points**2 * p)
    np.testing.assert_allclose(np.asarray(module.fn(jnp.asarray(points))), want, rtol=1e-14)
    grad = jax.grad(lambda t: module.fn(t))(0.0)
    assert np.isfinite(grad) and grad == 0.0  # the square-root branch is not evaluated at 0
