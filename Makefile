# Each target installs what it needs on a fresh Debian 12 / Python 3.11 machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench constraints clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

## run: the whole stack on 127.0.0.1 (Argo CD simulator + Airflow on SQLite); Ctrl-C stops it.
run: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/dev_stack.py

## test: ruff, mypy and the whole pytest suite.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## constraints: refreeze constraints.txt from a fresh install of the requirement files.
constraints: | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	{ echo "# Frozen from a working install of requirements.txt + requirements-dev.txt on Python 3.11."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/uv pip freeze --python $(BIN)/python; } > constraints.txt

clean:
	rm -rf $(VENV) .airflow .mypy_cache .ruff_cache .pytest_cache
