"""The node-count probes run the quadrature rules on the host (numpy around compiled integrands):
they must give the generated JAX rules' values, at every node count, to rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dekc
from dekc import codegen, quadrature
from dekc.expressions import as_eta_expression
from dekc.probes import HostRule
from dekc.quadrature import PROBES

# every fourth probe covariance: each variance pair and each correlation (|ρ| = 1 included) appears
A, B, C = (np.asarray(col) for col in zip(*PROBES[::4]))
VARIANCES = np.array([1e-4, 1e-2, 1.0, 1e2, 1e4])


def _generated(plan, n):
    """The generated rule and one-point form with ``n`` nodes per piece (``P``), and the one-point
    forms of ``(f, f)`` and ``(g, g)``, i.e. ``E f²`` and ``E g²`` (``F``, ``G``)."""
    source = "\n\n".join(
        [
            codegen.quadrature_functions(plan, "P", n),
            codegen.quadrature_functions(quadrature.plan(plan.f, plan.f), "F", n),
            codegen.quadrature_functions(quadrature.plan(plan.g, plan.g), "G", n),
        ]
    )
    return codegen.load_module(
        codegen.expectation_module(source, quadrature=True), f"test_probes_{codegen.text_digest(source)[:16]}"
    )


def _link_rho(family, **route):
    return dekc.link(family, **route).rho


PAIRS = {
    "2-D, smooth": ("tanh", "sigmoid"),
    "2-D, kinks on both axes": ("abs(eta - 0.5)*tanh(eta)", "heaviside(eta + 1)*sin(eta)"),
    "1-D reduction": ("sin", "relu"),
    "2-D, link-derived Piecewise rho": ("tanh", None),
}


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("n", [24])
def test_host_rules_equal_the_generated_rules(name, n):
    f, g = PAIRS[name]
    f = as_eta_expression(f, what="f")
    g = _link_rho("gaussian", activation="tanh") if g is None else as_eta_expression(g, what="g")
    plan = quadrature.plan(f, g)
    assert plan.dimension == (1 if name == "1-D reduction" else 2)
    module = _generated(plan, n)
    host = HostRule(plan)
    # and a = 0
    a, b, c = np.append(A, 0.0), np.append(B, 2.0), np.append(C, 0.0)
    want = np.asarray(jax.jit(module._P_rule)(jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)))
    got = host.pair(n, a, b, c)
    sq_f, sq_g = host.second_moments(a, b)
    scale = np.sqrt(np.maximum(sq_f * sq_g, 1e-300))
    assert np.max(np.abs(got - want) / scale) < 1e-14
    want_f, want_g = (
        np.asarray(jax.jit(fn)(jnp.asarray(VARIANCES))) for fn in (module.F_one_point, module.G_one_point)
    )
    np.testing.assert_allclose(host.second_moments(VARIANCES, VARIANCES, n=n), (want_f, want_g), rtol=1e-13)
    one_point = np.asarray(jax.jit(module.P_one_point)(jnp.asarray(VARIANCES)))
    scale_1 = np.sqrt(want_f * want_g)
    assert np.max(np.abs(host.one_point(n, VARIANCES) - one_point) / scale_1) < 1e-14


def test_integrands_are_evaluated_in_fixed_chunks():
    """Arrays longer than one chunk, and shorter, give the elementwise values."""
    from dekc import probes

    host = HostRule(quadrature.plan(as_eta_expression("tanh", what="f"), as_eta_expression("sin", what="g")))
    x = np.linspace(-30, 30, probes.CHUNK + 123)
    np.testing.assert_allclose(host.f(x), np.tanh(x), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(host.g(x[:5]), np.sin(x[:5]), rtol=1e-15)
