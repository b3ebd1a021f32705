"""The example scripts run end to end and reproduce what they claim."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finite_width_quick(tmp_path_factory):
    """``examples/finite_width.py --quick`` run once in a subprocess: (output folder, stdout)."""
    out = tmp_path_factory.mktemp("finite_width")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "finite_width.py"), "--quick", "--no-progress",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def read_records(path):
    with open(path, encoding="utf-8") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_finite_width_quick_writes_files(finite_width_quick):
    out, stdout = finite_width_quick
    for name in ("error_vs_width.png", "heatmaps.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    header = [line for line in (out / "finite_width.csv").read_text(encoding="utf-8").splitlines()
              if line.startswith("#")]
    assert header[0].startswith("# command: python examples/finite_width.py --quick")
    assert any("slope log(frobenius) vs log d" in line for line in header)
    assert "finite_width.py --quick" in (out / "README.md").read_text(encoding="utf-8")
    assert "slope of log(relative Frobenius distance) against log d" in stdout


def test_finite_width_error_decreases_and_alignment_approaches_one(finite_width_quick):
    out, _ = finite_width_quick
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
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import finite_width as fw
    finally:
        sys.path.pop(0)
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
