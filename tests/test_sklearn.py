"""dekc.sklearn.DEKernel: the scikit-learn GP-kernel adaptor."""

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold

import dekc
from dekc.sklearn import DEKernel


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2))
    X[7] = X[2]  # a duplicated input: it gets the diagonal value
    return X


def _augmented(X, input_scale, bias):
    return np.hstack([input_scale * X, np.full((len(X), 1), bias)])


# -- values -----------------------------------------------------------------------------------------


def test_matches_gram(X):
    params = {"lam": 3.0, "feature_scale": 0.7, "input_scale": 1.3, "bias": -0.4}
    k = DEKernel(**params)
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    K = k(X)
    np.testing.assert_array_equal(K, ker.gram(X, **params))
    Y = X[:5] + 0.1
    np.testing.assert_array_equal(k(X, Y), ker.gram(X, Y, **params))
    np.testing.assert_array_equal(k.diag(X), np.diag(K))
    assert K[2, 7] == K[2, 2] == K[7, 7]  # identical inputs: the diagonal value
    np.testing.assert_allclose(k(X, X.copy()), K, rtol=1e-12)  # the (X, Y) path agrees with Y = None


def test_other_link_and_steps(X):
    k = DEKernel("poisson", activation="exp", lam=3.0, input_scale=0.3, steps=3)
    ker = dekc.compile_kernel("poisson", activation="exp")
    np.testing.assert_array_equal(k(X), ker.gram(X, lam=3.0, input_scale=0.3, steps=3))
    np.testing.assert_array_equal(k.diag(X), np.diag(k(X)))


def test_closed_form_canonical_gaussian(X):
    # Gaussian family, R = id, identity features: k = c/(λ² − 1), c = s² x̃·x̃'
    lam, s, a, b = 1.7, 0.8, 1.4, 0.5
    k = DEKernel(reparam="eta", features="identity", lam=lam, feature_scale=s, input_scale=a, bias=b)
    xt = _augmented(X, a, b)
    expected = s**2 * (xt @ xt.T) / (lam**2 - 1)
    np.testing.assert_allclose(k(X), expected, rtol=1e-12)
    np.testing.assert_allclose(k.diag(X), np.diag(expected), rtol=1e-12)


def test_closed_form_relu_diagonal(X):
    # Gaussian family, R = ReLU, identity features (μ = 0): k(x, x) = c(x, x)/(2λ² − 1)
    lam, a, b = 2.5, 0.9, -0.3
    k = DEKernel(features="identity", lam=lam, input_scale=a, bias=b)
    xt = _augmented(X, a, b)
    np.testing.assert_allclose(k.diag(X), np.sum(xt * xt, axis=1) / (2 * lam**2 - 1), rtol=1e-12)


def test_diag_many_points():
    # diag is computed blockwise: more points than one block
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(300, 1))
    k = DEKernel(lam=2.0, features="identity")
    xt = _augmented(Z, 1.0, 0.0)
    np.testing.assert_allclose(k.diag(Z), np.sum(xt * xt, axis=1) / (2 * 2.0**2 - 1), rtol=1e-12)


# -- gradients --------------------------------------------------------------------------------------


