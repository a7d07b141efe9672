# TransferLab. `make run` to start, `make test` to check. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIND   ?= 127.0.0.1:8000
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format bench chromium clean-venv

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

## test: lint, migrations check and the whole test suite, browser tests included
test: $(VENV)/.installed-dev chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest

## chromium: Debian's Chromium for the browser tests (Playwright never downloads a browser here)
chromium:
	@test -x /usr/bin/chromium || ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium )

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

clean-venv:
	rm -rf $(VENV)
