# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python requirements.txt requirements-embedded.txt requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## run: serve on :8000; with REDIS_NODES unset, on embedded nodes at 127.0.0.1:7070-7072
run: $(STAMP)
	$(BIN)/python -m app serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000} --workers $${WORKERS:-1}

## test: lint, type-check, then the whole suite against real node and server processes
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests

format: $(STAMP)
	$(BIN)/ruff format app tests
	$(BIN)/ruff check --fix app tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
