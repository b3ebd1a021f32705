"""The UCI data loader and the kernel ridge regression benchmark (experiments/uci_benchmark.py)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dekc
from dekc.datasets import DATA_DIR, UCI_DATASETS, citation, load_uci

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "uci_benchmark.py"
RECORDED = ROOT / "experiments" / "results" / "uci"

SHAPES = {
    "yacht": (308, 6),
    "diabetes": (442, 10),
    "energy_heating": (768, 8),
    "energy_cooling": (768, 8),
    "concrete": (1030, 8),
    "wine": (1599, 11),
}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("uci_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["uci_benchmark"] = module
    sys.path.insert(0, str(SCRIPT.parent))  # its helper module experiments/recorded.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def digests(folder):
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------- loader


@pytest.mark.parametrize("name", UCI_DATASETS)
def test_load_uci_shapes_and_values(name):
    X, y = load_uci(name)
    assert X.shape == SHAPES[name] and y.shape == (SHAPES[name][0],)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.isfinite(X)) and np.all(np.isfinite(y))
    assert np.all(X.std(axis=0) > 0)  # no constant column
    assert name in UCI_DATASETS and citation(name)


def test_load_uci_known_values():
    X, y = load_uci("yacht")
    assert X[0].tolist() == [-2.3, 0.568, 4.78, 3.99, 3.17, 0.125] and y[0] == 0.11
    heat, cool = load_uci("energy_heating"), load_uci("energy_cooling")
    assert np.array_equal(heat[0], cool[0]) and (heat[1][0], cool[1][0]) == (15.55, 21.33)
    X, y = load_uci("wine")
    assert set(np.unique(y)) <= set(range(11))
    X, y = load_uci("concrete")
    assert y[0] == 79.99


@pytest.mark.parametrize("bad", ["boston", "Yacht", "energy", "", None, 3])
def test_load_uci_bad_name(bad):
    with pytest.raises(ValueError, match="yacht, diabetes, energy_heating"):
        load_uci(bad)
    with pytest.raises(ValueError, match="choose one of"):
        citation(bad)


def test_bundled_files_and_citations():
    for f in (
        "yacht.txt",
        "energy.csv",
        "concrete.csv",
        "winequality-red.csv",
        "CITATION.md",
        "yacht.README.txt",
        "energy.README.txt",
        "concrete.README.txt",
        "wine.README.txt",
    ):
        assert (DATA_DIR / f).is_file(), f
    text = (DATA_DIR / "CITATION.md").read_text()
    for needle in ("Cortez", "I-Cheng Yeh", "Tsanas", "Gerritsma", "Efron"):
        assert needle in text
    assert "Cortez" in citation("wine") and citation("energy_heating") == citation("energy_cooling")
    assert "copyright" in citation("concrete").lower()


# ---------------------------------------------------------------------------------------------- protocol


def test_krr_matches_sklearn(bench):
    from sklearn.kernel_ridge import KernelRidge

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(60)
    K = dekc.nngp("relu", 2)(X, bias=0.3)
    tr, te = np.arange(45), np.arange(45, 60)
    for ridge in (0.05, 0.5):
        ours = bench.krr_predict(K[np.ix_(tr, tr)], y[tr], K[np.ix_(te, tr)], ridge)
        ref = KernelRidge(alpha=ridge, kernel="precomputed").fit(K[np.ix_(tr, tr)], y[tr]).predict(K[np.ix_(te, tr)])
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-11)


def test_split_and_folds(bench):
    y = np.arange(100, dtype=float)
    s = bench.make_split(y, seed=3)
    assert len(s.test) == 20 and len(s.train) == 80 and not set(s.train) & set(s.test)
    assert sorted(np.concatenate(s.folds).tolist()) == s.train.tolist() and len(s.folds) == 5
    np.testing.assert_allclose(s.y_train.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(s.y_train.std(), 1)
    np.testing.assert_array_equal(s.y_test, y[s.test])
    assert np.all(np.isnan(s.target(s.test)))  # the fold code cannot see test targets
    t = bench.make_split(y, seed=4)
    assert not np.array_equal(s.test, t.test)
    np.testing.assert_array_equal(bench.make_split(y, seed=3).test, s.test)


def test_cv_never_touches_the_test_part(bench):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 2))
    y = X[:, 0] + 0.1 * rng.standard_normal(50)
    K = dekc.nngp("relu", 1)(X, bias=1.0)
    split = bench.make_split(y, seed=0)
    clean = bench.fold_sse(K, split, (0.1, 0.5), range(5))
    poisoned = K.copy()
    poisoned[split.test, :] = np.nan
    poisoned[:, split.test] = np.nan
    np.testing.assert_array_equal(bench.fold_sse(poisoned, split, (0.1, 0.5), range(5)), clean)
    assert np.all(np.isfinite(clean))


def test_selection_uses_cv_not_test_error(bench):
    """A problem whose test part follows a different law: the setting with the best test error is
    not the one with the best CV error, and the benchmark must choose by CV."""
    rng = np.random.default_rng(2)
    n = 80
    X = np.sort(rng.uniform(-2, 2, n))[:, None]
    y = np.sin(3 * X[:, 0]) + 0.05 * rng.standard_normal(n)
    split = bench.make_split(y, seed=0)
    y_shifted = y.copy()
    y_shifted[split.test] = 0.0  # a flat test law: a heavily smoothed fit wins on test
    split_shifted = bench.make_split(y_shifted, seed=0)
    np.testing.assert_array_equal(split_shifted.y_train, split.y_train)
    d2 = (X - X.T) ** 2
    kernels = {ell: np.exp(-d2 / (2 * ell**2)) for ell in (0.05, 0.3, 3.0)}
    cv, test = {}, {}
    for ell, K in kernels.items():
        for ridge in (0.01, 1.0):
            cv[ell, ridge] = bench.cv_rmse(bench.fold_sse(K, split_shifted, (ridge,), range(5))[0], len(split.train))
            test[ell, ridge] = bench.test_rmse(K, split_shifted, ridge)
    chosen = bench.select(cv)
    best_test = min(test, key=test.get)
    assert chosen != best_test
    assert chosen == min(cv, key=cv.get) and chosen[0] == 0.3
    assert bench.select({"a": float("nan"), "b": 2.0, "c": 1.0}) == "c"
    assert bench.select({"a": float("nan")}) is None


def test_run_group_choice_is_independent_of_test_targets(bench):
    """Garbage test targets change the test RMSE but neither the CV scores nor the choice."""
    rng = np.random.default_rng(3)
    X = bench.standardise(rng.standard_normal((40, 2)))
    y = X[:, 0] ** 2 + 0.1 * rng.standard_normal(40)
    grid = dict(bench.QUICK_GRID, lam=(2.0,), input_scale=(1.0,), depth=(1, 2))
    results = []
    for garbage in (False, True):
        splits = [bench.make_split(y, seed) for seed in range(2)]
        if garbage:
            for s in splits:
                s.y_test = s.y_test + 100.0 * rng.standard_normal(len(s.y_test))
        problem = bench.Problem("toy", y, splits)
        results.append(bench.run_group(X, [problem], grid, keep=1.0, progress=lambda items, desc: items))
    clean, dirty = results[0]["toy"], results[1]["toy"]
    for seed in (0, 1):
        for kernel in bench.KERNELS:
            a, b = clean[seed][kernel], dirty[seed][kernel]
            assert (a["params"], a["ridge"], a["cv_rmse"]) == (b["params"], b["ridge"], b["cv_rmse"])
            assert b["test_rmse"] > 10 * a["test_rmse"]


def test_race_keeps_the_best_first_fold_settings(bench):
    scores = {i: float(v) for i, v in enumerate(np.linspace(1, 2, 100))}
    scores[5] = float("nan")
    kept = bench.survivors(scores, 0.05)
    assert kept == set(range(5)) | set(range(6, 21))  # at least MIN_KEEP = 20, NaN never kept
    assert bench.survivors(scores, 1.0) == set(scores) - {5}


def test_nn_kernels_match_dekc(bench):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((12, 3))
    X[5] = X[2]  # duplicate inputs take the diagonal value
    mats = bench.nn_kernels(X, (1, 2, 3), input_scale=2.0, bias=0.1, weight_variance=2.0)
    for L in (1, 2, 3):
        np.testing.assert_allclose(
            mats["NNGP", L],
            dekc.nngp("relu", L, weight_variance=2.0)(X, input_scale=2.0, bias=0.1),
            rtol=1e-12,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            mats["NTK", L],
            dekc.ntk("relu", L, weight_variance=2.0)(X, input_scale=2.0, bias=0.1),
            rtol=1e-12,
            atol=1e-12,
        )


def test_bias_sign_gives_the_same_kernels():
    """The benchmark scores b and −b once: every kernel depends on x̃·x̃' = s² x·x' + b² only."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((8, 3))
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    for kw in (dict(), dict(steps=(2, 3))):
        np.testing.assert_allclose(
            ker.gram(X, lam=2.0, bias=0.7, **kw), ker.gram(X, lam=2.0, bias=-0.7, **kw), rtol=1e-12, atol=1e-14
        )
    np.testing.assert_allclose(dekc.ntk("relu", 3)(X, bias=0.7), dekc.ntk("relu", 3)(X, bias=-0.7), rtol=1e-12)


