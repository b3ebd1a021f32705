"""verify(): a compiled kernel agrees with the independent mpmath reference, and a wrong one does not.

The fast tests use 16 digits, the 1-D edge cases and one fixed point (the 2-D reference integrals
cost seconds each); the slow ones run the defaults at 30 digits, on closed-form and
quadrature-backed kernels.
"""

import dataclasses
import math
import types
import warnings

import numpy as np
import pytest

import dekc
from dekc import compile_kernel
from dekc.verification import PAIRS, VerifyError, verify

GENERATED = [f"K_{f}_{g}{suffix}" for f, g in PAIRS for suffix in ("", "_dc", "_one_point")]


@pytest.fixture(scope="module")
def relu_kernel():
    return compile_kernel("gaussian", reparam="relu")


def _quiet_compile(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dekc.DekcWarning)
        return compile_kernel(*args, **kwargs)


def _tampered(ker, name=None, factor=1.0, from_moments=None):
    """A stand-in kernel whose generated function ``name`` is off by ``factor`` (on a copy of the
    module: the cached one stays intact), or whose ``from_moments`` is replaced."""
    module = types.SimpleNamespace(**vars(ker.module))
    if name is not None:
        original = getattr(ker.module, name)
        setattr(module, name, lambda *args: original(*args) * factor)
    return types.SimpleNamespace(
        module=module,
        family=ker.family,
        sigma=ker.sigma,
        rho=ker.rho,
        methods=ker.methods,
        error_bounds=ker.error_bounds,
        from_moments=from_moments or ker.from_moments,
    )


def _assert_table(report):
    lines = str(report).splitlines()
    assert lines[0].split()[:4] == ["item", "case", "arguments", "value"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == len(report.items) + 3  # header, rule, one row per item, summary
    column = lines[0].index("value")
    for line, item in zip(lines[2:-1], report.items):
        assert line.startswith(item.name) and line[column - 2 : column] == "  " and line[column] != " "
    assert lines[-1] == report.summary()


def test_gaussian_relu_agrees_with_the_reference(relu_kernel):
    """Every generated function (pair, d/dc and one-point forms of the three pairs) and the fixed
    points of a nearly collinear pair agree with mpmath to well within 1e-12."""
    report = verify(relu_kernel, dps=16, points=0, fixed_points=1)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-13
    names = {item.name for item in report.items}
    assert set(GENERATED) <= names
    assert {"fixed_point[0,0]", "fixed_point[1,1]", "fixed_point[0,1]"} <= names
    assert {"c = +sqrt(ab)", "c = -sqrt(ab)", "c = 0", "a = 0"} <= {item.case for item in report.items}
    fixed = next(item for item in report.items if item.name == "fixed_point[0,1]")
    assert "bracketed" in fixed.note and fixed.tolerance >= 1e-11
    _assert_table(report)
    assert "all within tolerance" in report.summary() and "16 digits" in report.summary()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.ok = False


@pytest.mark.parametrize("name", ["K_rho_rho", "K_sigma_rho_one_point"])
def test_a_wrong_expectation_is_caught_and_named(relu_kernel, name):
    report = verify(_tampered(relu_kernel, name, 1 + 1e-9), dps=16, points=0, fixed_points=0)
    assert not report.ok
    assert {item.name for item in report.failures} == {name}
    assert name in report.summary() and "FAIL" in str(report)
    assert all(1e-12 < item.rel_error < 1e-8 for item in report.failures)  # the size of the error is reported


def test_the_edge_cases_alone_take_seconds(relu_kernel):
    report = verify(relu_kernel, dps=16, points=0, fixed_points=0)
    assert report.ok and report.seconds < 30
    assert all(item.name in GENERATED for item in report.items)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dps": 10}, "dps must be"),
        ({"points": [(1.0, 1.0, 2.0)]}, "not a covariance"),
        ({"points": -1}, "points must be"),
        ({"fixed_points": 1.5}, "fixed_points must be"),
        ({"lam": 0.0}, "lam must be"),
        ({"workers": 0}, "workers must be"),
    ],
)
def test_bad_arguments_are_refused(relu_kernel, kwargs, message):
    with pytest.raises(VerifyError, match=message):
        verify(relu_kernel, **kwargs)


@pytest.mark.slow
def test_a_wrong_fixed_point_is_caught(relu_kernel):
    def from_moments(c, mu, **kwargs):
        K = np.array(relu_kernel.from_moments(c, mu, **kwargs))
        K[0, 1] = K[1, 0] = K[0, 1] * (1 + 1e-9)
        return K

    report = verify(_tampered(relu_kernel, from_moments=from_moments), dps=16, points=0, fixed_points=1)
    assert {item.name for item in report.failures} == {"fixed_point[0,1]"}, str(report)


@pytest.mark.slow
def test_given_points_use_price_where_derivatives_are_functions(relu_kernel):
    report = verify(relu_kernel, dps=20, points=[(1.3, 0.7, -0.4)], fixed_points=0)
    assert report.ok, str(report)
    notes = {item.name: item.note for item in report.items if item.name.endswith("_dc")}
    assert notes == {"K_sigma_sigma_dc": "Price", "K_sigma_rho_dc": "difference", "K_rho_rho_dc": "difference"}


@pytest.mark.slow
def test_gaussian_relu_defaults_at_30_digits(relu_kernel):
    report = verify(relu_kernel)
    assert report.ok, str(report)
    assert report.dps == 30 and report.max_rel_error < 1e-12
    assert {"fixed_point[0,1]", "fixed_point[0,2]"} <= {item.name for item in report.items}


QUADRATURE_KERNELS = [("gaussian", {"reparam": "tanh"}), ("bernoulli", {"activation": "sigmoid"})]


@pytest.mark.slow
@pytest.mark.parametrize("family, route", QUADRATURE_KERNELS, ids=lambda v: str(v))
def test_quadrature_kernels_agree_with_the_reference(family, route):
    """Quadrature-backed expectations are within 10x their own error estimate, and so are the
    fixed points built from them."""
    ker = _quiet_compile(family, **route)
    assert "quadrature" in ker.methods.values()
    report = verify(ker, dps=30, points=[(1.3, 0.7, -0.4), (2.0, 0.5, 1.0)], fixed_points=1)
    assert report.ok, str(report)
    for item in report.items:
        pair = next((f"{f},{g}" for f, g in PAIRS if item.name.startswith(f"K_{f}_{g}")), None)
        if pair is not None and ker.methods[pair] == "quadrature":
            assert item.tolerance == max(10 * ker.error_bounds[pair], 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("family, route", QUADRATURE_KERNELS, ids=lambda v: str(v))
def test_quadrature_kernels_at_extreme_scales(family, route):
    """The edge cases (c = ±sqrt(ab), c = 0, a = 0, a = 1e-4 against b = 1e4, one-point forms at
    1e-4 and 1e4) against the reference."""
    report = verify(_quiet_compile(family, **route), dps=20, points=0, fixed_points=0)
    assert report.ok, str(report)


@pytest.mark.slow
def test_values_beyond_float64_are_exact_as_inf():
    """poisson + softplus has σ = e^η: E[σ(u) σ(v)] at a = b = 1e4 is e^{2e4}, beyond float64. The
    kernel returns inf there, which is that value's float64 rounding; everything else is checked."""
    report = verify(_quiet_compile("poisson", reparam="softplus"), dps=20, points=0, fixed_points=0)
    assert report.ok, str(report)
    beyond = [item for item in report.items if "beyond the float64 range" in item.note]
    assert beyond and all(item.value == math.inf and item.reference > 1e308 for item in beyond)
