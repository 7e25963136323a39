# Keel: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
KEEL := $(VENV)/bin/keel
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test lint format lock clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

## install: the locked dependency set into .venv (uv, from uv.lock)
install: $(VENV)/.synced

## run: migrate and serve the embedded default on http://127.0.0.1:8000
run: install
	$(KEEL) db upgrade
	$(KEEL) serve

## test: the whole suite (both storage legs; Keel's tests/ and each plugin's
## plugins/<name>/tests/), one test process per core, then the browser tests in one
## process (Playwright's sync API keeps an event loop in the process that runs them);
## TEST_WORKERS=0 runs the first part in this process too. Exit status 5 of the
## second part means PYTEST_ARGS named no browser test.
## Bytecode is cached in .venv/pycache even where PYTHONDONTWRITEBYTECODE is set: the
## suite starts over a hundred Python processes (`keel` commands and servers, test
## workers), and without the cache each compiles Keel and its dependencies from source
## again (a `keel` command: 4.0 s of CPU instead of 1.5 s).
TEST_WORKERS ?= auto
test: export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache
test: export PYTHONDONTWRITEBYTECODE :=
test: install
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) -m "not browser" $(PYTEST_ARGS)
	$(VENV)/bin/python -m pytest -m browser $(PYTEST_ARGS) || [ $$? -eq 5 ]

## lint: ruff (check and format) over Keel, its tests and the plugins; the layer contracts;
## mypy over app/ and keel/, then over each plugin folder on its own (each has a
## tests/conftest.py, and its package is imported by its own name there)
LINTED := app tests migrations bench keel plugins
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	for plugin in plugins/*/; do $(VENV)/bin/mypy "$$plugin" || exit 1; done

format: install
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

## lock: re-resolve dependencies after editing pyproject.toml
lock: $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
