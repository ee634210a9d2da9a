# Two commands do all set-up on a fresh clone:
#   make demo   # the main job
#   make test   # the test suite
# Each creates .venv and installs what it needs. torch is pinned to the CPU wheel that CPU
# machines here use; elsewhere pick your build, e.g. `make test TORCH=torch` for CUDA.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transformerkit model-info --preset base

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