def test_deker_steps_stack_is_one_call(bench):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((6, 2))
    mats = bench.run_job(
        bench.Job("deker", bench._frozen(lam=2.0, input_scale=1.0, bias=0.1, feature_scale=1.0)), X, bench.QUICK_GRID
    )
    assert [m[1][-1] for m in mats] == [("lam", 2.0)] * 3
    assert [dict(m[1])["T"] for m in mats] == ["fp", 2, 3]
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    np.testing.assert_allclose(mats[2][2], ker.gram(X, lam=2.0, bias=0.1, steps=3), rtol=1e-12)
    np.testing.assert_allclose(mats[0][2], ker.gram(X, lam=2.0, bias=0.1), rtol=1e-12)


def test_failed_kernels_are_recorded_not_raised(bench, monkeypatch):
    class Broken:
        def gram(self, X, **kw):
            raise dekc.ConvergenceError("no fixed point")

    monkeypatch.setattr(bench, "_DEKER", Broken())
    rng = np.random.default_rng(7)
    X = bench.standardise(rng.standard_normal((30, 2)))
    y = X[:, 0] + 0.1 * rng.standard_normal(30)
    grid = dict(bench.QUICK_GRID, lam=(2.0,), input_scale=(1.0,), bias=(0.0,), depth=(1,))
    problem = bench.Problem("toy", y, [bench.make_split(y, 0)])
    rows = bench.run_group(X, [problem], grid, keep=1.0, progress=lambda items, desc: items)
    assert "DEKer" not in rows["toy"][0] and {"NNGP", "NTK", "RBF"} <= set(rows["toy"][0])
    assert bench.count_invalid(problem)["DEKer"][0] == 3 * len(grid["ridge"])


