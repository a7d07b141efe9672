# TransferLab. `make run` to start, `make test` to check. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIND   ?= 127.0.0.1:8000
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-postgresql lint format bench chromium servers clean-venv

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

## run: set up, migrate, create the first admin, start web server and worker (Ctrl-C stops both)
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_admin
	$(PY) manage.py serve --bind $(BIND)

## test: lint, migrations check and the whole test suite on SQLite, browser tests included; then test-postgresql
test: $(VENV)/.installed-dev chromium servers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest
	@$(MAKE) --no-print-directory test-postgresql

## test-postgresql: the whole suite but its browser, realweights and storage_free tests, on PostgreSQL + Redis
# Servers the run starts itself in a temporary folder (tests/servers.py), removed at its end. Browser
# tests drive pages whose views the rest of the suite already runs on both databases, realweights
# tests check models, and storage_free tests (Keras, NumPy, Pillow only) touch no database or queue;
# everything else runs on both (docs/TESTING.md).
test-postgresql: $(VENV)/.installed-dev servers
	TEST_BACKENDS=postgresql $(VENV)/bin/pytest --ignore=tests/browser -m "not browser and not realweights and not storage_free"

## chromium: Debian's Chromium for the browser tests (Playwright never downloads a browser here)
chromium:
	@test -x /usr/bin/chromium || ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium )

## servers: Debian's PostgreSQL and Redis for test-postgresql (run as plain processes by the tests, never as services)
servers:
	@( ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null ) || ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server )

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## bench: the benchmarks of docs/PERFORMANCE.md, figures written to bench/results/
bench: $(VENV)/.installed-dev
	mkdir -p bench/results
	$(PY) bench/predict.py --json bench/results/predict.json
	$(PY) bench/import.py --json bench/results/import.json
	$(PY) bench/train.py --json bench/results/train.json
	$(PY) bench/load.py --json bench/results/load.json
	$(PY) bench/scale.py --json bench/results/scale.json

clean-venv:
	rm -rf $(VENV)