def _central_differences(kernel, X, h=1e-5):
    theta = kernel.theta
    cols = []
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = h
        cols.append((kernel.clone_with_theta(theta + e)(X) - kernel.clone_with_theta(theta - e)(X)) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lam": 2.0, "feature_scale": 0.9, "input_scale": 1.2, "bias": 0.3},
        {"lam": 1.6, "feature_scale": 1.1, "input_scale": 0.7, "bias": 0.4, "bias_bounds": (1e-2, 10.0)},
        {"lam": 2.0, "input_scale": 0.8, "bias": -0.2, "steps": 3, "lam_bounds": "fixed"},
    ],
)
def test_gradient_matches_finite_differences(X, kwargs):
    k = DEKernel(**kwargs)
    K, dK = k(X, eval_gradient=True)
    np.testing.assert_array_equal(K, k(X))
    assert dK.shape == (len(X), len(X), k.n_dims)
    fd = _central_differences(k, X)
    np.testing.assert_allclose(dK, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


def test_gradient_closed_form(X):
    # k = s² (a² x·x' + b²)/(λ² − 1): d/dlog s = 2k, d/dlog a = 2 s² a² x·x'/(λ² − 1),
    # d/dlog λ = −2λ² k/(λ² − 1); theta order is alphabetical (feature_scale, input_scale, lam)
    lam, s, a, b = 1.9, 0.6, 1.3, 0.7
    k = DEKernel(reparam="eta", features="identity", lam=lam, feature_scale=s, input_scale=a, bias=b)
    K, dK = k(X, eval_gradient=True)
    G = X @ X.T
    expected = np.stack([2 * K, 2 * s**2 * a**2 * G / (lam**2 - 1), -2 * lam**2 * K / (lam**2 - 1)], axis=-1)
    np.testing.assert_allclose(dK, expected, rtol=1e-10, atol=1e-12)


def test_gradient_all_fixed(X):
    k = DEKernel(lam_bounds="fixed", feature_scale_bounds="fixed", input_scale_bounds="fixed")
    _K, dK = k(X, eval_gradient=True)
    assert dK.shape == (len(X), len(X), 0) and k.theta.size == 0


# -- sklearn's kernel API ---------------------------------------------------------------------------


def test_theta_bounds_clone():
    k = DEKernel(lam=3.0, feature_scale=0.5, input_scale=2.0, bias=-1.0, lam_bounds=(1.5, 50.0))
    assert [h.name for h in k.hyperparameters] == ["bias", "feature_scale", "input_scale", "lam"]
    assert k.hyperparameter_bias.fixed
    np.testing.assert_allclose(k.theta, np.log([0.5, 2.0, 3.0]))
    np.testing.assert_allclose(k.bounds, np.log([[1e-3, 1e3], [1e-3, 1e3], [1.5, 50.0]]))
    c = clone(k)
    assert c is not k and c == k and c.get_params() == k.get_params() and repr(c) == repr(k)
    assert pickle.loads(pickle.dumps(k)) == k
    c2 = k.clone_with_theta(np.log([0.25, 4.0, 6.0]))
    assert (c2.feature_scale, c2.input_scale, c2.lam, c2.bias) == pytest.approx((0.25, 4.0, 6.0, -1.0))
    assert k.lam == 3.0 and c2 != k  # the original is untouched
    c2.set_params(lam=3.0, feature_scale=0.5, input_scale=2.0)
    assert c2 == k
    free_bias = DEKernel(bias=0.5, bias_bounds=(0.1, 2.0))
    np.testing.assert_allclose(free_bias.theta, np.log([0.5, 1.0, 1.0, 2.0]))
    assert not k.is_stationary() and k.requires_vector_input
    assert repr(k) == (
        "DEKernel('gaussian', reparam='relu', lam=3, feature_scale=0.5, input_scale=2, bias=-1, features='relu')"
    )


def test_sum_kernel_params():
    k = DEKernel(lam=2.0) + WhiteKernel(0.1)
    assert k.get_params()["k1__lam"] == 2.0
    k.set_params(k1__lam=4.0)
    assert k.k1.lam == 4.0 and clone(k) == k


# -- estimators -------------------------------------------------------------------------------------


# the optimum sits on bounds (large lam with a large feature scale; the DEKer's own nugget takes
# the noise from WhiteKernel): sklearn warns, which is expected here
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.slow  # its first gradient call compiles for 15 s; the gradient itself is tested below
def test_gaussian_process_regression():
    rng = np.random.default_rng(2)
    Xtr = rng.uniform(-3, 3, size=(40, 1))
    y = np.sin(Xtr[:, 0]) + 0.1 * rng.normal(size=40)
    kernel = DEKernel(lam=2.0, input_scale=1.0, bias=1.0) + WhiteKernel(0.5)
    gp = GaussianProcessRegressor(kernel=kernel, n_restarts_optimizer=0, random_state=0).fit(Xtr, y)
    initial = gp.log_marginal_likelihood(kernel.theta)
    assert gp.log_marginal_likelihood_value_ > initial + 1.0
    assert gp.log_marginal_likelihood_value_ == pytest.approx(gp.log_marginal_likelihood(gp.kernel_.theta))
    mean, std = gp.predict(Xtr[:5], return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    assert np.sqrt(np.mean((gp.predict(Xtr) - y) ** 2)) < 0.3


def _krr_predict(K_train, K_test, y, alpha):
    return K_test @ np.linalg.solve(K_train + alpha * np.eye(len(K_train)), y)


def test_kernel_ridge_direct_and_precomputed():
    rng = np.random.default_rng(3)
    Xtr, Xte = rng.normal(size=(30, 2)), rng.normal(size=(7, 2))
    y = Xtr[:, 0] - np.abs(Xtr[:, 1])
    k = DEKernel(lam=2.0, bias=0.5)
    direct = KernelRidge(kernel=k, alpha=0.1).fit(Xtr, y).predict(Xte)
    pre = KernelRidge(kernel="precomputed", alpha=0.1).fit(k(Xtr), y).predict(k(Xte, Xtr))
    expected = _krr_predict(k(Xtr), k(Xte, Xtr), y, 0.1)
    np.testing.assert_allclose(direct, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pre, expected, rtol=1e-9, atol=1e-12)


def test_grid_search_over_lam():
    rng = np.random.default_rng(4)
    Xtr = rng.normal(size=(24, 2))
    y = np.tanh(Xtr[:, 0]) + 0.5 * Xtr[:, 1]
    grid = [1.2, 2.0, 6.0]
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(
        KernelRidge(kernel=DEKernel(bias=0.5), alpha=0.1),
        {"kernel__lam": grid},
        cv=cv,
        scoring="neg_mean_squared_error",
    ).fit(Xtr, y)
    # the same cross-validation by hand
    scores = []
    for lam in grid:
        k = DEKernel(lam=lam, bias=0.5)
        fold = [
            -np.mean((_krr_predict(k(Xtr[tr]), k(Xtr[te], Xtr[tr]), y[tr], 0.1) - y[te]) ** 2)
            for tr, te in cv.split(Xtr)
        ]
        scores.append(np.mean(fold))
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], scores, rtol=1e-8)
    assert search.best_params_["kernel__lam"] == grid[int(np.argmax(scores))]


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"lam": -1.0}, dekc.InputError, "lam must be a positive"),
        ({"feature_scale": 0.0}, dekc.InputError, "feature_scale must be a positive"),
        ({"input_scale": np.nan}, dekc.InputError, "input_scale must be a positive"),
        ({"lam": "big"}, dekc.InputError, "lam must be a positive"),
        ({"bias": np.inf}, dekc.InputError, "bias must be a finite"),
        ({"bias": -0.5, "bias_bounds": (0.1, 1.0)}, dekc.InputError, "bias_bounds='fixed'"),
        ({"lam_bounds": (0.0, 10.0)}, dekc.InputError, "lam_bounds must be"),
        ({"input_scale_bounds": (5.0, 1.0)}, dekc.InputError, "input_scale_bounds must be"),
        ({"lam_bounds": "free"}, dekc.InputError, "lam_bounds must be"),
        ({"steps": -1}, dekc.InputError, "steps must be"),
        ({"lam": 0.5}, dekc.ConvergenceError, "lam"),  # below the bound 1/√2 of gaussian + relu
        ({"reparam": "relu", "activation": "relu"}, dekc.LinkError, "exactly one of reparam"),
        ({"family": "no-such-family"}, dekc.UnknownFamilyError, "no-such-family"),
    ],
)
def test_bad_parameters(X, kwargs, error, match):
    with pytest.raises(error, match=match):
        DEKernel(**kwargs)(X)


def test_gradient_needs_square(X):
    with pytest.raises(ValueError, match="Y is None"):
        DEKernel()(X, X[:3], eval_gradient=True)


def test_bad_bounds_reported_by_theta():
    with pytest.raises(dekc.InputError, match="lam_bounds"):
        _ = DEKernel(lam_bounds=(-1.0, 2.0)).theta