def test_summary_and_wins(bench):
    records = [
        dict(dataset="d", seed=s, kernel=k, test_rmse=v)
        for s, vals in enumerate([(1.0, 2.0, 0.5, 3.0), (1.0, 0.5, 2.0, 3.0), (2.0, 1.0, 1.0, 3.0)])
        for k, v in zip(bench.KERNELS, vals)
    ]
    table, wins = bench.summarise(records)
    assert table["d"]["DEKer"][0] == pytest.approx(4 / 3)
    assert table["d"]["RBF"] == (3.0, 0.0)
    assert wins["d"] == {"NNGP": (1, 3), "NTK": (1, 3), "RBF": (3, 3)}
    text = bench.markdown_table(table, wins)
    assert "| d |" in text and "1/3 / 1/3 / 3/3" in text


# ---------------------------------------------------------------------------------------------- the script


def test_quick_run_writes_its_files_and_leaves_the_record_untouched(tmp_path):
    """``--quick`` without ``--out``, run from an empty folder: its files go to
    ./quick-results/uci/ and the recorded results stay byte for byte what they were."""
    before = digests(RECORDED)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 60
    assert digests(RECORDED) == before and {"RECORDED.txt", "results.csv", "table.md"} <= set(before)
    out = tmp_path / "quick-results" / "uci"
    assert {p.name for p in tmp_path.iterdir()} == {"quick-results"} and not (out / "RECORDED.txt").exists()
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4 and {r["dataset"] for r in rows} == {"yacht"}
    assert {r["kernel"] for r in rows} == {"DEKer", "NNGP", "NTK", "RBF"}
    assert all(float(r["test_rmse"]) > 0 and float(r["cv_rmse"]) > 0 for r in rows)
    table = (out / "table.md").read_text()
    assert "| yacht |" in table and "±" in table
    if importlib.util.find_spec("dekc.plot") is not None:
        assert (out / "chart.png").stat().st_size > 0


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_run_refuses_to_overwrite_recorded_results(bench, tmp_path, capsys, quick):
    """A run whose --out holds recorded results (a copy of the real ones) stops with an error that
    names the folder and both ways out, before computing or writing anything."""
    folder = tmp_path / "uci"
    shutil.copytree(RECORDED, folder)
    before = digests(folder)
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*(["--quick"] if quick else []), "--no-progress", "--out", str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{folder} holds the recorded results of a full run" in err
    assert "--out DIR" in err and "--overwrite" in err
    assert ("quick-results/uci/" in err) == quick
    assert digests(folder) == before
    assert bench.main(["--replot", "--out", str(folder)]) == 0  # only table.md and chart.png, from results.csv
    assert {k: v for k, v in digests(folder).items() if k not in ("table.md", "chart.png")} == {
        k: v for k, v in before.items() if k not in ("table.md", "chart.png")
    }


