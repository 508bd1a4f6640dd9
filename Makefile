# Two commands from a clean clone: `make demo` and `make test`. Both build .venv once; the stamp
# files make a second call skip the installs (they rerun when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so `pip install -e .` finds it satisfied and never pulls a
# different (CUDA) build. Elsewhere, a CPU-only machine can add:
#   make demo TORCH_PIP_ARGS="--index-url <your CPU wheel index>"
TORCH := torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: demo test clean

demo: $(VENV)/.stamp-demo
	$(BIN)/savegame demo

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-torch: | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) '$(TORCH)'
	touch $@

$(VENV)/.stamp-demo: pyproject.toml $(VENV)/.stamp-torch
	$(BIN)/python -m pip install -e '.[demo]'
	touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-torch
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .hypothesis
