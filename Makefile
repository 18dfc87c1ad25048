# The two commands: `make demo` (set up + train the default recipe) and `make test` (lint, then the tests).
# Both create .venv if missing and install zerograd with the pinned constraints.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/datasets)
# MNIST for the tests comes from ../shared/datasets when it exists (see README).
TEST_ENV := $(if $(wildcard $(SHARED_DATA)/mnist),ZEROGRAD_DATA=$(SHARED_DATA),)

.PHONY: setup data test-deps demo lint test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,all]'
	touch $@

# Debian's packages the data and tests need (installed only when run as root and missing).
data:
	@bash scripts/install-system-deps.sh

test-deps:
	@bash scripts/install-system-deps.sh --tests

demo: setup data
	$(VENV)/bin/zerograd train fashion-cnn

# ruff (style and likely bugs) and import-linter (the layers of docs/architecture.md): fast, and first.
lint: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/lint-imports

test: setup test-deps lint
	$(TEST_ENV) $(PY) -m pytest

test-fast: setup
	$(TEST_ENV) $(PY) -m pytest -m "not slow"

bench: setup data
	$(TEST_ENV) $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
