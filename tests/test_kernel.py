"""The DEKer runtime: exact cases, fixed-point equations, T-step limits, identical inputs, gradients."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dekc
from dekc.errors import InputError

RNG = np.random.default_rng(7)
X = RNG.normal(size=(7, 3))
X[5] = X[1]  # a duplicated row


def augment(X, input_scale=1.0, bias=0.0):
    return np.c_[input_scale * X, np.full(len(X), bias)]


def relu_moments(X, s=1.0, input_scale=1.0, bias=0.0, Y=None):
    """Order-1 arc-cosine kernel and ReLU mean of x̃ (Cho & Saul), computed here in numpy."""
    xt = augment(X, input_scale, bias)
    yt = xt if Y is None else augment(Y, input_scale, bias)
    nx, ny = np.linalg.norm(xt, axis=1), np.linalg.norm(yt, axis=1)
    rho = np.clip(xt @ yt.T / np.outer(nx, ny), -1, 1)
    theta = np.arccos(rho)
    c = s**2 * np.outer(nx, ny) * (np.sqrt(1 - rho**2) + (np.pi - theta) * rho) / (2 * np.pi)
    return c, s * nx / np.sqrt(2 * np.pi), s * ny / np.sqrt(2 * np.pi)


def relu_update(P, a, b, c, mx, my, lam):
    """G(P) for gaussian + relu written out from the order-0/1 arc-cosine kernels (independent of dekc)."""
    sab = np.sqrt(np.outer(a, b))
    rho = np.clip(P / sab, -1, 1)
    theta = np.arccos(rho)
    k11 = sab * (np.sqrt(1 - rho**2) + (np.pi - theta) * rho) / (2 * np.pi)
    k10 = np.sqrt(a)[:, None] * (1 + rho) / (2 * np.sqrt(2 * np.pi))
    k01 = np.sqrt(b)[None, :] * (1 + rho) / (2 * np.sqrt(2 * np.pi))
    k00 = (np.pi - theta) / (2 * np.pi)
    return (k11 - my[None, :] * k10 - mx[:, None] * k01 + c * k00) / lam**2


@pytest.fixture(scope="module")
def relu_kernel():
    return dekc.compile_kernel("gaussian", reparam="relu")


@pytest.fixture(scope="module")
def identity_kernel():
    return dekc.compile_kernel("gaussian", reparam="identity")


# -- exact cases (SPEC §1) -------------------------------------------------------------------------


def feature_kernel(features, xt):
    """Published closed forms of s⁻²c for a few feature maps (Cho & Saul; Williams), in numpy."""
    G = xt @ xt.T
    n = np.sqrt(np.diag(G))
    rho = np.clip(G / np.outer(n, n), -1, 1)
    np.fill_diagonal(rho, 1.0)  # exactly: arccos of a rounded 1 - ε is off by √(2ε)
    theta = np.arccos(rho)
    if features == "identity":
        return G
    if features == "relu":
        return np.outer(n, n) * (np.sqrt(1 - rho**2) + (np.pi - theta) * rho) / (2 * np.pi)
    if features == "heaviside":
        return (np.pi - theta) / (2 * np.pi)
    d = 1 + 2 * np.diag(G)  # erf
    return 2 / np.pi * np.arcsin(2 * G / np.sqrt(np.outer(d, d)))


@pytest.mark.parametrize("features", ["relu", "identity", "heaviside", "erf"])
@pytest.mark.parametrize("lam", [1.2, 3.0])
def test_gaussian_identity_link_is_c_over_lam2_minus_1(identity_kernel, features, lam):
    """σ = id, ρ = 1: K_σρ = 0 and k = c/(λ² − 1) whatever the features."""
    K = identity_kernel.gram(X, lam=lam, features=features, bias=0.4, input_scale=0.8, feature_scale=1.3)
    c = 1.3**2 * feature_kernel(features, augment(X, 0.8, 0.4))
    np.testing.assert_allclose(K, c / (lam**2 - 1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lam", [0.8, 2.0, 5.0])
def test_gaussian_relu_diagonal_with_zero_mean(relu_kernel, lam):
    """σ = ReLU, ρ = H, μ = 0 (identity features): k(x, x) = c(x, x)/(2λ² − 1)."""
    K = relu_kernel.gram(X, lam=lam, features="identity", bias=0.5)
    xt = augment(X, 1.0, 0.5)
    np.testing.assert_allclose(np.diag(K), np.sum(xt * xt, axis=1) / (2 * lam**2 - 1), rtol=1e-14)


def test_relu_moments_are_the_arc_cosine_kernel(relu_kernel):
    """gram's ReLU-feature moments equal the arc-cosine kernel and mean computed independently."""
    c, mu, _ = relu_moments(X, s=1.5, input_scale=0.7, bias=0.3)
    K_gram = relu_kernel.gram(X, lam=2.0, feature_scale=1.5, input_scale=0.7, bias=0.3, psi0="constant")
    K_moments = relu_kernel.from_moments(c, mu, lam=2.0, psi0="constant")
    np.testing.assert_allclose(K_gram, K_moments, rtol=1e-12, atol=1e-15)


# -- the fixed point -------------------------------------------------------------------------------


