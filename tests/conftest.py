import os
import tempfile

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.py from the current code generator",
    )


def pytest_configure(config):
    # every test session compiles into its own fresh kernel cache (cold compiles are tested too)
    os.environ["DEKC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dekc-test-cache-")
    if not hasattr(config, "workerinput"):  # the controller: workers (pytest-xdist) inherit these folders
        os.environ["DEKC_PROPERTY_COUNTS"] = tempfile.mkdtemp(prefix="dekc-property-counts-")
        # JAX's own compilation cache, fresh for the session and shared by its workers and the
        # scripts the tests run: the same kernels are compiled by XLA once, not once per process
        if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
            os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dekc-test-xla-")
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_sessionfinish(session):
    from helpers import save_outcomes

    worker = getattr(session.config, "workerinput", {}).get("workerid", "main")
    save_outcomes(os.environ.get("DEKC_PROPERTY_COUNTS"), worker)


def pytest_terminal_summary(terminalreporter):
    from helpers import outcome_table

    lines = outcome_table(os.environ.get("DEKC_PROPERTY_COUNTS"))
    if lines:
        terminalreporter.section("property-based cases (dekc)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def update_golden(request):
    return request.config.getoption("--update-golden")


@pytest.fixture
def write_family(tmp_path):
    """Write a TOML family file and return its path."""

    def write(text: str, name: str = "fam.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
