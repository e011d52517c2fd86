# One command per job; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test ui lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: setup  ## train the default job on the built-in synthetic dataset, logged to ./mlflow.db
	$(BIN)/python -m retina_seg.run

test: setup
	$(BIN)/python -m pytest

ui: setup  ## browse runs at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check retina_seg tests

bench: setup
	$(BIN)/python -m retina_seg.bench

clean:
	rm -rf outputs multirun .cache .pytest_cache