def test_fixed_point_satisfies_an_independent_equation(relu_kernel):
    lam = 2.0
    Xs = RNG.normal(size=(40, 4))
    K = relu_kernel.gram(Xs, lam=lam, bias=0.2)
    c, mu, _ = relu_moments(Xs, bias=0.2)
    d = np.diag(K)
    G = relu_update(K, d, d, c, mu, mu, lam)
    off = ~np.eye(len(d), dtype=bool)
    scale = np.sqrt(np.outer(d, d))
    assert np.max(np.abs(G - K)[off] / scale[off]) <= 1e-13
    diag = (d / 2 - 2 * mu * np.sqrt(d / (2 * np.pi)) + np.diag(c) / 2) / lam**2
    np.testing.assert_allclose(diag, d, rtol=1e-13)


@pytest.mark.parametrize("lam", [0.8, 2.0, 12.0])
def test_whole_chunk_passes_reach_the_roots_of_the_plain_solver(relu_kernel, monkeypatch, lam):
    """The whole-chunk passes (the bracket updated from the previous move) give the roots the
    per-iteration solver gives, and they satisfy the independent equation; near-collinear
    inputs put correlations close to 1, where Newton converges most slowly."""
    base = RNG.normal(size=(120, 4))
    Xs = np.concatenate([base, base[:60] + 1e-4 * RNG.normal(size=(60, 4))])
    moving = []
    solve_again = relu_kernel._moving_entries
    monkeypatch.setattr(relu_kernel, "_moving_entries", lambda *a: moving.append(a[5].size) or solve_again(*a))
    K = relu_kernel.gram(Xs, lam=lam, bias=0.2)
    assert moving and moving[0] > 0  # some entries were still moving after the passes: solved again
    c, mu, _ = relu_moments(Xs, bias=0.2)
    d = np.diag(K)
    off = ~np.eye(len(d), dtype=bool)
    scale = np.sqrt(np.outer(d, d))
    G = relu_update(K, d, d, c, mu, mu, lam)
    assert np.max(np.abs(G - K)[off] / scale[off]) <= 1e-13
    monkeypatch.setattr(dekc.solver, "FAST_PASSES", 0)
    plain = relu_kernel.gram(Xs, lam=lam, bias=0.2)
    assert np.max(np.abs(plain - K) / scale) <= 1e-13


@pytest.mark.parametrize(
    "family, kwargs, lam, n",
    [
        ("gaussian", {"reparam": "relu"}, 1.5, 12),
        ("gamma", {"reparam": "-exp(-eta)"}, 3.0, 12),  # ρ = e^{-η}: D(a) grows like e^{2a}, small inputs
        pytest.param("bernoulli", {"reparam": "identity"}, 1.0, 3, marks=pytest.mark.slow),  # 2-D quadrature
        pytest.param("gaussian", {"reparam": "tanh"}, 1.3, 4, marks=pytest.mark.slow),
        pytest.param("poisson", {"activation": "sigmoid"}, 1.0, 4, marks=pytest.mark.slow),
    ],
)
def test_fixed_point_satisfies_its_own_equation(family, kwargs, lam, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dekc.DekcWarning)
        ker = dekc.compile_kernel(family, **kwargs)
    Xs = RNG.normal(size=(n, 2))
    scale = 0.2 if family == "gamma" else 0.6
    K = ker.gram(Xs, lam=lam, bias=0.1, input_scale=scale)
    xt = augment(Xs, scale, 0.1)
    Ef = dekc.gaussian_expectation("relu", "relu")
    nx = np.sum(xt * xt, axis=1)
    cm = np.array(Ef(nx[:, None], nx[None, :], xt @ xt.T))
    np.fill_diagonal(cm, Ef.one_point(nx))
    mu = np.sqrt(nx / (2 * np.pi))
    d = np.diag(K)
    G = np.asarray(ker.module.update(K, d[:, None], d[None, :], cm, mu[:, None], mu[None, :], lam))
    off = ~np.eye(len(d), dtype=bool)
    assert np.max(np.abs(G - K)[off] / np.sqrt(np.outer(d, d))[off]) <= 1e-13
    D = np.asarray(ker.module.diagonal_update(d, np.diag(cm), mu, lam))
    np.testing.assert_allclose(D, d, rtol=1e-13)
    # the root is attracting: |G'| < 1 there
    slope = np.asarray(ker.module.update_dp(K, d[:, None], d[None, :], cm, mu[:, None], mu[None, :], lam))
    assert np.all(np.abs(slope[off]) < 1)


def test_t_step_kernel_approaches_the_fixed_point(relu_kernel):
    K = relu_kernel.gram(X, lam=2.0)
    previous = np.inf
    for steps in (5, 20, 80):
        gap = np.max(np.abs(relu_kernel.gram(X, lam=2.0, steps=steps) - K))
        assert gap < previous
        previous = gap
    assert previous < 1e-12 * np.max(np.abs(K))


def test_t_step_is_the_iteration_of_the_independent_map(relu_kernel):
    lam, steps = 1.7, 3
    c, mu, _ = relu_moments(X, bias=0.3)
    xt = augment(X, 1.0, 0.3)
    P = xt @ xt.T
    for _ in range(steps):
        d = np.diag(P).copy()
        new = relu_update(P, d, d, c, mu, mu, lam)
        np.fill_diagonal(new, (d / 2 - 2 * mu * np.sqrt(d / (2 * np.pi)) + np.diag(c) / 2) / lam**2)
        P = new
    P[1, 5] = P[5, 1] = P[1, 1]  # duplicated inputs take the diagonal value
    np.testing.assert_allclose(relu_kernel.gram(X, lam=lam, bias=0.3, steps=steps), P, rtol=1e-13, atol=1e-15)


