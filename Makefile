# The two commands of the README: `make run` (demo load on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test lint bench ui install clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("DPA needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.py pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	@mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dpa demo --days 3

test: install lint
	@mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check dpa_assets dpa_assets_tests benchmarks
	$(BIN)/ruff format --check dpa_assets dpa_assets_tests benchmarks

# The benchmark's optional contender (dlt) comes with the `bench` extra.
$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/load_benchmark.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/backfill_benchmark.py $(BACKFILL_ARGS)

ui: install
	$(BIN)/dpa setup-warehouse
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf "$(DAGSTER_HOME)"
