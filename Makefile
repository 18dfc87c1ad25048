# The two commands: `make demo` (set up + train the default recipe) and `make test` (lint, then the tests).
# Both create .venv if missing and install zerograd with the pinned constraints.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Lightning and Keras for bench/peers.py live in a venv of their own, so .venv never holds them.
PEERS_VENV := .venv-peers
PEERS_PY := $(PEERS_VENV)/bin/python
SHARED_DATA := $(abspath ../shared/datasets)
# MNIST for the tests comes from ../shared/datasets when it exists (see README).
TEST_ENV := $(if $(wildcard $(SHARED_DATA)/mnist),ZEROGRAD_DATA=$(SHARED_DATA),)

.PHONY: setup data test-deps demo lint test test-fast bench bench-peers gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,all,notebooks]'
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

# Every benchmark and target (issues 9 and 18), the peers (Lightning, Keras) included.
bench: setup data $(PEERS_VENV)/.installed
	$(TEST_ENV) $(PY) bench/run_all.py

# The peers' venv (zerograd + Lightning 2.6.6 + Keras 3.15.1, torch kept at the pinned CPU build by
# constraints.txt), then the side-by-side benchmark alone (`make bench` runs it among the others).
bench-peers: setup data $(PEERS_VENV)/.installed
	$(TEST_ENV) KERAS_BACKEND=torch $(PEERS_PY) bench/peers.py

$(PEERS_VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install -q -c constraints.txt -e '.[peers]'
	$(PEERS_PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch ' + v + ' in $(PEERS_VENV): the pin was not kept')"
	touch $@

# CUDA tests, the recipes on cuda in fp32/bf16/fp16 and DDP over NCCL. The script exits 77 on a machine
# without a GPU (it says so); make takes that as done, not failed.
gpu-check:
	bash scripts/gpu-check.sh || test $$? -eq 77

clean:
	rm -rf $(VENV) $(PEERS_VENV) build src/*.egg-info .pytest_cache