def test_a_sequence_of_steps_is_the_stack_of_t_step_kernels(relu_kernel):
    """steps=(T1, T2, ...) from one run: the independent iteration of the joint map at each T
    (steps=0 is Ψ₀ = x̃·x̃' itself), in the order asked, for square and rectangular Gram matrices."""
    lam, bias = 1.7, 0.3
    c, mu, _ = relu_moments(X, bias=bias)
    xt = augment(X, 1.0, bias)
    P = xt @ xt.T
    trajectory = [P.copy()]
    for _ in range(4):
        d = np.diag(P).copy()
        P = relu_update(P, d, d, c, mu, mu, lam)
        np.fill_diagonal(P, (d / 2 - 2 * mu * np.sqrt(d / (2 * np.pi)) + np.diag(c) / 2) / lam**2)
        trajectory.append(P.copy())
    stack = relu_kernel.gram(X, lam=lam, bias=bias, steps=(4, 0, 2))
    assert stack.shape == (3, len(X), len(X))
    for layer, T in zip(stack, (4, 0, 2)):
        expected = trajectory[T].copy()
        expected[1, 5] = expected[5, 1] = expected[1, 1]  # duplicated inputs take the diagonal value
        np.testing.assert_allclose(layer, expected, rtol=1e-13, atol=1e-15)
    block = relu_kernel.gram(X, X[:3], lam=lam, bias=bias, steps=[2, 4])
    np.testing.assert_allclose(block, stack[[2, 0]][:, :, :3], rtol=1e-13, atol=1e-15)
    traced = jax.jit(lambda lam_: relu_kernel.gram(jnp.asarray(X), lam=lam_, bias=bias, steps=(4, 0, 2)))(lam)
    np.testing.assert_allclose(traced, stack, rtol=1e-13, atol=1e-15)


def test_t_step_kernels_by_tiles_are_the_iteration_of_the_joint_map(relu_kernel, monkeypatch):
    """T-step kernels are computed by tiles of 64 x 64 entries, a few tiles per compiled call:
    across tiles cut at the matrix's edges, square and rectangular, as a stack, with two tiles
    per call (several calls in flight), every entry is the independent numpy iteration's."""
    lam, bias = 1.7, 0.3
    Z = RNG.normal(size=(150, 3))
    Z[7] = Z[140]  # identical rows, in different tiles, take the diagonal value
    c, mu, _ = relu_moments(Z, bias=bias)
    zt = augment(Z, 1.0, bias)
    P = zt @ zt.T
    trajectory = [P.copy()]
    for _ in range(3):
        d = np.diag(P).copy()
        P = relu_update(P, d, d, c, mu, mu, lam)
        np.fill_diagonal(P, (d / 2 - 2 * mu * np.sqrt(d / (2 * np.pi)) + np.diag(c) / 2) / lam**2)
        P[7, 140] = P[140, 7] = P[7, 7]
        trajectory.append(P.copy())
    monkeypatch.setattr(relu_kernel, "_chunk", 2 * 64 * 64)
    stack = relu_kernel.gram(Z, lam=lam, bias=bias, steps=(3, 1))
    for layer, T in zip(stack, (3, 1)):
        np.testing.assert_allclose(layer, trajectory[T], rtol=1e-13, atol=1e-15)
    block = relu_kernel.gram(Z, Z[60:130], lam=lam, bias=bias, steps=2)
    np.testing.assert_allclose(block, trajectory[2][:, 60:130], rtol=1e-13, atol=1e-15)


def test_psi0_constant_and_input_reach_the_same_root(relu_kernel):
    np.testing.assert_allclose(
        relu_kernel.gram(X, lam=2.0, psi0="constant"), relu_kernel.gram(X, lam=2.0), rtol=1e-12, atol=1e-15
    )
    xt = augment(X)
    np.testing.assert_allclose(
        relu_kernel.gram(X, lam=2.0, psi0=2 * xt @ xt.T), relu_kernel.gram(X, lam=2.0), rtol=1e-12, atol=1e-15
    )


# -- identical inputs and the nugget (SPEC §2) ------------------------------------------------------


def test_duplicated_rows_get_the_diagonal_value(relu_kernel):
    K = relu_kernel.gram(X, lam=2.0)
    assert K[1, 5] == K[1, 1] == K[5, 5] == K[5, 1]
    np.testing.assert_array_equal(K, K.T)


def test_collinear_distinct_inputs_get_the_attracting_root(relu_kernel):
    """x and 2x (no bias): full correlation is an exact, repelling fixed point of their entry;
    the DEKer is the attracting root below it (SPEC §2), for either start."""
    Xc = np.array([[1.0, -0.5], [2.0, -1.0], [0.3, 0.9]])
    c, mu, _ = relu_moments(Xc)
    for psi0 in ("input", "constant"):
        K = relu_kernel.gram(Xc, lam=2.0, psi0=psi0)
        d = np.diag(K)
        assert K[0, 1] < 0.99 * np.sqrt(d[0] * d[1])
        G = relu_update(K, d, d, c, mu, mu, 2.0)
        assert abs(G[0, 1] - K[0, 1]) <= 1e-13 * np.sqrt(d[0] * d[1])


