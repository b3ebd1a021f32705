"""A DEKer in scikit-learn: kernel ridge regression on the bundled yacht data.

``dekc.sklearn.DEKernel`` is a scikit-learn Gaussian-process kernel: it works in ``KernelRidge``
(which calls ``kernel(X, Y)``), in ``GridSearchCV`` and in
``GaussianProcessRegressor(DEKernel(...) + WhiteKernel())``, which fits ``lam``, ``feature_scale``
and ``input_scale`` by marginal likelihood (gradients by implicit differentiation).

Run: ``python examples/sklearn_regression.py``.
"""

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from dekc.datasets import load_uci
from dekc.sklearn import DEKernel


def rmse(prediction, target):
    return float(np.sqrt(np.mean((prediction - target) ** 2)))


def main():
    X, y = load_uci("yacht")  # 308 hull designs, 6 inputs; target: residuary resistance
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    print(f"yacht: {len(X_train)} training and {len(X_test)} test points")
    print(f"test RMSE of the training mean: {rmse(y_train.mean(), y_test):.4f}")

    # the 2-step kernel with the setting cross-validation chose on yacht in experiments/uci_benchmark.py
    kernel = DEKernel("gaussian", reparam="relu", lam=1.0, input_scale=8.0, bias=1.0, feature_scale=0.1, steps=2)
    model = TransformedTargetRegressor(KernelRidge(kernel=kernel, alpha=0.05), transformer=StandardScaler())
    model.fit(X_train, y_train)  # the target is standardised on the training part
    print(f"kernel: {kernel}")
    print(f"test RMSE of KernelRidge(kernel, alpha=0.05): {rmse(model.predict(X_test), y_test):.4f}")


if __name__ == "__main__":
    main()
