"""dekc.plot: figures are written as PNGs headless, have the expected structure, and bad input is refused."""

import numpy as np
import pytest

import dekc
from dekc.errors import InputError

plot = pytest.importorskip("dekc.plot")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=2000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def small_kernel(n=6, seed=0):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T / n


TABLE = {
    "yacht": {"DEKer": (0.52, 0.04), "NNGP": (0.61, 0.05), "RBF": (0.90, 0.07)},
    "concrete": {"DEKer": (5.1, 0.2), "NNGP": (5.0, 0.3), "RBF": (5.6, 0.2)},
    "wine": {"DEKer": (0.60, 0.01), "RBF": (0.62, 0.01)},
}  # one kernel missing


def test_no_import_from_package():
    import subprocess
    import sys

    code = "import sys, dekc; print('dekc.plot' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_backend_is_noninteractive():
    """Run in a fresh interpreter without MPLBACKEND: dekc.plot selects Agg."""
    import os
    import subprocess
    import sys

    code = "import numpy, dekc.plot, matplotlib; dekc.plot.heatmap(numpy.eye(3)); print(matplotlib.get_backend())"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().lower() == "agg"


def test_benchmark_chart_normalised(tmp_path):
    path = tmp_path / "deep" / "dir" / "bench.png"
    fig = plot.benchmark_chart(TABLE, path=path, title="UCI")
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.containers) >= 3  # one bar container per kernel (+ error bar containers)
    bars = [c for c in ax.containers if c.__class__.__name__ == "BarContainer"]
    assert len(bars) == 3 and all(len(b) == 3 for b in bars)
    heights = {b.get_label(): [p.get_height() for p in b] for b in bars}
    # each data set is divided by its best mean: the best bar of every group is exactly 1
    for g in range(3):
        group = [h[g] for h in heights.values() if np.isfinite(h[g])]
        assert min(group) == pytest.approx(1.0)
    assert heights["NNGP"][0] == pytest.approx(0.61 / 0.52)
    assert np.isnan(heights["NNGP"][2])  # missing kernel: a gap
    assert "best RMSE in data set" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(TABLE)


def test_benchmark_chart_unknown_standard_error():
    fig = plot.benchmark_chart({"yacht": {"DEKer": (0.5, float("nan")), "RBF": (0.7, 0.1)}})
    bars = [c for c in fig.axes[0].containers if c.__class__.__name__ == "BarContainer"]
    assert [b[0].get_height() for b in bars] == pytest.approx([1.0, 1.4])


def test_benchmark_chart_raw(tmp_path):
    fig = plot.benchmark_chart(TABLE, normalise=False, metric="RMSE", path=tmp_path / "raw.png")
    assert_png(tmp_path / "raw.png")
    bars = [c for c in fig.axes[0].containers if c.__class__.__name__ == "BarContainer"]
    assert bars[0][1].get_height() == pytest.approx(5.1)
    assert fig.axes[0].get_ylabel() == "RMSE"


@pytest.mark.parametrize(
    "table, match",
    [
        ({}, "non-empty dict"),
        ([("yacht", 1.0)], "non-empty dict"),
        ({"yacht": {}}, "yacht"),
        ({"yacht": {"DEKer": 0.5}}, "pair"),
        ({"yacht": {"DEKer": (float("nan"), 0.1)}}, "finite"),
        ({"yacht": {"DEKer": (0.5, float("inf"))}}, "finite"),
        ({"yacht": {"DEKer": (0.5, -0.1)}}, "non-negative"),
        ({"yacht": {"DEKer": (0.0, 0.1)}}, "normalise=False"),
    ],
)
def test_benchmark_chart_bad_input(table, match):
    with pytest.raises(InputError, match=match):
        plot.benchmark_chart(table)


def test_heatmap_and_heatmaps(tmp_path):
    K = small_kernel()
    fig = plot.heatmap(K, title="K", path=tmp_path / "k.png")
    assert_png(tmp_path / "k.png")
    assert len(fig.axes) == 2  # the image and its colour bar
    assert np.allclose(fig.axes[0].images[0].get_array(), K)
    fig = plot.heatmap(K, colorbar=False)
    assert len(fig.axes) == 1

    kernels = {"finite": K, "limit": small_kernel(seed=1)}
    fig = plot.heatmaps(kernels, path=tmp_path / "pair.png", title="two")
    assert_png(tmp_path / "pair.png")
    assert len(fig.axes) == 3  # two panels, one shared colour bar
    clims = {fig.axes[k].images[0].get_clim() for k in range(2)}
    assert len(clims) == 1  # one colour scale
    lo, hi = clims.pop()
    assert lo == pytest.approx(min(v.min() for v in kernels.values()))
    assert hi == pytest.approx(max(v.max() for v in kernels.values()))
    fig = plot.heatmaps(kernels, shared_scale=False)
    assert len(fig.axes) == 4  # a colour bar per panel