def test_limit_is_the_continuous_part(relu_kernel):
    """A Heaviside ρ makes full correlation repel: k(x, x') → the 'limit' value < k(x, x)."""
    x = np.array([[0.3, -1.2, 0.8]])
    exact = relu_kernel.gram(x, lam=2.0)[0, 0]
    limit = relu_kernel.gram(x, lam=2.0, diagonal="limit")[0, 0]
    assert limit < exact
    near = []
    for eps in (1e-3, 1e-5, 1e-7):
        Xn = np.r_[x, x + eps * np.array([[1.0, 0.5, -0.2]])]
        near.append(relu_kernel.gram(Xn, lam=2.0)[0, 1])
    assert abs(near[-1] - limit) < abs(near[0] - limit)
    assert abs(near[-1] - limit) < 1e-4 * exact


def test_gram_of_two_sets_is_a_block_of_the_union(relu_kernel):
    Y = RNG.normal(size=(4, 3))
    Y[2] = X[3]
    full = relu_kernel.gram(np.r_[X, Y], lam=2.0, bias=0.3)
    block = relu_kernel.gram(X, Y, lam=2.0, bias=0.3)
    np.testing.assert_allclose(block, full[: len(X), len(X) :], rtol=1e-13, atol=1e-16)
    assert block[3, 2] == full[3, 3]


def test_large_matrices_are_computed_in_chunks(relu_kernel, monkeypatch):
    Xs = RNG.normal(size=(30, 2))
    whole = relu_kernel.gram(Xs, lam=2.0)
    monkeypatch.setattr(relu_kernel, "_chunk", 64)
    # the same scalar problems; only the vectorised arithmetic's lane layout differs
    np.testing.assert_allclose(relu_kernel.gram(Xs, lam=2.0), whole, rtol=1e-13, atol=1e-16)


# -- gradients and jit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, diagonal, host", [(None, "exact", True), (None, "limit", True), (None, "exact", False), (3, "exact", True)]
)
def test_gradients_agree_with_finite_differences(relu_kernel, monkeypatch, steps, diagonal, host):
    """``host``: the traced fixed point takes its values from the eager solver (on CPU), or from
    the traced solver (what an accelerator runs)."""
    monkeypatch.setattr("dekc.kernel._host_solves", lambda: host)
    weights = jnp.asarray(RNG.normal(size=(7, 7)))

    def loss(lam, s, scale, bias):
        K = relu_kernel.gram(X, lam=lam, feature_scale=s, input_scale=scale, bias=bias, steps=steps, diagonal=diagonal)
        return jnp.sum(weights * K)

    point = (2.0, 1.3, 0.7, 0.4)
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*point)
    for k in range(4):
        h = 1e-5
        up, down = list(point), list(point)
        up[k] += h
        down[k] -= h
        fd = (loss(*up) - loss(*down)) / (2 * h)
        assert abs(grads[k] - fd) <= 1e-6 * max(1.0, abs(fd)), (k, grads[k], fd)


def test_gram_runs_under_jit(relu_kernel):
    f = jax.jit(lambda lam, bias: relu_kernel.gram(X, lam=lam, bias=bias))
    np.testing.assert_allclose(f(2.0, 0.2), relu_kernel.gram(X, lam=2.0, bias=0.2), rtol=1e-13, atol=1e-16)
    assert f(2.0, 0.2).dtype == jnp.float64


