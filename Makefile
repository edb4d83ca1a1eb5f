# Set-up and checks. Every target installs what it needs, idempotently.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check lint typecheck pytest bench bench-quick format clean postgres-bin chromium-bin

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime install (what `make demo` needs).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Development install: test, lint and type-check tools.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

# Benchmark peers (LangGraph, pydantic-graph).
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python examples/research_assistant.py --db runs.db --session demo

test: check pytest bench-quick

check: lint typecheck

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev postgres-bin chromium-bin
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite starts a throwaway PostgreSQL cluster on loopback (tests/pgcluster.py)
# unless WEAVEGRAPH_TEST_POSTGRES_DSN names a server; this installs the server
# binaries when neither is available.
postgres-bin:
	@if [ -z "$$WEAVEGRAPH_TEST_POSTGRES_DSN" ] \
	   && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	   && ! command -v initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL (Debian package postgresql) for the tests"; \
		$(SUDO) apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi

# Every benchmark at full size (several minutes; a missing peer is reported and
# skipped). The PostgreSQL rows use a throwaway cluster, as the tests do.
bench: $(VENV)/.installed-bench postgres-bin
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/event_bus.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/scale.py

# Every benchmark once at tiny sizes, results still checked, so none can rot;
# here every peer must be installed. A failing benchmark fails `make test`.
bench-quick: $(VENV)/.installed-bench postgres-bin
	$(BIN)/python bench/engine.py --quick
	$(BIN)/python bench/checkpoint.py --quick
	$(BIN)/python bench/event_bus.py --quick
	$(BIN)/python bench/serve.py --quick
	$(BIN)/python bench/scale.py --quick

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

# tests/serve/test_browser.py drives Debian's Chromium headless; install it if missing.
chromium-bin:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Chromium (Debian package chromium) for the browser test"; \
		$(SUDO) apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
