# Each target installs what it needs on a fresh Debian 12 / Python 3.11 machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast lint typecheck pytest drills bench constraints clean system-packages redis-package

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set no
# process ever caches one, so every task, test and scheduler process compiled Airflow, pyarrow and
# pydantic from source (importing airflow.sdk took 7.0 s instead of 3.0 s; a pipeline shard 0.6 CPU-s).
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

## run: the whole stack on 127.0.0.1 (Argo CD simulator + Airflow on SQLite); Ctrl-C stops it.
run: $(STAMP) redis-package
	PYTHONPATH=$(CURDIR):$(CURDIR)/plugins $(BIN)/python scripts/dev_stack.py

## redis-package: Debian's redis-server, which holds make run's event streams.
redis-package:
	@command -v redis-server >/dev/null || { echo "Installing Debian's redis-server for the event streams ..."; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

## test: ruff, mypy, the whole pytest suite, and the reliability drills.
test: lint typecheck pytest drills

## test-fast: the inner loop: ruff, import contracts, mypy, and the tests that start no Airflow stack,
## run no DAG and take under a second each (those marked slow run in make test).
test-fast: lint typecheck
	$(BIN)/pytest -q -n 2 -m "not integration and not e2e and not slow" tests/unit tests/sandbox tests/dags tests/docs tests/stack tests/scripts

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=plugins $(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers: most tests wait on a simulator or an Airflow stack, not on the CPU. A file's tests
# stay on one worker (--dist loadfile), so a module's stack starts once. --durations: the 30
# slowest tests of every run, so a slow new test shows where it was added. (xdist's default order,
# files with the most tests first, starts make run's e2e test late; keeping the collection order
# instead ran it beside the Celery stack's, and it timed out at 900 s: two stacks at once on two
# cores are slower than one after the other.)
pytest: $(STAMP) system-packages
	$(BIN)/pytest -n 2 --dist loadfile --durations=30 -m "not drill"

## drills: faults injected into the native Celery stack, one stack for all, in order, with the
## figures they measure printed (docs/reliability.md). BASE_DRILL_OFF=<setting> turns one off.
drills: $(STAMP) system-packages
	$(BIN)/pytest -p no:xdist -s --durations=10 -m drill \
	  tests/drills/test_rest_load.py tests/drills/test_hung_argo_cd.py tests/drills/test_faults.py tests/drills/test_restore.py

## system-packages: Debian's Postgres and Redis (the production-topology e2e test), Chromium and
## its driver (the platform page in a real browser) and promtool (the alert rules).
system-packages:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
	  || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v promtool >/dev/null; then \
	  echo "Installing Debian's postgresql, redis-server, chromium, chromium-driver and prometheus for the tests ..."; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    postgresql redis-server chromium chromium-driver prometheus >/dev/null; \
	fi

## bench: ingest throughput (ours vs Polars and DuckDB), the datasets API under load, the card stream
## through Airflow (vs the engine in a loop), feature materialisation and online lookups (vs bare
## DuckDB, HMGET and SELECT), the four media kinds (vs their library calls in a loop), and the
## deploy critical path.
bench: $(STAMP) redis-package
	@for b in benchmarks/ingest_throughput.py benchmarks/stream_throughput.py benchmarks/feature_store.py \
	  benchmarks/media_throughput.py benchmarks/deploy_critical_path.py; do \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

## constraints: refreeze constraints.txt from a fresh install of the requirement files.
constraints: | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	{ echo "# Frozen from a working install of requirements.txt + requirements-dev.txt on Python 3.11."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/uv pip freeze --python $(BIN)/python; } > constraints.txt

clean:
	rm -rf $(VENV) .airflow .mypy_cache .ruff_cache .pytest_cache