@pytest.mark.parametrize("lam, host", [(0.8, False), (2.0, False), (2.0, True)])
def test_traced_gram_in_chunks_satisfies_the_independent_equation(relu_kernel, monkeypatch, lam, host):
    """Under jit the entries come from one loop over fixed-size chunks whose indices are computed
    on the device (the traced solver), or from the eager solver called back (``host``):
    several chunks (the last one partial), near-collinear inputs, a block."""
    monkeypatch.setattr(relu_kernel, "_chunk", 512)
    monkeypatch.setattr("dekc.kernel._host_solves", lambda: host)
    base = RNG.normal(size=(60, 4))
    Xs = np.concatenate([base, base[:30] + 1e-4 * RNG.normal(size=(30, 4))])  # 4095 entries: 8 chunks
    K = np.asarray(jax.jit(lambda lam_: relu_kernel.gram(Xs, lam=lam_, bias=0.2))(lam))
    c, mu, _ = relu_moments(Xs, bias=0.2)
    d = np.diag(K)
    off = ~np.eye(len(d), dtype=bool)
    scale = np.sqrt(np.outer(d, d))
    assert np.max(np.abs(relu_update(K, d, d, c, mu, mu, lam) - K)[off] / scale[off]) <= 1e-13
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_allclose(d, np.diag(relu_kernel.gram(Xs, lam=lam, bias=0.2)), rtol=1e-13)
    Y = Xs[::2][:37]
    block = jax.jit(lambda lam_: relu_kernel.gram(Xs, Y, lam=lam_, bias=0.2))(lam)
    assert block.shape == (90, 37)
    assert np.max(np.abs(np.asarray(block) - K[:, ::2][:, :37]) / scale[:, ::2][:, :37]) <= 1e-13
    steps = jax.jit(lambda lam_: relu_kernel.gram(Xs, Y, lam=lam_, bias=0.2, steps=(3, 1)))(lam)
    # near-collinear pairs: arccos near 1 amplifies rounding differences of the fused code ~1e4-fold
    eager = relu_kernel.gram(Xs, Y, lam=lam, bias=0.2, steps=(3, 1))
    np.testing.assert_allclose(steps, eager, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("in_place", [True, False])
def test_traced_fixed_point_from_the_eager_solver(relu_kernel, monkeypatch, in_place):
    """On CPU a traced fixed point takes its values from the eager solver: the same values as an
    eager call, the traced solver's gradients (with respect to the inputs too), under
    ``vmap`` too, and NaN where the traced solver fails; written in XLA's output buffer
    (``in_place``, where JAX has buffer callbacks) or copied out of a pure callback."""
    from dekc import kernel

    if in_place and kernel._buffer_callback is None:
        pytest.skip("this JAX has no buffer callbacks")
    if not in_place:
        monkeypatch.setattr(kernel, "_buffer_callback", None)
    assert kernel._host_solves() == (jax.default_backend() == "cpu")
    Xs, Y = RNG.normal(size=(30, 4)), RNG.normal(size=(20, 4))

    def gradients(host):
        monkeypatch.setattr(kernel, "_host_solves", lambda: host)
        loss = lambda Z, lam: jnp.sum(relu_kernel.gram(Z, Y, lam=lam, bias=0.3) ** 2)
        return [np.asarray(g) for g in jax.grad(loss, argnums=(0, 1))(jnp.asarray(Xs), 2.0)]

    for host, traced in zip(gradients(True), gradients(False)):
        np.testing.assert_allclose(host, traced, rtol=1e-11, atol=1e-14)
    monkeypatch.setattr(kernel, "_host_solves", lambda: True)
    eager = relu_kernel.gram(Xs, lam=2.0, bias=0.3)
    # the input moments are computed in the traced program: rounding may differ by an ulp
    traced = jax.jit(lambda lam: relu_kernel.gram(Xs, lam=lam, bias=0.3))(2.0)
    np.testing.assert_allclose(traced, eager, rtol=1e-13, atol=1e-16)
    stack = jax.vmap(lambda lam: relu_kernel.gram(Xs[:9], lam=lam))(jnp.asarray([2.0, 3.0]))
    np.testing.assert_allclose(stack[1], relu_kernel.gram(Xs[:9], lam=3.0), rtol=1e-13, atol=1e-16)
    c, mu, _ = relu_moments(Xs)
    np.testing.assert_allclose(
        jax.jit(lambda lam: relu_kernel.from_moments(c, mu, lam=lam))(2.0),
        relu_kernel.from_moments(c, mu, lam=2.0),
        rtol=1e-13,
        atol=1e-16,
    )
    # lam = 0.1: the eager solve raises; the callback gives what the traced solver gives
    failing = lambda: np.asarray(jax.jit(lambda lam: relu_kernel.gram(Xs[:6], lam=lam))(0.1))
    with pytest.raises(dekc.ConvergenceError):
        relu_kernel.gram(Xs[:6], lam=0.1)
    host = failing()
    monkeypatch.setattr(kernel, "_host_solves", lambda: False)
    np.testing.assert_array_equal(np.isnan(host), np.isnan(failing()))
    assert np.isnan(host).any()


def test_traced_solver_when_many_entries_are_still_moving(relu_kernel):
    """Far starts leave more than an eighth of the entries moving after the whole-chunk passes:
    the traced solver then iterates the whole chunk, and still reaches the roots."""
    from dekc import solver

    Xs = RNG.normal(size=(40, 4))
    lam = 2.0
    c, mu, _ = relu_moments(Xs, bias=0.2)
    d = np.diag(relu_kernel.gram(Xs, lam=lam, bias=0.2))
    i, j = np.triu_indices(40, 1)  # 780 problems
    sab = np.sqrt(d[i] * d[j])
    args = tuple(jnp.asarray(v) for v in (d[i], d[j], c[i, j], mu[i], mu[j], lam))
    p0, lo, hi = jnp.asarray(-0.999 * sab), jnp.asarray(-sab), jnp.asarray(sab)
    step = relu_kernel._pair_step
    z = prev = p0
    lo_k, hi_k = lo, hi
    for k in range(solver.FAST_PASSES):
        new, lo_k, hi_k = solver._fast_pass(step, k == 0, z, prev, lo_k, hi_k, *args)
        prev, z = z, new
    assert np.count_nonzero(np.imag(np.asarray(z)) <= 0) > sab.size / 8
    eager = np.asarray(solver.newton(solver.pair_iteration, step, p0, lo, hi, args, False).p)
    solve = jax.jit(lambda *a: solver.newton(solver.pair_iteration, step, p0, lo, hi, a, True))
    p, status = solve(*args)
    assert np.all(np.asarray(status) == solver.CONVERGED)
    P = np.diag(d)
    P[i, j] = P[j, i] = p
    G = relu_update(P, d, d, c, mu, mu, lam)[i, j]
    assert np.max(np.abs(G - np.asarray(p)) / sab) <= 1e-13
    assert np.max(np.abs(np.asarray(p) - eager) / sab) <= 1e-13


def test_traced_program_does_not_grow_with_n(relu_kernel, monkeypatch):
    """jit(grad) traces one loop over the chunks, not one copy of the solver per chunk."""
    monkeypatch.setattr(relu_kernel, "_chunk", 512)

    def equations(n):
        Xs = RNG.normal(size=(n, 3))
        loss = lambda lam: jnp.sum(relu_kernel.gram(Xs, lam=lam))
        return len(jax.make_jaxpr(jax.grad(loss))(2.0).jaxpr.eqns)

    assert equations(40) == equations(160)  # 2 chunks against 26


@pytest.mark.parametrize("n, m, symmetric", [(1, 1, True), (7, 7, True), (300, 300, True), (5, 9, False)])
def test_entry_indices_on_the_device(n, m, symmetric):
    from dekc.kernel import _flat_entries

    total = n * (n + 1) // 2 if symmetric else n * m
    i, j = _flat_entries(jnp.arange(total), n, m, symmetric)
    rows, cols = np.triu_indices(n) if symmetric else np.divmod(np.arange(total), m)
    np.testing.assert_array_equal(i, rows)
    np.testing.assert_array_equal(j, cols)


def test_entry_indices_on_the_device_at_row_ends_of_a_large_matrix():
    from dekc.kernel import _flat_entries

    n = 20000
    starts = np.concatenate([[0], np.cumsum(n - np.arange(n))])  # flat index of (r, r)
    r = np.array([0, 1, 2, 99, 4097, 10000, 19997, 19998, 19999])
    flat = np.concatenate([starts[r], starts[r + 1] - 1])  # (r, r) and (r, n - 1)
    i, j = _flat_entries(jnp.asarray(flat), n, n, True)
    np.testing.assert_array_equal(i, np.concatenate([r, r]))
    np.testing.assert_array_equal(j, np.concatenate([r, np.full(r.size, n - 1)]))


def test_from_moments_gradient_with_respect_to_lam(relu_kernel):
    c, mu, _ = relu_moments(X)
    fn = lambda lam: jnp.sum(relu_kernel.from_moments(c, mu, lam=lam))
    fd = (fn(2.0 + 1e-5) - fn(2.0 - 1e-5)) / 2e-5
    assert abs(jax.grad(fn)(2.0) - fd) <= 1e-6 * abs(fd)


# -- failures --------------------------------------------------------------------------------------


def test_no_fixed_point_names_the_entry_and_the_lambda_bound(identity_kernel):
    with pytest.raises(dekc.ConvergenceError, match=r"diagonal entry 0 .*lam > 1\b"):
        identity_kernel.gram(X, lam=0.9)


def test_exponential_activation_diverges_from_a_large_start():
    ker = dekc.compile_kernel("poisson", reparam="identity")  # σ = exp: no λ bounds every start
    with pytest.raises(dekc.ConvergenceError, match="grows faster than a"):
        ker.gram(X, lam=1.5, input_scale=3.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lam": -1.0}, "lam must be a positive"),
        ({"lam": 2.0, "steps": -1}, "steps must be None"),
        ({"lam": 2.0, "steps": []}, "steps must be None"),
        ({"lam": 2.0, "steps": (2, 1.5)}, "steps must be None"),
        ({"lam": 2.0, "diagonal": "maybe"}, "diagonal must be"),
        ({"lam": 2.0, "psi0": "zeros"}, "psi0 must be"),
        ({"lam": 2.0, "psi0": np.eye(3)}, r"psi0 must have shape \(7, 7\)"),
    ],
)
def test_bad_arguments_are_refused(relu_kernel, kwargs, message):
    with pytest.raises(InputError, match=message):
        relu_kernel.gram(X, **kwargs)


