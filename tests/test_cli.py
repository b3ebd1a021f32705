"""The command line: the families table, derived links, typed errors with exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

import dekc
import dekc.datasets
from dekc.cli import main


def test_families_table_lists_every_family(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    for name in dekc.families():
        assert name in out
    assert "canonical sigma" in out and "(-oo, 0)" in out


def test_link_prints_sigma_rho_and_R(capsys):
    assert main(["link", "gaussian", "--reparam", "relu"]) == 0
    out = capsys.readouterr().out
    assert "sigma      Max(0, eta)" in out and "rho        Heaviside(eta)" in out


def test_link_with_parameter_and_leading_minus(capsys):
    assert main(["link", "gamma", "--reparam=-exp(-eta)", "--param", "k=3"]) == 0
    assert "sigma      3" in capsys.readouterr().out


def test_errors_are_reported_not_raised(capsys):
    assert main(["link", "gaussian", "--activation", "-1"]) == 2
    assert "no valid R" in capsys.readouterr().err
    assert main(["link", "nonesuch", "--reparam", "relu"]) == 2
    assert "no family named 'nonesuch'" in capsys.readouterr().err


def test_family_file_option(tmp_path, capsys):
    path = tmp_path / "geometric.toml"
    path.write_text(
        'name = "geometric_cli"\nlog_partition = "-log(1 - exp(theta))"\n'
        'natural_domain = "(-oo, 0)"\nsufficient_statistic = "y"\nsupport = "nonnegative integers"\n'
    )
    assert main(["--family-file", str(path), "link", "geometric_cli", "--activation", "exp"]) == 0
    assert "R          log(1 - exp(-exp(eta)))" in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "dekc", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and dekc.__version__ in result.stdout


@pytest.mark.slow  # about three minutes on two cores; every stage it shows is tested on its own
def test_demo_runs(tmp_path):
    """`make demo` runs examples/demo.py: it must finish and show the pipeline stages."""
    from pathlib import Path

    demo = Path(__file__).resolve().parent.parent / "examples" / "demo.py"
    result = subprocess.run([sys.executable, str(demo)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "poisson" in result.stdout and "log(log(exp(eta) + 1))" in result.stdout and "closed-form" in result.stdout
    assert "ok = True" in result.stdout
    kernel = np.load(tmp_path / "demo_output" / "kernel.npy")
    assert kernel.shape == (100, 100) and np.allclose(kernel, kernel.T)
    assert "kernel ridge regression on yacht" in result.stdout
    rmse = {
        line.split()[0]: float(line.split("test RMSE")[1].split()[0])
        for line in result.stdout.splitlines()
        if "test RMSE" in line
    }
    assert set(rmse) == {"DEKer", "NNGP", "RBF"}
    y = dekc.datasets.load_uci("yacht")[1]
    assert all(0 < value < 0.5 * y.std() for value in rmse.values())  # far better than predicting the mean
    for figure in ("kernel.png", "convergence.png"):
        assert (tmp_path / "demo_output" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compile_writes_a_standalone_module(tmp_path, capsys):
    from pathlib import Path

    target = tmp_path / "k.py"
    assert main(["compile", "gaussian", "--reparam", "relu", "-o", str(target)]) == 0
    out = capsys.readouterr().out
    fields = dict(line.partition(" ")[::2] for line in out.splitlines() if not line.startswith(" "))
    fields = {label: value.strip() for label, value in fields.items()}
    assert "closed-form" in out and fields["wrote"].startswith(str(target))
    cache = fields["cache"]
    assert Path(cache).read_text() == target.read_text()
    # importable without dekc; at full correlation the pair update is the diagonal update
    code = (
        "import sys, importlib.util; sys.modules['dekc'] = None\n"
        "spec = importlib.util.spec_from_file_location('kernel', sys.argv[1])\n"
        "k = importlib.util.module_from_spec(spec); spec.loader.exec_module(k)\n"
        "print(float(k.update(0.7, 0.7, 0.7, 1.3, 0.2, 0.2, 2.0)), float(k.diagonal_update(0.7, 1.3, 0.2, 2.0)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    pair, diagonal = map(float, result.stdout.split())
    assert abs(pair - diagonal) <= 1e-15 * abs(diagonal)


def test_verify_prints_the_table_and_exits_0(capsys):
    assert main(["verify", "gaussian", "--reparam", "relu", "--dps", "16", "--points", "0", "--fixed-points", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("item") and set(out[1].replace(" ", "")) == {"-"}
    assert any(line.startswith("K_rho_rho_one_point") for line in out)
    assert (
        out[-1].startswith("verify gaussian (reparam Max(0, eta)) at 16 digits") and "all within tolerance" in out[-1]
    )


def test_verify_exits_1_for_a_wrong_kernel(monkeypatch, capsys):
    import types

    import dekc.cli

    ker = dekc.compile_kernel("gaussian", reparam="relu")
    module = types.SimpleNamespace(**vars(ker.module))
    module.K_sigma_sigma = lambda a, b, c: ker.module.K_sigma_sigma(a, b, c) * (1 + 1e-8)
    wrong = types.SimpleNamespace(
        module=module,
        family=ker.family,
        sigma=ker.sigma,
        rho=ker.rho,
        methods=ker.methods,
        error_bounds=ker.error_bounds,
        from_moments=ker.from_moments,
    )
    monkeypatch.setattr(dekc.cli, "compile_kernel", lambda *args, **kwargs: wrong)
    assert main(["verify", "gaussian", "--reparam", "relu", "--dps", "16", "--points", "0", "--fixed-points", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL (K_sigma_sigma)" in out.splitlines()[-1]


def test_compile_and_verify_report_bad_input(tmp_path, capsys):
    assert main(["compile", "nonesuch", "--reparam", "relu"]) == 2
    assert "no family named 'nonesuch'" in capsys.readouterr().err
    assert main(["verify", "gaussian", "--activation", "-1"]) == 2
    assert "no valid R" in capsys.readouterr().err
    assert main(["verify", "gaussian", "--reparam", "relu", "--dps", "8"]) == 2
    assert "dps must be an integer >= 15" in capsys.readouterr().err
    assert main(["compile", "gaussian", "--reparam", "relu", "-o", str(tmp_path / "missing" / "k.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dekc: error: cannot write the kernel module to") and "No such file" in err


# -- dekc gram ---------------------------------------------------------------------------------------


def test_gram_reads_csv_and_npy_and_writes_the_kernel(tmp_path, capsys):
    X = np.random.default_rng(3).normal(size=(6, 2))
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="u,v", comments="")
    np.save(tmp_path / "x.npy", X)
    expected = dekc.compile_kernel("gaussian", reparam="relu").gram(X, lam=3.0, bias=0.5)
    for name in ("x.csv", "x.npy"):
        out = tmp_path / f"K_{name}.npy"
        assert (
            main(
                [
                    "gram",
                    str(tmp_path / name),
                    "gaussian",
                    "--reparam",
                    "relu",
                    "--lam",
                    "3",
                    "--bias",
                    "0.5",
                    "-o",
                    str(out),
                    "-q",
                ]
            )
            == 0
        )
        np.testing.assert_array_equal(np.load(out), expected)
    assert "wrote" in capsys.readouterr().out
    # a second input set and a stack of T-step kernels
    out = tmp_path / "KT.npy"
    assert (
        main(
            [
                "gram",
                str(tmp_path / "x.csv"),
                "gaussian",
                "--reparam",
                "relu",
                "--y",
                str(tmp_path / "x.npy"),
                "--steps",
                "2,3",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        np.load(out), dekc.compile_kernel("gaussian", reparam="relu").gram(X, X, steps=(2, 3))
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2\n3,x\n", "line 2, column 2: 'x' is not a number"),
        ("1,2\n3\n", "line 2: 1 values where the first data row has 2"),
        ("a,b\n", "header but no data rows"),
        ("", "no data rows"),
        ("1,2\n3,nan\n", "line 2, column 2"),
        ("1,2\n,4\n", "an empty cell is not a number"),
    ],
)
def test_gram_reports_bad_files(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    assert (
        main(["gram", str(tmp_path / "bad.csv"), "gaussian", "--reparam", "relu", "-o", str(tmp_path / "K.npy")]) == 2
    )
    assert message in capsys.readouterr().err
    assert not (tmp_path / "K.npy").exists()


def test_gram_reports_bad_arguments(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    np.save(tmp_path / "inf.npy", np.array([[1.0, np.inf]]))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81")
    cases = [
        (["gram", str(tmp_path / "missing.csv")], "no such file"),
        (["gram", str(tmp_path / "strings.npy")], "expected a real numeric array"),
        (["gram", str(tmp_path / "inf.npy")], "row 1, column 2 is inf"),
        (["gram", str(tmp_path / "binary.csv")], "not a text file"),
        (["gram", str(tmp_path / "x.npy"), "-o", str(tmp_path / "K.txt")], "must be a .npy file"),
        (["gram", str(tmp_path / "x.npy"), "-o", str(tmp_path / "no" / "K.npy")], "does not exist"),
        (["gram", str(tmp_path / "x.npy"), "--y", str(tmp_path / "inf.npy")], "is inf"),
    ]
    for argv, message in cases:
        if "-o" not in argv:
            argv = argv + ["-o", str(tmp_path / "K.npy")]
        assert main(argv[:2] + ["gaussian", "--reparam", "relu"] + argv[2:]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        main(["gram", str(tmp_path / "x.npy"), "gaussian", "--reparam", "relu", "-o", "K.npy", "--lam", "-1"])


def test_gram_shows_a_progress_bar_for_large_inputs(tmp_path, monkeypatch):
    """More than one block: the bar (stderr) counts every entry; -q silences it."""
    monkeypatch.setattr(dekc.kernel, "_CHUNK", 256)  # every kernel built from now on uses small blocks
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 2)))
    argv = ["gram", str(tmp_path / "x.npy"), "gaussian", "--reparam", "relu", "-o", str(tmp_path / "K.npy")]
    seen = []
    monkeypatch.setattr("tqdm.auto.tqdm.update", lambda self, k: seen.append(k) or setattr(self, "n", self.n + k))
    assert main(argv) == 0
    assert sum(seen) == 40 * 41 // 2 and len(seen) == 4
    seen.clear()
    assert main(argv + ["-q"]) == 0
    assert not seen


def test_text_inputs_without_delimiter_and_vectors(tmp_path):
    from dekc.io import read_inputs

    (tmp_path / "x.txt").write_text(" 1.0  2.5\n# comment\n-3   4e-1\n")
    with pytest.raises(dekc.DekcError, match="line 2, column 1: '#'"):  # nothing is skipped silently
        read_inputs(tmp_path / "x.txt")
    (tmp_path / "y.txt").write_text("u v\n 1.0  2.5\n\n-3   4e-1\n")
    np.testing.assert_array_equal(read_inputs(tmp_path / "y.txt"), [[1.0, 2.5], [-3.0, 0.4]])
    np.save(tmp_path / "v.npy", np.arange(3))
    np.testing.assert_array_equal(read_inputs(tmp_path / "v.npy"), [[0.0], [1.0], [2.0]])
    (tmp_path / "s.tsv").write_text("1\t2\n3\t4\n")
    np.testing.assert_array_equal(read_inputs(tmp_path / "s.tsv"), [[1, 2], [3, 4]])
