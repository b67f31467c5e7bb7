# Every target creates or updates the project virtualenv first, so a fresh clone needs only
# Python 3.11: `make demo` and `make test` are the two set-up commands of the README.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: install demo dev stop test lint format bench clean

$(STAMP): setup.py pyproject.toml
	@test -x $(BIN)/python || { echo "creating the virtualenv $(VENV) with $(PYTHON) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing the project and its Python packages into $(VENV) (first time: about a minute) ..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "installed: $(VENV) is up to date"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/training-pipeline demo

# The Dagster UI and daemon; Ctrl-C (or SIGTERM) stops them.
dev: $(STAMP)
	$(BIN)/training-pipeline dev

# The embedded PostgreSQL keeps running after every command until this stops it.
stop: $(STAMP)
	$(BIN)/training-pipeline db stop

# pytest exits with 5 when it collects no tests; that is a broken suite, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make bench` runs every benchmark; `make bench BENCH=storage` runs one.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH)

# Stops the embedded PostgreSQL first (if the venv exists): its data folder goes too.
clean:
	@if [ -x $(BIN)/training-pipeline ]; then $(BIN)/training-pipeline db stop; fi
	rm -rf .dagster_home datasets .pgdata
