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

## test: the whole suite (both storage legs), one test process per core, then the browser
## tests in one process (Playwright's sync API keeps an event loop in the process that runs
## them); TEST_WORKERS=0 runs the first part in this process too. Exit status 5 of the
## second part means PYTEST_ARGS named no browser test.
TEST_WORKERS ?= auto
test: install
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) -m "not browser" $(PYTEST_ARGS)
	$(VENV)/bin/python -m pytest -m browser $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check app tests migrations bench
	$(VENV)/bin/ruff format --check app tests migrations bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix app tests migrations bench
	$(VENV)/bin/ruff format app tests migrations bench

## lock: re-resolve dependencies after editing pyproject.toml
lock: $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
