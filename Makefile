# idresolve: the everyday commands. `make help` lists them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help setup up test test-long bench bench-check lint clean

help:
	@echo "make up         set up, then run the default Shandong cluster on the embedded store"
	@echo "make test       set up, then run the test suite (what CI runs)"
	@echo "make bench      set up, then run the benchmarks (prints ratios to baselines)"
	@echo "make bench-check the benchmarks, exiting non-zero when a target fails or a figure is missing"
	@echo "make test-long  the long hardening runs (many kills, many fuzz cases); prints their seeds,"
	@echo "               IDRESOLVE_SEED=N make test-long reruns one"
	@echo "make lint       ruff"

$(BIN)/idresolve: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,load]'
	@touch $@

setup: $(BIN)/idresolve

up: setup
	$(BIN)/idresolve up

test: setup
	$(BIN)/python -m pytest

test-long: setup
	IDRESOLVE_LONG=1 $(BIN)/python -m pytest -m slow tests

bench: setup
	$(BIN)/idresolve bench suite

bench-check: setup
	$(BIN)/idresolve bench suite --check

lint: setup
	$(BIN)/ruff check src tests loadtests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
