# edgeinfer: `make demo` runs the whole system on the embedded broker; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install system-deps lint format typecheck test test-fast test-long demo bench bench-quick clean

help:
	@echo "make demo   - set up and run the end-to-end demo on the embedded broker"
	@echo "make test   - set up and run lint, mypy and the test suite"
	@echo "make test-long - the long chaos and property runs"
	@echo "make bench  - run the benchmarks (results in bench/results/)"
	@echo "make bench-quick - a few-minute check of the benchmarks (results in runs/bench-quick/)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: Prometheus server and promtool (alert rule tests, a real
# scrape in the integration tests).
system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then \
		echo "installing Debian package prometheus (promtool, prometheus)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# CI: everything but the long chaos/property tiers (their fast tiers run here).
test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest -q -m "not long" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The long chaos (restart churn) and property (hostile input) runs: ~10 minutes.
test-long: $(STAMP) system-deps
	$(PY) -m pytest -q -m long $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/edgeinfer demo

# Bytecode first: an installed package has it (pip compiles at install), an editable
# checkout under PYTHONDONTWRITEBYTECODE=1 would recompile on every agent start.
bench: $(STAMP)
	$(VENV)/bin/python -m compileall -q stream edge_agent bench fleet trainer
	$(VENV)/bin/edgeinfer bench --out bench/results

bench-quick: $(STAMP)
	$(VENV)/bin/python -m compileall -q stream edge_agent bench fleet trainer
	$(VENV)/bin/edgeinfer bench --quick --out runs/bench-quick

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