# ---------------------------------------------------------------------------------------------- --smooth


class FakeSmooth:
    """A stand-in for a compiled SMOOTH kernel (compiling the real ones takes 10–60 s, and a first
    Gram matrix seconds more): a Gaussian kernel whose width depends on the settings; ``fail_lam``
    raises a dekc error, as a setting without a fixed point does. ``steps=True``: a stand-in for
    the ReLU DEKer, which is also asked for T-step kernels."""

    def __init__(self, width, fail_lam=None, steps=False):
        self.width, self.fail_lam, self.steps, self.calls = width, fail_lam, steps, []

    def gram(self, X, *, lam, input_scale, bias, feature_scale, features, steps=None):
        assert features == "relu" and (self.steps or steps is None)  # the fixed point, the DEKer's features
        self.calls.append((lam, input_scale, bias, feature_scale))
        if lam == self.fail_lam:
            raise dekc.ConvergenceError("no fixed point")
        d2 = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
        K = feature_scale * np.exp(-(input_scale**2) * d2 / (2.0 * self.width * lam)) + bias**2
        return K if steps is None else np.stack([K ** (1.0 / T) for T in steps])


def test_smooth_option_adds_the_kernels(bench, monkeypatch):
    assert bench.SMOOTH_KERNELS == ("DEKer-logistic", "DEKer-tanh", "DEKer-GELU")
    assert bench.SMOOTH["DEKer-logistic"] == ("bernoulli", {"reparam": "identity"})
    assert bench.SMOOTH["DEKer-tanh"] == ("gaussian", {"activation": "tanh"})
    assert bench.SMOOTH["DEKer-GELU"] == ("gaussian", {"activation": "gelu"})
    assert not set(bench.SMOOTH_KERNELS) & set(bench.PEERS + bench.KERNELS)
    # without the option: the grids, jobs and setting counts of before
    for grid in (bench.GRID, bench.QUICK_GRID):
        assert "smooth" not in grid and bench.kernels_of(grid) == bench.KERNELS
        assert {job.kind for job in bench.make_jobs(grid)} == {"deker", "nn", "rbf"}
        assert tuple(bench.n_settings(grid)) == bench.KERNELS
    full = bench.with_smooth(bench.GRID)
    assert bench.kernels_of(full) == bench.KERNELS + bench.SMOOTH_KERNELS
    assert bench.n_settings(full) == {**bench.n_settings(bench.GRID), **dict.fromkeys(bench.SMOOTH_KERNELS, 72)}
    smooth_jobs = [job for job in bench.make_jobs(full) if job.kind == "smooth"]
    assert len(smooth_jobs) == 3 * 2 * 3 * 2 * 2
    assert [job for job in bench.make_jobs(full) if job.kind != "smooth"] == bench.make_jobs(bench.GRID)
    settings = [s for job in smooth_jobs for s in job.settings(full)]
    assert {name for name, _ in settings} == set(bench.SMOOTH_KERNELS)
    assert all(dict(params)["T"] == "fp" for _, params in settings)  # the fixed point only
    assert {dict(params)["feature_scale"] for _, params in settings} == {0.5, 1.0}
    # a toy run: the smooth kernels get rows of their own, failures are invalid settings, and the
    # ReLU DEKer and its peers are chosen exactly as without the option
    fakes = {
        "DEKer-logistic": FakeSmooth(0.5),
        "DEKer-tanh": FakeSmooth(1.0),
        "DEKer-GELU": FakeSmooth(2.0, fail_lam=4.0),
    }
    monkeypatch.setattr(bench, "_SMOOTH", fakes)
    monkeypatch.setattr(bench, "_DEKER", FakeSmooth(0.7, steps=True))
    rng = np.random.default_rng(8)
    X = bench.standardise(rng.standard_normal((30, 2)))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(30)
    grid = dict(bench.QUICK_GRID, lam=(2.0,), input_scale=(1.0,), bias=(0.0,), depth=(1,))
    small = dict(lam=(2.0, 4.0), input_scale=(1.0, 2.0), bias=(0.0,), feature_scale=(1.0,))
    quiet = dict(keep=1.0, progress=lambda items, desc: items)
    plain = bench.Problem("toy", y, [bench.make_split(y, s) for s in (0, 1)])
    smooth = bench.Problem("toy", y, [bench.make_split(y, s) for s in (0, 1)])
    rows = bench.run_group(X, [plain], grid, **quiet)["toy"]
    rows_smooth = bench.run_group(X, [smooth], bench.with_smooth(grid, small), **quiet)["toy"]
    for seed in (0, 1):
        assert set(rows[seed]) == set(bench.KERNELS)
        assert set(rows_smooth[seed]) == set(bench.KERNELS + bench.SMOOTH_KERNELS)
        for kernel in bench.KERNELS:
            assert rows_smooth[seed][kernel] == rows[seed][kernel]
        for kernel in bench.SMOOTH_KERNELS:
            row = rows_smooth[seed][kernel]
            assert row["params"]["T"] == "fp" and row["test_rmse"] > 0 and row["cv_rmse"] > 0
        assert rows_smooth[seed]["DEKer-GELU"]["params"]["lam"] == 2.0
    assert {c[0] for c in fakes["DEKer-tanh"].calls} == {2.0, 4.0}
    bad = bench.count_invalid(smooth, bench.kernels_of(bench.with_smooth(grid, small)))
    assert bad["DEKer-GELU"] == [2 * len(grid["ridge"]), 0]  # lam = 4 at both input scales
    assert bad["DEKer-tanh"] == bad["DEKer-logistic"] == [0, 0] and set(bench.count_invalid(plain)) == set(
        bench.KERNELS
    )