def test_bad_inputs_are_refused(relu_kernel):
    with pytest.raises(InputError, match="NaN"):
        relu_kernel.gram(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError, match="columns"):
        relu_kernel.gram(X, np.ones((2, 5)))
    with pytest.raises(InputError, match="positive semi-definite"):
        relu_kernel.from_moments(np.array([[1.0, 2.0], [2.0, 1.0]]), np.zeros(2))
    with pytest.raises(InputError, match="psi0='input'"):
        relu_kernel.from_moments(np.eye(2), np.zeros(2), psi0="input")


# -- the compilation cache -------------------------------------------------------------------------

_XLA_PROBE = """
import jax, numpy as np, dekc
print(jax.config.jax_compilation_cache_dir or "")
dekc.nngp("relu", 1)(np.eye(3))
"""


@pytest.mark.parametrize("setting", ["default", "off", "jax"])
def test_compiled_programs_are_kept_where_configured(tmp_path, setting):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "DEKC_XLA"))}
    env["DEKC_CACHE_DIR"] = str(tmp_path / "kernels")
    env["DEKC_XLA_CACHE_DIR"] = str(tmp_path / "xla")
    if setting == "off":
        env["DEKC_XLA_CACHE"] = "0"
    if setting == "jax":  # the user's own JAX setting wins
        env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", _XLA_PROBE], env=env, capture_output=True, text=True, check=True)
    where = {"default": tmp_path / "xla", "off": None, "jax": tmp_path / "mine"}[setting]
    assert out.stdout.strip() == ("" if where is None else str(where))
    if setting == "default":  # every program is kept (JAX's own default keeps those slower than 1 s)
        assert any(where.iterdir())
    assert not (tmp_path / "xla").exists() or setting == "default"


