# flowcli developer entry points. `make install` builds .venv from nothing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned: 2.13.0 is the CPU build on this machine's disk; another spec can pull a multi-GB CUDA build.
TORCH_SPEC := torch==2.13.0

.PHONY: install test demo bench clean

$(BIN)/flowcli: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/flowcli

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m flowcli.demo

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
