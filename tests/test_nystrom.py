"""Nyström approximation (dekc.nystrom and the scikit-learn estimators): exact when every input
is a landmark, closer as landmarks are added, streamed in blocks with the same result."""

import numpy as np
import pytest

import dekc
from dekc import InputError
from dekc.nystrom import NystromMap, NystromRidge, choose_landmarks

PARAMS = dict(lam=2.0, input_scale=0.7, bias=0.5)


@pytest.fixture(scope="module")
def relu():
    return dekc.compile_kernel("gaussian", reparam="relu")


def _data(n, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.sin(1.5 * X[:, 0]) + 0.3 * X[:, 1] ** 2 + 0.05 * rng.normal(size=n)


def test_every_input_a_landmark_is_exact(relu):
    X, y = _data(150)
    fmap = NystromMap(relu, X, PARAMS, rcond=0.0).fit()
    K = relu.gram(X, **PARAMS)
    phi = fmap.features(X, block=64)
    # φφᵀ = K_XZ K_ZZ⁻¹ K_ZX = K when Z = X
    np.testing.assert_allclose(phi @ phi.T, K, rtol=0, atol=1e-9 * np.abs(K).max())
    # and the ridge solution is exact kernel ridge regression: K(K + αI)⁻¹y
    alpha = 1e-2
    model = NystromRidge(fmap, alpha).fit(X, y, block=64)
    exact = K @ np.linalg.solve(K + alpha * np.eye(len(y)), y)
    np.testing.assert_allclose(model.predict(X, block=64), exact, rtol=0, atol=1e-7)


def test_more_landmarks_approximate_better(relu):
    X, _ = _data(400, seed=1)
    K = relu.gram(X, **PARAMS)
    errors = {}
    for method in ("uniform", "kmeans"):
        for m in (10, 40):
            phi = NystromMap(relu, choose_landmarks(X, m, method), PARAMS).fit().features(X)
            errors[method, m] = np.linalg.norm(phi @ phi.T - K) / np.linalg.norm(K)
        assert errors[method, 10] > errors[method, 40]
    # k-means centres cover the inputs more evenly than a uniform draw of the same size
    assert errors["kmeans", 10] < errors["uniform", 10] and errors["kmeans", 40] < errors["uniform", 40]


def test_blocks_stream_the_same_normal_equations(relu):
    X, y = _data(500, seed=2)
    fmap = NystromMap(relu, choose_landmarks(X, 50, "kmeans"), PARAMS).fit()
    phi = fmap.features(X, block=500)
    gram, cross = fmap.normal_equations(X, y, block=64)
    np.testing.assert_allclose(gram, phi.T @ phi, rtol=1e-12, atol=1e-12 * np.abs(gram).max())
    np.testing.assert_allclose(cross, phi.T @ y, rtol=1e-12, atol=1e-12 * np.abs(cross).max())
    # the cross kernel's blocks are those of the whole cross kernel
    np.testing.assert_allclose(phi, relu.gram(X, fmap.landmarks, **PARAMS) @ fmap.components, rtol=0, atol=1e-12)


def test_predictive_deviation(relu):
    X, y = _data(300, seed=3)
    model = NystromRidge(NystromMap(relu, choose_landmarks(X, 40), PARAMS).fit(), 1e-2).fit(X, y)
    mean, std = model.predict(X[:20], return_std=True)
    np.testing.assert_array_equal(mean, model.predict(X[:20]))
    assert np.all(std > 0) and np.all(np.isfinite(std))
    # the subset-of-regressors variance: α φᵀ(ΦᵀΦ + αI)⁻¹ φ, computed here directly
    fmap = model.feature_map
    Phi, phi = fmap.features(X), fmap.features(X[:20])
    A = Phi.T @ Phi + 1e-2 * np.eye(Phi.shape[1])
    np.testing.assert_allclose(std**2, 1e-2 * np.sum(phi * np.linalg.solve(A, phi.T).T, axis=1), rtol=1e-8)


def test_landmark_choice_and_errors(relu):
    X, y = _data(100)
    Z = choose_landmarks(X, 30, "uniform", seed=4)
    assert Z.shape == (30, 3) and len({tuple(r) for r in Z}) == 30
    assert np.array_equal(Z, choose_landmarks(X, 30, "uniform", seed=4))
    assert all(any(np.array_equal(z, x) for x in X) for z in Z)
    C = choose_landmarks(X, 8, "kmeans")
    assert C.shape == (8, 3) and np.all(np.isfinite(C))
    with pytest.raises(InputError, match="at least as many inputs"):
        choose_landmarks(X, 101)
    with pytest.raises(InputError, match="landmarks"):
        choose_landmarks(X, 10, "leverage")
    with pytest.raises(InputError, match="not fitted"):
        NystromMap(relu, Z, PARAMS).features(X)
    with pytest.raises(InputError, match="not fitted"):
        NystromRidge(NystromMap(relu, Z, PARAMS).fit()).predict(X)
    with pytest.raises(InputError, match="y must be"):
        NystromMap(relu, Z, PARAMS).fit().normal_equations(X, y[:-1])


def test_sklearn_estimators():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from dekc.sklearn import DEKNystroem, DEKNystroemRegressor

    assert sklearn
    X, y = _data(240, seed=5)
    pipe = make_pipeline(DEKNystroem(n_components=40, input_scale=0.7, bias=0.5), Ridge(alpha=1e-2))
    search = GridSearchCV(pipe, {"deknystroem__lam": [1.5, 3.0], "deknystroem__landmarks": ["uniform", "kmeans"]}, cv=2)
    search.fit(X, y)
    assert search.best_score_ > 0.6  # R² on held-out folds of 120 points
    transformer = search.best_estimator_.named_steps["deknystroem"]
    assert transformer.transform(X[:7]).shape == (7, transformer.components_.shape[1])
    model = DEKNystroemRegressor(n_components=60, alpha=1e-2, input_scale=0.7, bias=0.5)
    assert clone(model).get_params() == model.get_params()
    fitted = GridSearchCV(model, {"alpha": [1e-3, 1e-1]}, cv=2).fit(X, y).best_estimator_
    mean, std = fitted.predict(X[:5], return_std=True)
    assert mean.shape == std.shape == (5,)
    # the regressor is the Nyström ridge of its own landmarks
    ref = NystromRidge(
        NystromMap(fitted.model_.feature_map.kernel, fitted.landmarks_, fitted.model_.feature_map.params).fit(),
        fitted.alpha,
    ).fit(X, y)
    np.testing.assert_allclose(fitted.predict(X[:5]), ref.predict(X[:5]), rtol=1e-10, atol=1e-12)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        DEKNystroem().transform(X)
