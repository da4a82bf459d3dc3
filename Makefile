# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

# Installs (again) only when pyproject.toml changed: quick when set up.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python demo/run_demo.py

test: install
	$(BIN)/ruff check scripts tests demo benchmarks
	$(BIN)/python -m pytest

# Not part of `make test` (a smoke run of it is); writes benchmarks/results/.
bench: install
	$(BIN)/python benchmarks/bench.py

lint: install
	$(BIN)/ruff check scripts tests demo benchmarks

clean:
	rm -rf $(VENV) target dbt_packages logs demo/target demo/dbt_packages demo/logs demo/*.duckdb
