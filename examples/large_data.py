"""Gram matrices past memory, and Nyström regression: dekc.blocks and dekc.nystrom.

A Gram matrix written block by block into a zarr array (a rerun resumes it), the same blocks as a
lazy dask.array, and Nyström kernel ridge regression on 20,000 points. Needs the ``large`` extra
(``pip install 'dekc[large]'``). Run: ``python examples/large_data.py``.
"""

import tempfile
from pathlib import Path

import numpy as np

import dekc
from dekc.blocks import gram_dask, gram_to_zarr
from dekc.sklearn import DEKNystroemRegressor


def main():
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 5))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "K.zarr"
        K = gram_to_zarr(ker, X, out=path, block=1024, lam=2.0)  # 6 blocks on and above the diagonal
        again = gram_to_zarr(ker, X, out=path, block=1024, lam=2.0)  # everything on disk already
        for name, run in (("first run", K.attrs["dekc_runs"][-1]), ("rerun", again.attrs["dekc_runs"][-1])):
            print(f"{name}: computed {run['computed_blocks']}, kept {run['reused_blocks']} blocks")
        exact = ker.gram(X, lam=2.0)
        scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
        print(f"zarr store against gram: max relative difference {np.max(np.abs(K[:] - exact) / scale):.1e}")
    rows = gram_dask(ker, X, block=1024, lam=2.0).sum(axis=1).compute()  # lazy blocks, any scheduler
    print(f"dask row sums against gram: max relative difference {np.max(np.abs(rows / exact.sum(axis=1) - 1)):.1e}")

    def target(Z):
        return np.sin(1.5 * Z[:, 0]) + 0.3 * Z[:, 1] ** 2

    X, X_test = rng.standard_normal((20000, 5)), rng.standard_normal((2000, 5))
    y = target(X) + 0.1 * rng.standard_normal(len(X))
    print(f"test RMSE of the training mean: {np.sqrt(np.mean((target(X_test) - y.mean()) ** 2)):.4f}")
    for m in (100, 400):
        model = DEKNystroemRegressor(n_components=m, landmarks="kmeans", alpha=1e-2, input_scale=0.5, bias=1.0)
        prediction = model.fit(X, y).predict(X_test)
        print(f"Nystrom m = {m}: test RMSE {np.sqrt(np.mean((prediction - target(X_test)) ** 2)):.4f}")


if __name__ == "__main__":
    main()