def test_heatmap_into_given_axes():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    assert plot.heatmap(small_kernel(), ax=axes[1]) is fig


@pytest.mark.parametrize(
    "K, match",
    [
        (np.ones((3, 4)), "square"),
        (np.ones(3), "square"),
        (np.zeros((0, 0)), "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
        ([["a", "b"], ["c", "d"]], "numbers"),
    ],
)
def test_heatmap_bad_input(K, match):
    with pytest.raises(InputError, match=match):
        plot.heatmap(K)


def test_heatmaps_bad_input():
    with pytest.raises(InputError, match="non-empty dict"):
        plot.heatmaps({})
    with pytest.raises(InputError, match="'b'.*square"):
        plot.heatmaps({"a": np.eye(2), "b": np.ones((2, 3))})


def test_convergence_forms(tmp_path):
    r = 0.5 ** np.arange(1, 21)
    fig = plot.convergence(r, path=tmp_path / "one.png", title="fixed point")
    assert_png(tmp_path / "one.png")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and len(ax.lines) == 1
    assert np.array_equal(ax.lines[0].get_xdata(), np.arange(1, 21))

    fig = plot.convergence([r, r[:10] ** 2], labels=["a", "b"])  # ragged list
    assert [line.get_label() for line in fig.axes[0].lines] == ["a", "b"]
    fig = plot.convergence({"lam=4": r, "lam=6": np.r_[r[:5], 0.0]})  # an exact zero is drawn
    assert len(fig.axes[0].lines) == 2
    assert np.all(fig.axes[0].lines[1].get_ydata() > 0)
    fig = plot.convergence(np.stack([r, r / 2]))  # a 2-d array: one line per row
    assert len(fig.axes[0].lines) == 2


@pytest.mark.parametrize(
    "residuals, kwargs, match",
    [
        ([], {}, "non-empty"),
        ([1.0, -0.5], {}, "non-negative"),
        ([1.0, np.nan], {}, "non-negative"),
        ([[1.0, 0.5], [0.3, 0.1]], {"labels": ["only one"]}, "labels"),
        ({"a": [[1.0]]}, {}, "1-d"),
        ("abc", {}, "sequence"),
    ],
)
def test_convergence_bad_input(residuals, kwargs, match):
    with pytest.raises(InputError, match=match):
        plot.convergence(residuals, **kwargs)


def test_fixed_point_residuals_converge(tmp_path):
    """The T-step kernel reaches the DEKer: the residual falls geometrically to ~0."""
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.array([[-5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [5.0, 5.0], [1.0, 4.0], [-3.0, 2.0]])
    steps = 20
    r = plot.fixed_point_residuals(ker, X, lam=6.0, steps=steps)
    assert r.shape == (steps,) and r.dtype == np.float64
    assert np.all(np.diff(r[2:]) < 0)  # strictly decreasing once the transient is over
    assert r[-1] < 1e-5 * r[0] and r[-1] < 1e-6
    # an independent check of one entry of the definition
    K_star = ker.gram(X, lam=6.0)
    K_5 = ker.gram(X, lam=6.0, steps=5, psi0="input")
    d = np.sqrt(np.diag(K_star))
    assert r[4] == pytest.approx(np.max(np.abs(K_5 - K_star) / np.outer(d, d)), rel=1e-12)
    fig = plot.convergence({"gaussian + relu, lam = 6": r}, path=tmp_path / "conv.png")
    assert_png(tmp_path / "conv.png")
    assert len(fig.axes[0].lines) == 1


def test_fixed_point_residuals_bad_input():
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = np.array([[1.0, 2.0], [3.0, -1.0]])
    with pytest.raises(InputError, match="steps must be a whole number between 1 and"):
        plot.fixed_point_residuals(ker, X, lam=6.0, steps=0)
    with pytest.raises(InputError, match="psi0"):
        plot.fixed_point_residuals(ker, X, lam=6.0, steps=3, psi0="constant")
    with pytest.raises(InputError):
        plot.fixed_point_residuals(ker, np.ones((2, 2, 2)), lam=6.0, steps=3)
