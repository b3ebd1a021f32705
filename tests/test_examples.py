"""The example scripts (examples/) and the finite-width experiment (experiments/) run end to
end and reproduce what they claim; quick runs never touch recorded results."""

import csv
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
RECORDED = EXPERIMENTS / "results" / "finite_width"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def digests(folder):
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def import_experiment(name):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def finite_width_quick(tmp_path_factory):
    """``experiments/finite_width.py --quick`` with its default output folder, run once in a
    subprocess from an empty folder: (output folder, stdout, recorded digests before, after)."""
    cwd = tmp_path_factory.mktemp("finite_width_cwd")
    before = digests(RECORDED)
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "finite_width.py"), "--quick", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "quick-results" / "finite_width", proc.stdout, before, digests(RECORDED)


def read_records(path):
    with open(path, encoding="utf-8") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_finite_width_quick_writes_files(finite_width_quick):
    out, stdout, _, _ = finite_width_quick
    for name in ("error_vs_width.png", "heatmaps.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    header = [
        line for line in (out / "finite_width.csv").read_text(encoding="utf-8").splitlines() if line.startswith("#")
    ]
    assert header[0].startswith("# command: python experiments/finite_width.py --quick")
    assert any("slope log(frobenius) vs log d" in line for line in header)
    assert "finite_width.py --quick" in (out / "README.md").read_text(encoding="utf-8")
    assert "slope of log(relative Frobenius distance) against log d" in stdout


def test_finite_width_error_decreases_and_alignment_approaches_one(finite_width_quick):
    out, _, _, _ = finite_width_quick
    records = read_records(out / "finite_width.csv")
    widths = sorted({int(r["d"]) for r in records})
    assert widths == [16, 32, 64, 128] and len(records) == 3 * len(widths)
    for r in records:
        assert int(r["m"]) == int(np.ceil(int(r["d"]) ** 1.5 - 1e-9))

    def mean_over_seeds(key):
        return np.array([np.mean([float(r[key]) for r in records if int(r["d"]) == d]) for d in widths])

    for key in ("frobenius", "operator"):
        err = mean_over_seeds(key)
        assert err[-1] < 0.6 * err[0], (key, err)  # a factor 8 in d: ~1/√8 ≈ 0.35 expected
        slope = np.polyfit(np.log(widths), np.log(err), 1)[0]
        assert -1.0 < slope < -0.25, (key, slope)
    align = mean_over_seeds("alignment")
    assert align[-1] > align[0] and align[-1] > 0.9 and np.all(align <= 1 + 1e-12)
    # against the T-step kernel (the exact infinite-width limit of the same SGD) the numbers agree
    # with those against the fixed point: the truncation after T = 30 steps is ~1e-9
    assert np.allclose(mean_over_seeds("frobenius_T"), mean_over_seeds("frobenius"), rtol=1e-4)


def test_finite_width_simulation_matches_one_step_limit():
    """One SGD step from the shared start: averaging the finite-width inner products over seeds
    approaches the exact 1-step kernel (the correspondence of the features with ``gram``)."""
    fw = import_experiment("finite_width")
    import dekc

    ker = dekc.compile_kernel("gaussian", reparam="relu")
    X = fw.grid(4)
    K1 = ker.gram(X, lam=6.0, features="identity", steps=1, psi0="constant")
    sigma, rho = fw._numpy_function(ker.sigma), fw._numpy_function(ker.rho)
    sims = [fw.simulate(X, 64, steps=1, seed=s, sigma=sigma, rho=rho) for s in range(24)]
    single = np.mean([fw.distances(K, K1)["frobenius"] for K in sims])
    averaged = fw.distances(np.mean(sims, axis=0), K1)["frobenius"]
    assert averaged < 0.4 * single  # the errors are fluctuations around the limit (~1/√24 ≈ 0.2 expected)
    assert averaged < 0.1


# ---------------------------------------------------------------------------------------------- recorded results


