"""The README's "register your own family" walk-through works as written."""

import re
from pathlib import Path

import sympy as sp

import dekc
from dekc.expressions import ETA

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_family_walkthrough(tmp_path):
    text = README.read_text()
    block = re.search(r"```toml\n# geometric.toml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "geometric.toml"
    path.write_text(block)
    fam = dekc.register_family(path)
    assert fam.name == "geometric"
    link = dekc.link("geometric", activation="exp")
    assert sp.simplify(link.R - sp.log(1 - sp.exp(-sp.exp(ETA)))) == 0
    assert "log(1 - exp(-exp(eta)))" in text
