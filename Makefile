# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-properties lint format docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q --numprocesses=auto --maxprocesses=4

test-all: $(STAMP)
	DEKC_PROPERTY_PROFILE=long $(BIN)/python -m pytest -q --numprocesses=auto --maxprocesses=4

test-properties: $(STAMP)
	DEKC_PROPERTY_PROFILE=long $(BIN)/python -m pytest -q tests/test_properties.py

lint: $(STAMP)
	$(BIN)/ruff check dekc tests benchmarks examples experiments tools docs/_ext
	$(BIN)/ruff format --check dekc tests benchmarks examples experiments tools docs/_ext
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix dekc tests benchmarks examples experiments tools docs/_ext
	$(BIN)/ruff format dekc tests benchmarks examples experiments tools docs/_ext

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/link.py
	$(BIN)/python benchmarks/expectations.py
	$(BIN)/python benchmarks/gram.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output site
