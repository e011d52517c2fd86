# One command per job; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast ui lint bench serve clean postgres browser services server server-stop bench-server stress

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: setup  ## train the default job on the built-in synthetic dataset, logged to ./mlflow.db
	$(BIN)/python -m retina_seg.run

test: setup postgres browser services  ## the suite, two test files at a time (pytest-xdist)
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: setup  ## the developer's loop: everything but the end-to-end tests marked slow (no system packages needed)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

ui: setup  ## browse runs at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check retina_seg tests benchmarks

bench: setup  ## input pipeline, inference modes, then served vs in-process inference on a CHASE_DB1 photograph
	$(BIN)/python -m benchmarks.bench

serve: setup  ## REST server on 127.0.0.1:5001, e.g. make serve MODEL=models:/retina-seg@champion ARGS="--workers 2"
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/retina-seg-serve $(MODEL) $(ARGS)

postgres:  ## PostgreSQL for `make server` and its tests: installed with apt when missing and we are root
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "PostgreSQL is missing (apt-get install postgresql): the team-server tests will skip"; fi

browser:  ## Chromium and its WebDriver for the viewer's browser tests: installed with apt when missing and we are root
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "Chromium is missing (apt-get install chromium chromium-driver): the viewer's browser tests will skip"; fi

services:  ## Prometheus (with promtool) and nginx for the deployment tests: installed with apt when missing and we are root
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && \
	  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus nginx; \
	  else echo "Prometheus or nginx is missing (apt-get install prometheus nginx): the deployment tests will skip"; fi

server: setup postgres  ## PostgreSQL + MLflow tracking server on 127.0.0.1:5000, data in .server/ (AUTH=1: accounts)
	$(BIN)/python -m retina_seg.server $(if $(AUTH),auth=true) $(ARGS)

server-stop: setup
	$(BIN)/python -m retina_seg.server action=stop $(ARGS)

bench-server: setup postgres  ## N concurrent runs against a throw-away PostgreSQL-backed server (N=8: ARGS="--runs 8")
	nice -n 10 $(BIN)/python -m benchmarks.bench_server $(ARGS)

stress: setup  ## 8 runs started at once on a new SQLite store: all must finish
	$(BIN)/python -m benchmarks.stress --processes 8

clean:
	rm -rf outputs multirun .cache .pytest_cache
