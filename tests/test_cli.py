"""The command line: the families table, derived links, typed errors with exit status 2."""

import subprocess
import sys

import dekc
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
    path.write_text('name = "geometric_cli"\nlog_partition = "-log(1 - exp(theta))"\n'
                    'natural_domain = "(-oo, 0)"\nsufficient_statistic = "y"\nsupport = "nonnegative integers"\n')
    assert main(["--family-file", str(path), "link", "geometric_cli", "--activation", "exp"]) == 0
    assert "R          log(1 - exp(-exp(eta)))" in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "dekc", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and dekc.__version__ in result.stdout


def test_demo_runs():
    """`make demo` runs examples/demo.py: it must finish and show the pipeline stages."""
    from pathlib import Path

    demo = Path(__file__).resolve().parent.parent / "examples" / "demo.py"
    result = subprocess.run([sys.executable, str(demo)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "poisson" in result.stdout and "log(log(exp(eta) + 1))" in result.stdout and "closed-form" in result.stdout