def test_closed_form_feature_moments_load_from_the_sealed_cache(tmp_path, monkeypatch):
    """ReLU features are derived once and written as a sealed module; a new process (here: the
    in-process memo cleared) loads them without sympy, and a tampered file is regenerated."""
    from dekc import moments

    monkeypatch.setenv("DEKC_CACHE_DIR", str(tmp_path))
    moments._feature_moments.cache_clear()
    a = jnp.asarray([0.3, 1.0, 7.5])
    expected_ff = np.asarray(dekc.gaussian_expectation("relu", "relu").one_point(a))
    expected_f1 = np.asarray(dekc.gaussian_expectation("relu", "1").one_point(a))
    moments.feature_moments("relu")
    (written,) = (tmp_path / "features").iterdir()
    moments._feature_moments.cache_clear()

    def no_derivation(*args, **kwargs):
        raise AssertionError("derived again")

    monkeypatch.setattr(moments, "gaussian_expectation", no_derivation)
    loaded = moments.feature_moments("relu")
    np.testing.assert_array_equal(np.asarray(loaded.ff_one_point(a)), expected_ff)
    np.testing.assert_array_equal(np.asarray(loaded.f1_one_point(a)), expected_f1)
    np.testing.assert_allclose(expected_ff, np.asarray(a) / 2, rtol=1e-15)  # E[relu(u)²] = a/2
    monkeypatch.undo()
    monkeypatch.setenv("DEKC_CACHE_DIR", str(tmp_path))
    written.write_text(written.read_text().replace("0.5", "0.6"))
    moments._feature_moments.cache_clear()
    with pytest.warns(dekc.DekcWarning, match="changed or corrupted"):
        again = moments.feature_moments("relu")
    np.testing.assert_array_equal(np.asarray(again.ff_one_point(a)), expected_ff)
    moments._feature_moments.cache_clear()


@pytest.mark.parametrize("n, m, symmetric", [(200, 200, True), (64, 64, True), (130, 77, False), (5, 9, False)])
def test_tiles_cover_the_entries_and_are_written_in_bands(n, m, symmetric):
    """The eager fixed point's tiles cover every wanted entry (the upper triangle when
    symmetric), their counts are those entries, and a band of tiles written as one strided copy
    equals the tiles written one by one; written symmetric, the matrix is the upper triangle of
    those tiles mirrored (the lower halves of tiles on the diagonal are not used)."""
    from dekc.kernel import _TILE, _tiles, _write_tiles

    rows, cols, counts = _tiles(n, m, symmetric)
    covered = np.zeros((n, m), int)
    for r0, c0 in zip(rows, cols):
        covered[r0 : r0 + _TILE, c0 : c0 + _TILE] += 1
    wanted = np.triu(np.ones((n, m), bool)) if symmetric else np.ones((n, m), bool)
    assert np.all(covered[wanted] == 1)
    assert counts.sum() == wanted.sum()
    values = RNG.normal(size=(rows.size, _TILE, _TILE))
    out, one_by_one = np.full((n, m), np.nan), np.full((n, m), np.nan)
    for lo in range(0, rows.size, 7):
        _write_tiles(out, values[lo : lo + 7], rows[lo : lo + 7], cols[lo : lo + 7])
    for t, (r0, c0) in enumerate(zip(rows, cols)):
        one_by_one[r0 : r0 + _TILE, c0 : c0 + _TILE] = values[t, : n - r0, : m - c0]
    np.testing.assert_array_equal(out, one_by_one)
    if symmetric:
        both = np.full((n, m), np.nan)
        for lo in range(0, rows.size, 7):
            _write_tiles(both, values[lo : lo + 7], rows[lo : lo + 7], cols[lo : lo + 7], symmetric=True)
        upper = np.triu(one_by_one)
        np.testing.assert_array_equal(both, upper + np.triu(upper, 1).T)


@pytest.mark.parametrize("scale", [1e-70, 1e70])
def test_fixed_point_at_extreme_scales(relu_kernel, scale):
    """ReLU kernels are homogeneous: inputs scaled by ``t`` give the kernel scaled by ``t²``
    (here ``k(x, x)`` near 1e-140 and 1e140, inside the accepted range) to 1e-12 of the scale
    ``√(k(x, x) k(y, y))`` (the solver's accuracy is relative to it, not to each entry), and every
    entry still satisfies the independent equation, where cubes of Newton steps would underflow
    or overflow."""
    Xs = RNG.normal(size=(60, 4))
    base = relu_kernel.gram(Xs, lam=2.0)
    K = relu_kernel.gram(scale * Xs, lam=2.0)
    scale_base = np.sqrt(np.outer(np.diag(base), np.diag(base)))
    assert np.max(np.abs(K / scale**2 - base) / scale_base) <= 1e-12
    c, mu, _ = relu_moments(scale * Xs)
    d = np.diag(K)
    off = ~np.eye(len(d), dtype=bool)
    scale_ab = np.sqrt(np.outer(d, d))
    assert np.max(np.abs(relu_update(K, d, d, c, mu, mu, 2.0) - K)[off] / scale_ab[off]) <= 1e-13