def test_finite_width_quick_default_leaves_the_record_untouched(finite_width_quick):
    """``--quick`` without ``--out`` writes to ./quick-results/finite_width/, and the recorded
    results in experiments/results/finite_width/ stay byte for byte what they were."""
    out, _, before, after = finite_width_quick
    assert after == before
    assert {"RECORDED.txt", "finite_width.csv", "README.md", "error_vs_width.png", "heatmaps.png"} <= set(before)
    assert {p.name for p in out.iterdir()} == {"finite_width.csv", "README.md", "error_vs_width.png", "heatmaps.png"}
    assert (out / "finite_width.csv").read_bytes() != (RECORDED / "finite_width.csv").read_bytes()


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_finite_width_refuses_to_overwrite_recorded_results(tmp_path, capsys, quick):
    """A run whose --out holds recorded results (a copy of the real ones) stops with an error that
    names the folder and both ways out, before computing or writing anything."""
    fw = import_experiment("finite_width")
    folder = tmp_path / "finite_width"
    shutil.copytree(RECORDED, folder)
    before = digests(folder)
    with pytest.raises(SystemExit) as exit_info:
        fw.main([*(["--quick"] if quick else []), "--no-progress", "--out", str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{folder} holds the recorded results of a full run" in err
    assert "--out DIR" in err and "--overwrite" in err
    assert ("quick-results/finite_width/" in err) == quick
    assert digests(folder) == before


def test_recorded_results_are_recognised(tmp_path):
    """The marker file, or (without it) a CSV whose ``# command:`` header is not a quick run's."""
    recorded = import_experiment("recorded")
    for folder in (RECORDED, EXPERIMENTS / "results" / "uci"):
        assert (folder / recorded.MARKER).is_file() and recorded.recorded_run(folder)
    assert recorded.recorded_run(tmp_path / "missing") is None and recorded.recorded_run(tmp_path) is None
    assert recorded.default_out("uci", True) == Path("quick-results", "uci")
    assert recorded.default_out("uci", False) == EXPERIMENTS / "results" / "uci"

    csv_file = tmp_path / "finite_width.csv"
    csv_file.write_text("# command: python experiments/finite_width.py --quick --seeds 2\nd,m\n")
    assert recorded.recorded_run(tmp_path) is None  # a quick run's results are scratch
    csv_file.write_text("# command: python experiments/finite_width.py --seeds 2\nd,m\n")
    assert recorded.recorded_run(tmp_path) == "python experiments/finite_width.py --seeds 2"

    errors = []
    csv_file.unlink()
    recorded.mark_recorded(tmp_path, "python experiments/uci_benchmark.py --seeds 3")
    assert recorded.recorded_run(tmp_path) == "python experiments/uci_benchmark.py --seeds 3"
    with pytest.raises(SystemExit):
        recorded.prepare(tmp_path, True, False, "uci", errors.append)
    assert "quick-results/uci/" in errors[0] and (tmp_path / recorded.MARKER).exists()
    recorded.prepare(tmp_path, False, True, "uci", errors.append)  # a full run replaces the marker at its end
    assert (tmp_path / recorded.MARKER).exists()
    recorded.prepare(tmp_path, True, True, "uci", errors.append)  # a quick run over a record: no longer one
    assert not (tmp_path / recorded.MARKER).exists() and len(errors) == 1


# ---------------------------------------------------------------------------------------------- examples/


def _numbers(stdout, label):
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    return np.array([float(v) for v in line[len(label) :].split()])


def _check_quickstart(stdout):
    # ReLU features, bias b: c(x, x) = r²/2 and μ(x) = r/√(2π) with r = |x̃|, so the diagonal fixed
    # point a = (a/2 − 2μ√a/√(2π) + c/2)/λ² is a = r² ((√(1/π² + λ² − 1/2) − 1/π)/(2λ² − 1))²
    X, lam, bias = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [-1.0, 1.0]]), 2.0, 1.0
    r2 = np.sum(X * X, axis=1) + bias**2
    expected = r2 * ((np.sqrt(1 / np.pi**2 + lam**2 - 0.5) - 1 / np.pi) / (2 * lam**2 - 1)) ** 2
    np.testing.assert_allclose(_numbers(stdout, "diagonal:"), expected, rtol=1e-12)
    assert f"lambda bound: {1 / np.sqrt(2):.6f}" in stdout
    assert "symmetric: True" in stdout and "verify: ok = True" in stdout


def _check_custom_family(stdout):
    # A = vθ²/2, R = ReLU: σ = v·ReLU, ρ = H; linear features, μ = 0: a = |x|²/(2λ² − v²), λ > v/√2
    X, lam, v = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]), 3.0, 2.0
    np.testing.assert_allclose(
        _numbers(stdout, "diagonal at lam = 3:"), np.sum(X * X, axis=1) / (2 * lam**2 - v**2), rtol=1e-12
    )
    assert "registered normal_v" in stdout and "sigma = 2*eta*Heaviside(eta)" in stdout
    assert f"lambda bound: {v / np.sqrt(2):.6f}" in stdout and "verify: ok = True" in stdout


def _check_sklearn_regression(stdout):
    from sklearn.model_selection import train_test_split

    from dekc.datasets import load_uci

    X, y = load_uci("yacht")
    _, _, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    baseline = float(np.sqrt(np.mean((y_test - y_train.mean()) ** 2)))
    assert f"test RMSE of the training mean: {baseline:.4f}" in stdout
    rmse = float(re.search(r"test RMSE of KernelRidge\(kernel, alpha=0.05\): (\S+)", stdout).group(1))
    assert 0 < rmse < 0.2 * baseline  # about 1.3 against 12.2


def _check_large_data(stdout):
    assert "first run: computed 6, kept 0 blocks" in stdout and "rerun: computed 0, kept 6 blocks" in stdout
    assert float(re.search(r"zarr store against gram: max relative difference (\S+)", stdout).group(1)) <= 1e-15
    assert float(re.search(r"dask row sums against gram: max relative difference (\S+)", stdout).group(1)) <= 1e-12
    baseline = float(re.search(r"test RMSE of the training mean: (\S+)", stdout).group(1))
    small, large = (float(v) for v in re.findall(r"Nystrom m = \d+: test RMSE (\S+)", stdout))
    assert large < small < 0.5 * baseline  # more landmarks approximate better


@pytest.mark.parametrize(
    "name, check",
    [
        ("quickstart", _check_quickstart),
        ("custom_family", _check_custom_family),
        # the scikit-learn adapter has its own tests; this example runs with the slow ones
        pytest.param("sklearn_regression", _check_sklearn_regression, marks=pytest.mark.slow),
        # dekc.blocks and dekc.nystrom have their own tests at small sizes
        pytest.param("large_data", _check_large_data, marks=pytest.mark.slow),
    ],
    ids=["quickstart", "custom_family", "sklearn_regression", "large_data"],
)
def test_example_runs_and_its_numbers_check_out(name, check, tmp_path):
    """Each short example runs on its own and prints numbers the test derives independently."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check(proc.stdout)
    assert not list(tmp_path.iterdir())  # examples leave nothing behind
    assert len((ROOT / "examples" / f"{name}.py").read_text(encoding="utf-8").splitlines()) < 60
