# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install engines demo test bench lint clean

# Installs (again) only when pyproject.toml changed: quick when set up.
# The test extra brings the Spark and PostgreSQL adapters (extras spark, postgres).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The engines the test suite starts itself: a PostgreSQL server (Debian's
# packages; the tests run it on 127.0.0.1) and Java for local Spark.
engines:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v java >/dev/null || { \
	  echo "installing PostgreSQL and Java for the engine tests (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql openjdk-17-jre-headless >/dev/null; }

demo: install
	$(BIN)/python demo/run_demo.py

test: install engines
	$(BIN)/ruff check scripts tests demo benchmarks
	$(BIN)/python -m pytest

# Not part of `make test` (a smoke run of it is); writes benchmarks/results/.
bench: install
	$(BIN)/python benchmarks/bench.py

lint: install
	$(BIN)/ruff check scripts tests demo benchmarks

clean:
	rm -rf $(VENV) target dbt_packages logs demo/target demo/dbt_packages demo/logs demo/*.duckdb
