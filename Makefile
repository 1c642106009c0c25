# Two commands for a newcomer: `make run` and `make test`.
VENV   := .venv
PYTHON := $(VENV)/bin/python
FLASK  := $(VENV)/bin/flask --app wsgi
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

$(VENV)/bin/activate:
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/activate
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/activate
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

## Set up (virtualenv, packages, SQLite schema) and serve http://127.0.0.1:5000
run: $(VENV)/.installed
	$(FLASK) db upgrade
	$(FLASK) run --host 127.0.0.1 --port 5000

## The whole suite, on throwaway PostgreSQL, Redis and headless Chromium
test: $(VENV)/.dev-installed
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## Benchmarks (not part of test): needs wrk, installed here when we are root with apt
bench: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get install -y -qq wrk >/dev/null; } || echo "make bench needs wrk: apt-get install wrk"
	$(PYTHON) -m bench.run

clean:
	rm -rf $(VENV) instance .pytest_cache
