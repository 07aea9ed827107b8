# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed on its own, first: a CPU build pinned here so that resolving the package's
# `torch>=2.1` requirement never downloads a multi-GB CUDA build. Elsewhere, point pip at a CPU
# index, e.g. make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" test
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.dropkit-installed

.PHONY: demo test lint unit install clean

demo: $(STAMP)
	$(BIN)/python -m dropkit demo

test: lint unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

unit: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
