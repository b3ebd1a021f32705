"""The README's "register your own family" walk-through works as written: the TOML block is
saved as a file and the Python block runs unchanged in that folder."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = README.read_text().split("## Register your own family")[1].split("\n## ")[0]


@pytest.mark.slow  # about 100 s on two cores (it fits a Gaussian process); its stages are tested on their own
def test_readme_family_walkthrough(tmp_path, monkeypatch, capsys):
    toml = re.search(r"```toml\n# normal_v.toml\n(.*?)```", SECTION, re.S).group(1)
    code = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)
    (tmp_path / "normal_v.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), namespace)  # the walk-through itself
    out = capsys.readouterr().out
    assert "2*eta*Heaviside(eta)" in out
    ker, gp = namespace["ker"], namespace["gp"]
    assert set(ker.methods.values()) == {"closed-form"}
    # independent check of the compiled kernel: A = v θ²/2 with R = relu is the Gaussian
    # family: σ = v relu, ρ = H, so with μ = 0 the diagonal solves a = (v² a + c)/(2λ²), i.e.
    # a = c/(2λ² − v²), and it exists for λ > v/√2
    v, lam, c = 2.0, 3.0, 0.7
    K = ker.from_moments(np.array([[c]]), np.zeros(1), lam=lam)
    assert abs(K[0, 0] - c / (2 * lam**2 - v**2)) <= 1e-13 * K[0, 0]
    assert abs(ker.lambda_bound() - v / np.sqrt(2)) < 1e-6
    assert gp.kernel_.k1.lam >= 1.5 * v / np.sqrt(2) * (1 - 1e-9)
    assert gp.score(namespace["X"], namespace["y"]) > 0.9
    assert "v relu" in SECTION and "1.414" in SECTION
