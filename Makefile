# The set-up commands: `make demo`, `make test` and `make test-fast`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed on its own, first: a CPU build pinned here so that resolving the package's
# `torch>=2.1` requirement never downloads a multi-GB CUDA build. Elsewhere, point pip at a CPU
# index, e.g. make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" test
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# `make demo` needs the experiments extra; `make test` needs everything (the dev extra).
DEMO_STAMP := $(VENV)/.dropkit-experiments
STAMP := $(VENV)/.dropkit-installed

.PHONY: demo test test-fast lint unit unit-fast docs dist install clean

demo: $(DEMO_STAMP)
	$(BIN)/python -m dropkit demo

# lint, the whole test suite and the documentation site
test: lint unit docs

# lint and the tests not marked slow (a few minutes less; CI runs `make test`)
test-fast: lint unit-fast

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# one worker per core, each test file on one worker (`python -m pytest` alone runs serially)
XDIST ?= -n auto --dist loadfile

unit: $(STAMP)
	$(BIN)/python -m pytest $(XDIST)

unit-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow"

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# the wheel and sdist in dist/, checked for PyPI
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build
	$(BIN)/twine check --strict dist/*

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[experiments]"
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(DEMO_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info build dist site