def test_smooth_runs_have_their_own_default_folder(bench, monkeypatch):
    """Without --out, a --smooth run goes to experiments/results/uci_smooth/ (quick-results/uci_smooth/
    with --quick), never to the recorded results of the runs without it."""
    assert bench.DEFAULT_OUT == RECORDED and bench.DEFAULT_SMOOTH_OUT == RECORDED.parent / "uci_smooth"
    seen = []

    def stop(folder, quick, overwrite, experiment, error):  # prepare() comes before any work
        seen.append((Path(folder), quick, experiment))
        raise SystemExit(0)

    monkeypatch.setattr(bench, "prepare", stop)
    for argv in ([], ["--smooth"], ["--quick"], ["--quick", "--smooth"], ["--smooth", "--out", "x"]):
        with pytest.raises(SystemExit):
            bench.main([*argv, "--no-progress"])
    assert seen == [
        (RECORDED, False, "uci"),
        (RECORDED.parent / "uci_smooth", False, "uci_smooth"),
        (Path("quick-results/uci"), True, "uci"),
        (Path("quick-results/uci_smooth"), True, "uci_smooth"),
        (Path("x"), False, "uci_smooth"),
    ]


def test_table_copes_with_results_without_the_smooth_kernels(bench, tmp_path):
    """--replot of the recorded results (no smooth kernels) gives their table.md byte for byte; with
    smooth-kernel rows the table gains their columns and the DEKer's win counts do not change."""
    folder = tmp_path / "uci"
    shutil.copytree(RECORDED, folder)
    assert bench.main(["--replot", "--out", str(folder)]) == 0
    assert (folder / "table.md").read_bytes() == (RECORDED / "table.md").read_bytes()
    records = bench.read_csv(RECORDED / "results.csv")
    table, wins = bench.summarise(records)
    assert bench.table_kernels(table) == bench.KERNELS
    extra = [
        dict(dataset=ds, seed=seed, kernel=kernel, test_rmse=str(v), T="fp")
        for ds in ("yacht", "wine")
        for seed in range(3)
        for kernel, v in zip(bench.SMOOTH_KERNELS, (0.1 + seed, 0.2 + seed, 0.3 + seed))
    ]
    table2, wins2 = bench.summarise(records + extra)
    assert wins2 == wins
    assert bench.table_kernels(table2) == bench.KERNELS + bench.SMOOTH_KERNELS
    assert table2["yacht"]["DEKer-logistic"] == (
        pytest.approx(1.1),
        pytest.approx(np.std([0.1, 1.1, 2.1], ddof=1) / 3**0.5),
    )
    assert "DEKer-tanh" not in table2["diabetes"]
    text = bench.markdown_table(table2, wins2)
    header = text.splitlines()[0]
    assert header == (
        "| data set | DEKer | NNGP | NTK | RBF | DEKer-logistic | DEKer-tanh | DEKer-GELU "
        "| DEKer wins vs NNGP / NTK / RBF |"
    )
    diabetes = next(line for line in text.splitlines() if line.startswith("| diabetes |"))
    assert diabetes.count("—") == 3 and diabetes.endswith("| 5/20 / 19/20 / 8/20 |")
    yacht = next(line for line in text.splitlines() if line.startswith("| yacht |"))
    assert "**1.1 ± 0.58**" in yacht and yacht.endswith("| 0/20 / 18/20 / 20/20 |")  # bold: lowest mean of all
    bench.write_outputs(folder, records + extra)
    assert "not counted in the wins" in (folder / "table.md").read_text()


@pytest.mark.slow
def test_smooth_job_is_the_fixed_point_gram(bench):
    """The real logistic kernel (bernoulli, R = identity) on a few points: a smooth job yields the
    fixed-point Gram matrix with the DEKer's ReLU features."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((5, 2))
    job = bench.Job(
        "smooth", bench._frozen(kernel="DEKer-logistic", lam=2.0, input_scale=1.0, bias=0.1, feature_scale=0.5)
    )
    ((name, params, K),) = bench.run_job(job, X, bench.with_smooth(bench.QUICK_GRID))
    assert name == "DEKer-logistic" and dict(params)["T"] == "fp"
    ker = dekc.compile_kernel("bernoulli", reparam="identity")
    np.testing.assert_allclose(K, ker.gram(X, lam=2.0, bias=0.1, feature_scale=0.5, features="relu"), rtol=1e-12)