def _fixed_point_residual(kernel, K, Xs, Y=None, lam=2.0):
    """The largest ``|G(k) − k|/√(ab)`` of ``K = gram(Xs, Y)`` from the independent numpy update
    (identical rows excepted: they take the diagonal value)."""
    c, mu, _ = relu_moments(Xs, Y=Y)
    a = np.diag(kernel.gram(Xs, lam=lam)) if Y is not None else np.diag(K)
    b = np.diag(kernel.gram(Y, lam=lam)) if Y is not None else a
    muy = relu_moments(Y)[1] if Y is not None else mu
    keep = ~np.all(Xs[:, None, :] == (Xs if Y is None else Y)[None, :, :], axis=2)
    sab = np.sqrt(np.outer(a, b))
    return np.max(np.abs(relu_update(K, a, b, c, mu, muy, lam) - K)[keep] / sab[keep])


def test_fitted_start_gives_the_roots_of_the_input_start(relu_kernel, monkeypatch):
    """A Gram matrix of at least 2¹⁸ entries starts where a Chebyshev fit of a solved sample's
    roots against the start correlation predicts (ReLU kernels are positively homogeneous: the
    scaled root is a function of that correlation). Every entry satisfies the independent
    equation, the values are those of the start from the input correlation, square and
    rectangular; a wrong prediction is solved again from the input's start."""
    from dekc import kernel

    Xs, Y = RNG.normal(size=(760, 4)), RNG.normal(size=(500, 4))
    Xs[17] = Xs[301]  # identical rows take the diagonal value
    fitted = {"square": relu_kernel.gram(Xs, lam=2.0)}
    assert relu_kernel.diagnostics.fitted_start
    fitted["rectangular"] = relu_kernel.gram(Xs[:600], Y, lam=2.0)
    assert relu_kernel.diagnostics.fitted_start
    assert fitted["square"][17, 301] == fitted["square"][17, 17]
    assert _fixed_point_residual(relu_kernel, fitted["square"], Xs) <= 1e-13
    assert _fixed_point_residual(relu_kernel, fitted["rectangular"], Xs[:600], Y) <= 1e-13
    with monkeypatch.context() as patch:
        patch.setattr(kernel, "_FIT_MIN_ENTRIES", 1 << 62)
        plain = {"square": relu_kernel.gram(Xs, lam=2.0), "rectangular": relu_kernel.gram(Xs[:600], Y, lam=2.0)}
        assert not relu_kernel.diagnostics.fitted_start
    for key, K in plain.items():
        d = np.sqrt(np.abs(np.diag(plain["square"])))
        scale = np.outer(d, d) if key == "square" else np.outer(d[:600], np.sqrt(np.diag(relu_kernel.gram(Y, lam=2.0))))
        assert np.max(np.abs(fitted[key] - K) / scale) <= 1e-12, key
    # from moments, the fit predicts from the moments' correlation (the start is constant, or an
    # array): the same roots
    c, mu, _ = relu_moments(Xs)
    xt = augment(Xs)
    d = np.sqrt(np.diag(plain["square"]))
    for psi0 in ("constant", xt @ xt.T):
        K = relu_kernel.from_moments(c, mu, lam=2.0, psi0=psi0)
        assert relu_kernel.diagnostics.fitted_start
        assert np.max(np.abs(K - plain["square"]) / np.outer(d, d)) <= 1e-12

    # wrong predictions: far from every root, or kept only at zero distance from the prediction;
    # the entries are then solved again from the input's start (whole calls from the start once
    # most of a call is left moving)
    solved = []
    chunk_call = kernel.Kernel._chunk_call

    def counted(self, problem, options, ax, ay, i, j, solve, *rest):
        if solve:
            solved.append(int(np.prod(np.broadcast_shapes(i.shape, j.shape))))
        return chunk_call(self, problem, options, ax, ay, i, j, solve, *rest)

    start_fit = kernel.Kernel._start_fit

    def shifted(*args):  # (the fit: Chebyshev coefficients, then the range and the acceptance)
        fit = start_fit(*args).copy()
        fit[0] += 0.3
        return fit

    def exact(*args):
        fit = start_fit(*args).copy()
        fit[-1] = 0.0
        return fit

    monkeypatch.setattr(kernel.Kernel, "_chunk_call", counted)
    entries = 760 * 761 // 2
    for wrong in (shifted, exact):
        solved.clear()
        with monkeypatch.context() as m:
            m.setattr(kernel.Kernel, "_start_fit", wrong)
            K = relu_kernel.gram(Xs, lam=2.0)
        assert relu_kernel.diagnostics.fitted_start
        assert sum(solved) - kernel._fit_sample(entries) >= 0.9 * entries, wrong.__name__
        d = np.sqrt(np.diag(plain["square"]))
        assert np.max(np.abs(K - plain["square"]) / np.outer(d, d)) <= 1e-12


def test_fitted_start_declined_where_roots_are_not_a_function_of_the_start(relu_kernel):
    """Under erf features the kernel is not homogeneous: the roots are not a function of the
    start correlation, the fit is declined and every entry starts from the input correlation."""
    Xs = 2.0 * RNG.normal(size=(760, 4))
    K = relu_kernel.gram(Xs, lam=2.0, features="erf")
    assert not relu_kernel.diagnostics.fitted_start
    assert np.all(np.isfinite(K))
