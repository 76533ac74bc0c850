# Operator entry points. Everything runs from .venv, created on first use.
#   make up      install (if needed), start the platform on the embedded default, register the packs
#   make down    stop it          make status   show each process and dependency
#   make test    install with test extras (if needed), run the whole suite
#   make bench   run the benchmarks in bench/

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
ST2CTL := $(BIN)/st2ctl
API_URL := http://127.0.0.1:9101
# Stamps make a refresh free when pyproject.toml has not changed since the last install.
RUN_STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: up down status restart test bench

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "make: python3.11 (or python3 >= 3.11) is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $@ $(RUN_STAMP)

up: $(RUN_STAMP)
	$(ST2CTL) start
	$(ST2CTL) reload --register-all --register-no-fail-on-failure
	@echo
	@echo "The platform is up. REST API: $(API_URL)/v1 (logs in var/log, state in var/)"
	@echo "  run an action:  $(BIN)/st2 run core.local cmd=\"echo hello\""
	@echo "  status:         make status      stop: make down"

down:
	@if [ -x $(ST2CTL) ]; then $(ST2CTL) stop; else echo "nothing to stop: $(VENV) does not exist"; fi

status: $(RUN_STAMP)
	$(ST2CTL) status

restart: $(RUN_STAMP)
	$(ST2CTL) restart

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# Each bench/<name>.py is a standalone script that prints its measurements
# (bench/_*.py are shared helpers).
bench: $(TEST_STAMP)
	@set -e; found=0; \
	for script in bench/[!_]*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(BIN)/python "$$script"; \
	done; \
	[ $$found = 1 ] || echo "no benchmarks in bench/"
