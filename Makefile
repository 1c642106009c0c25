# Two commands for a newcomer: `make run` and `make test`.
VENV   := .venv
PYTHON := $(VENV)/bin/python
FLASK  := $(VENV)/bin/flask --app wsgi
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

# pip speaks only when something fails: no progress bars, no version nags.
PIP    := $(PYTHON) -m pip install --quiet --quiet --disable-pip-version-check --no-warn-script-location

$(VENV)/bin/activate:
	@echo "Installing (first run only, about a minute)…"
	@python3 -m venv $(VENV)
	@$(PIP) --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/activate
	@echo "Installing the site's packages…"
	@$(PIP) -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/activate
	@echo "Installing the test tools…"
	@$(PIP) -r requirements-dev.txt
	@touch $(VENV)/.installed $@

## Set up (virtualenv, packages, SQLite schema), then serve http://127.0.0.1:5000 and run
## the worker beside it (Procfile.dev); says where and how to try it when it is ready
run: $(VENV)/.installed
	@$(FLASK) db upgrade > $(VENV)/db-upgrade.log 2>&1 || { cat $(VENV)/db-upgrade.log; exit 1; }
	@$(PYTHON) scripts/run_dev.py

## The whole suite, on throwaway PostgreSQL, Redis and headless Chromium
test: $(VENV)/.dev-installed
	$(PYTHON) -m pytest -n auto $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## Benchmarks (not part of test): needs wrk, installed here when we are root with apt
bench: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get install -y -qq wrk >/dev/null; } || echo "make bench needs wrk: apt-get install wrk"
	$(PYTHON) -m bench.run

clean:
	rm -rf $(VENV) instance .pytest_cache
