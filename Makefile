# Quick start: `make demo` then `make test`. Everything installs into .venv from PyPI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := transfer jobs emulator

.PHONY: venv test lint demo bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check $(SRC) tests bench
	$(BIN)/ruff check $(SRC) tests bench
	$(BIN)/mypy --strict $(SRC)

demo: $(STAMP)
	$(BIN)/python -m jobs.demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .demo .bench
