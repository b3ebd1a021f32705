import pytest


@pytest.fixture
def write_family(tmp_path):
    """Write a TOML family file and return its path."""

    def write(text: str, name: str = "fam.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
