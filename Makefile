# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install stamps: the demo needs only the package (dbt-core, dbt-duckdb);
# the tests also need the test tools and the Spark and PostgreSQL adapters.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install engines demo test test-full bench lint clean

# Each installs (again) only when pyproject.toml changed: quick when set up.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

# The test extra brings the Spark and PostgreSQL adapters (extras spark, postgres).
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(DEMO_STAMP)

install: $(TEST_STAMP)

# The engines the test suite starts itself: a PostgreSQL server (Debian's
# packages; the tests run it on 127.0.0.1) and Java for local Spark.
engines:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v java >/dev/null || { \
	  echo "installing PostgreSQL and Java for the engine tests (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql openjdk-17-jre-headless >/dev/null; }

# Only what the demo needs: no Spark or PostgreSQL adapter, no test tools.
demo: $(DEMO_STAMP)
	$(BIN)/python demo/run_demo.py

# Two workers (2 cores here). The engines of a scenario stay on one worker,
# in order (test_engines compares each engine with the DuckDB run before
# it: see tests/conftest.py); the 1M-member Spark sync overlaps the rest.
TEST_WORKERS ?= 2

# `make test` leaves out the tests marked `full` (the rest of the Spark matrix
# and the long runs: see tests/conftest.py and decision 0017); CI runs them
# after it, with `make test-full`.
test: $(TEST_STAMP) engines
	$(BIN)/ruff check scripts tests demo benchmarks
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15 -m "not full"

test-full: $(TEST_STAMP) engines
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15 -m "full or engine_baseline"

# Not part of `make test` (a smoke run of it is); writes benchmarks/results/.
# ONLY=track (or diff, partner, memory, incremental, attribute_scale, events) reruns that section alone into the last report.
bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench.py $(if $(ONLY),--only $(ONLY))

lint: $(TEST_STAMP)
	$(BIN)/ruff check scripts tests demo benchmarks

clean:
	rm -rf $(VENV) target dbt_packages logs demo/target demo/dbt_packages demo/logs demo/*.duckdb
