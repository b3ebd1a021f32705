"""Deep NNGP and NTK baselines: closed forms written out here in numpy, exact polynomial cases, the
mpmath reference, identical inputs, blocks, gradients and argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dekc
from dekc import reference
from dekc.baselines import NNGP, NTK, nngp, ntk
from dekc.errors import InputError

RNG = np.random.default_rng(11)
X = RNG.normal(size=(6, 3))
X[4] = X[1]  # a duplicated row
Y = RNG.normal(size=(4, 3))
Y[2] = X[3]  # a row shared with X

SETTINGS = [(1.0, 1.0, 0.0), (2.0, 0.5, 0.7), (1.3, 2.0, -1.0)]  # (weight_variance, input_scale, bias)


def augment(X, input_scale=1.0, bias=0.0):
    return np.c_[input_scale * X, np.full(len(X), bias)]


def inputs(X, Y, input_scale, bias):
    """Σ⁰ diagonals and cross products, and which pairs of rows are identical."""
    xt, yt = augment(X, input_scale, bias), augment(Y, input_scale, bias)
    same = np.all(xt[:, None, :] == yt[None, :, :], axis=2)
    return np.sum(xt**2, axis=1), np.sum(yt**2, axis=1), xt @ yt.T, same


def relu_recursion(X, Y, depth, w=1.0, input_scale=1.0, bias=0.0):
    """(NNGP, NTK) of a ReLU network from the arc-cosine kernels of Cho & Saul, in numpy:
    E[relu(u) relu(v)] = √(ab)(sin θ + (π − θ) cos θ)/(2π), E[H(u) H(v)] = (π − θ)/(2π), cos θ = c/√(ab)."""
    sx, sy, s, same = inputs(X, Y, input_scale, bias)
    t = s
    for _ in range(depth):
        sab = np.sqrt(np.outer(sx, sy))
        theta = np.where(same, 0.0, np.arccos(np.clip(s / sab, -1, 1)))  # identical inputs: θ = 0 exactly
        k1 = sab * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
        k0 = (np.pi - theta) / (2 * np.pi)
        s, t = w * k1, w * k1 + w * k0 * t
        sx, sy = w * sx / 2, w * sy / 2
    return s, t


def erf_depth1(X, Y, w=1.0, input_scale=1.0, bias=0.0):
    """(NNGP, NTK) of one erf layer: Williams' arcsine kernel (2/π) asin(2c/√((1+2a)(1+2b))) and
    E[erf'(u) erf'(v)] = (4/π)/√((1+2a)(1+2b) − 4c²)."""
    a, b, c, _ = inputs(X, Y, input_scale, bias)
    q = np.outer(1 + 2 * a, 1 + 2 * b)
    sigma = w * 2 / np.pi * np.arcsin(2 * c / np.sqrt(q))
    return sigma, sigma + w * 4 / np.pi / np.sqrt(q - 4 * c**2) * c


def assert_close(K, expected, tol):
    """Square Gram matrices, errors relative to the Cauchy–Schwarz scale √(K(x, x) K(x', x')) of each entry."""
    d = np.diagonal(expected)
    assert np.all(np.isfinite(K))
    assert np.max(np.abs(K - expected) / np.sqrt(np.outer(d, d))) <= tol


# -- against formulas ------------------------------------------------------------------------------


@pytest.mark.parametrize("w, input_scale, bias", SETTINGS)
def test_relu_nngp_depth1_is_the_arc_cosine_kernel(w, input_scale, bias):
    expected = relu_recursion(X, X, 1, w, input_scale, bias)[0]
    assert_close(nngp("relu", 1, weight_variance=w)(X, input_scale=input_scale, bias=bias), expected, 1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("w, input_scale, bias", SETTINGS)
def test_relu_ntk_follows_the_arc_cosine_recursion(depth, w, input_scale, bias):
    expected_nngp, expected_ntk = relu_recursion(X, X, depth, w, input_scale, bias)
    assert_close(ntk("relu", depth, weight_variance=w)(X, input_scale=input_scale, bias=bias), expected_ntk, 1e-12)
    assert_close(nngp("relu", depth, weight_variance=w)(X, input_scale=input_scale, bias=bias), expected_nngp, 1e-12)


def test_relu_cross_gram_follows_the_recursion():
    expected_nngp, expected_ntk = relu_recursion(X, Y, 2, 1.5, 0.8, 0.3)
    np.testing.assert_allclose(
        nngp("relu", 2, weight_variance=1.5)(X, Y, input_scale=0.8, bias=0.3), expected_nngp, rtol=1e-12
    )
    np.testing.assert_allclose(
        ntk("relu", 2, weight_variance=1.5)(X, Y, input_scale=0.8, bias=0.3), expected_ntk, rtol=1e-12
    )


@pytest.mark.parametrize("w, input_scale, bias", SETTINGS)
def test_erf_depth1_is_williams_arcsine_kernel(w, input_scale, bias):
    expected_nngp, expected_ntk = erf_depth1(X, X, w, input_scale, bias)
    assert_close(nngp("erf", 1, weight_variance=w)(X, input_scale=input_scale, bias=bias), expected_nngp, 1e-12)
    assert_close(ntk("erf", 1, weight_variance=w)(X, input_scale=input_scale, bias=bias), expected_ntk, 1e-12)


@pytest.mark.parametrize("depth", [1, 3])
def test_linear_network_kernels_are_multiples_of_the_input_kernel(depth):
    """σ = id: Σ^L = w^L Σ⁰ and, since E[σ'σ'] = 1, Θ^L = (L + 1) w^L Σ⁰."""
    w = 0.7
    _, _, sigma0, _ = inputs(X, Y, 1.5, -0.4)
    K = nngp("identity", depth, weight_variance=w)(X, Y, input_scale=1.5, bias=-0.4)
    np.testing.assert_allclose(K, w**depth * sigma0, rtol=1e-13, atol=1e-15)
    K = ntk("identity", depth, weight_variance=w)(X, Y, input_scale=1.5, bias=-0.4)
    np.testing.assert_allclose(K, (depth + 1) * w**depth * sigma0, rtol=1e-13, atol=1e-15)


def test_relu_diagonal_halves_each_layer():
    """E[relu(u)²] = a/2 and E[H(u)²] = 1/2: Σ^L(x, x) = (w/2)^L ‖x̃‖², Θ^L(x, x) = (L + 1)(w/2)^L ‖x̃‖²."""
    w, depth = 1.7, 3
    norms = inputs(X, X, 0.6, 0.9)[0]
    np.testing.assert_allclose(
        np.diagonal(nngp("relu", depth, weight_variance=w)(X, input_scale=0.6, bias=0.9)),
        (w / 2) ** depth * norms,
        rtol=1e-14,
    )
    np.testing.assert_allclose(
        np.diagonal(ntk("relu", depth, weight_variance=w)(X, input_scale=0.6, bias=0.9)),
        (depth + 1) * (w / 2) ** depth * norms,
        rtol=1e-14,
    )


def test_zero_input_has_zero_relu_kernel():
    """x̃ = 0 makes every pre-activation 0 and relu(0) = 0: its row and column vanish (to the
    engine's floor: a variance of 0 is evaluated at 1e-300)."""
    Z = np.vstack([np.zeros(3), X[:3]])
    for K in (nngp("relu", 2)(Z), ntk("relu", 2)(Z)):
        assert np.all(np.isfinite(K))
        assert np.max(np.abs(K[0])) <= 1e-140 and np.max(np.abs(K[:, 0])) <= 1e-140
        assert np.min(np.diagonal(K)[1:]) > 0.1


@pytest.mark.slow
def test_tanh_depth1_matches_the_reference():
    """tanh has no closed form (quadrature); compare with the mpmath reference at 20 digits."""
    w, input_scale, bias = 1.4, 0.9, 0.5
    Xs = X[:3]
    K = nngp("tanh", 1, weight_variance=w)(Xs, input_scale=input_scale, bias=bias)
    a, _, c, _ = inputs(Xs, Xs, input_scale, bias)
    diagonal = [w * float(reference.one_point("tanh", "tanh", a[i], dps=20)) for i in range(3)]
    np.testing.assert_allclose(np.diagonal(K), diagonal, rtol=1e-9)
    for i, j in [(0, 1), (1, 2)]:
        expected = w * float(reference.expectation("tanh", "tanh", a[i], a[j], c[i, j], dps=20))
        assert abs(K[i, j] - expected) <= 1e-9 * np.sqrt(diagonal[i] * diagonal[j]), (i, j)


# -- structure -------------------------------------------------------------------------------------

KERNELS = [("relu", ntk, 2), ("relu", nngp, 3), ("erf", ntk, 2)]


@pytest.mark.parametrize("activation, build, depth", KERNELS)
def test_identical_inputs_symmetry_and_blocks(activation, build, depth):
    K = build(activation, depth, weight_variance=1.3)
    G = K(X, input_scale=1.2, bias=0.4)
    assert np.array_equal(G, G.T)
    assert G[1, 4] == G[1, 1] == G[4, 4]  # the duplicated row gets exactly the diagonal value
    C = K(X, Y, input_scale=1.2, bias=0.4)
    assert C.shape == (6, 4) and C[3, 2] == G[3, 3]  # a row shared by X and Y
    stacked = K(np.vstack([X, Y]), input_scale=1.2, bias=0.4)
    np.testing.assert_allclose(C, stacked[:6, 6:], rtol=1e-13, atol=0)
    np.testing.assert_allclose(G, stacked[:6, :6], rtol=1e-13, atol=0)
    assert isinstance(G, np.ndarray) and G.dtype == np.float64


def test_repr_and_attributes():
    K = ntk("relu", 2, weight_variance=2.0)
    assert isinstance(K, NTK) and isinstance(nngp("erf", 1), NNGP)
    assert str(K.activation) == "Max(0, eta)" and str(K.derivative) == "Heaviside(eta)" and K.depth == 2
    assert K.methods == {"sigma,sigma": "closed-form", "dsigma,dsigma": "closed-form"}
    assert repr(K) == "NTK(activation=Max(0, eta), depth=2, weight_variance=2.0)"


# -- gradients and jit -----------------------------------------------------------------------------


@pytest.mark.parametrize("activation, build, depth", KERNELS)
def test_gradients_match_central_differences(activation, build, depth):
    K = build(activation, depth)
    weights = RNG.normal(size=(6, 6))

    def loss(input_scale, bias):
        return jnp.sum(K(X, input_scale=input_scale, bias=bias) * weights)

    s, b, h = 1.3, 0.4, 1e-5
    grad = jax.grad(loss, argnums=(0, 1))(s, b)
    numeric = ((loss(s + h, b) - loss(s - h, b)) / (2 * h), (loss(s, b + h) - loss(s, b - h)) / (2 * h))
    for g, n in zip(grad, numeric):
        assert np.isfinite(g)
        assert abs(g - n) <= 1e-6 * abs(n)
    assert abs(jax.jit(loss)(s, b) - loss(s, b)) <= 1e-13 * abs(loss(s, b))


def test_jit_of_a_cross_gram_matches_eager():
    K = ntk("relu", 2)
    traced = jax.jit(lambda X, Y, s: K(X, Y, input_scale=s, bias=0.3))(X, Y, 0.8)
    assert isinstance(traced, jax.Array)
    np.testing.assert_allclose(np.asarray(traced), K(X, Y, input_scale=0.8, bias=0.3), rtol=1e-13, atol=0)


def test_a_plain_call_runs_compiled_and_matches_jit():
    """A plain call runs the computation as one compiled program (as fast as under jit): same values."""
    for K in (nngp("relu", 1), ntk("erf", 2)):
        plain = K(X, bias=0.3)
        assert isinstance(plain, np.ndarray) and plain.dtype == np.float64
        np.testing.assert_allclose(plain, np.asarray(jax.jit(lambda X, K=K: K(X, bias=0.3))(X)), rtol=1e-14, atol=0)
        np.testing.assert_array_equal(plain, plain.T)


# -- argument errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "2"])
def test_depth_must_be_a_positive_integer(depth):
    with pytest.raises(InputError, match="depth must be a positive integer"):
        nngp("relu", depth)


@pytest.mark.parametrize("w", [0, -1.0, float("nan"), float("inf"), "x", [1.0]])
def test_weight_variance_must_be_positive(w):
    with pytest.raises(InputError, match="weight_variance must be a positive finite number"):
        ntk("relu", 1, weight_variance=w)


def test_ntk_refuses_a_discontinuous_activation():
    with pytest.raises(InputError, match="Dirac delta"):
        ntk("heaviside", 1)
    assert np.all(np.isfinite(nngp("heaviside", 1)(X)))  # its NNGP is finite


def test_unknown_activation_is_an_expression_error():
    with pytest.raises(dekc.ExpressionError):
        nngp("eta + unknown", 1)


@pytest.mark.parametrize(
    "bad, Ybad, match",
    [
        (np.zeros((2, 2, 2)), None, "X must be a non-empty"),
        (np.zeros((0, 3)), None, "X must be a non-empty"),
        (np.array([[1.0, np.nan]]), None, "X contains NaN"),
        (X, np.array([[np.inf, 0.0, 1.0]]), "Y contains NaN"),
        (X, np.zeros((2, 2)), "X has 3 columns and Y has 2"),
    ],
)
def test_bad_inputs_raise(bad, Ybad, match):
    with pytest.raises(InputError, match=match):
        nngp("relu", 1)(bad, Ybad)


@pytest.mark.parametrize("option", ["input_scale", "bias"])
@pytest.mark.parametrize("value", [float("nan"), np.ones(2), "1"])
def test_bad_scale_or_bias_raises(option, value):
    with pytest.raises(InputError, match=f"{option} must be a finite real number"):
        nngp("relu", 1)(X, **{option: value})
