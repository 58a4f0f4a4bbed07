# Firelet: two entry points, `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HELLO := examples/hello-py
# awslambdaric and its dependencies, vendored into the example's code dir for
# the system interpreter inside the sandbox (same minor version as the host).
AWSLAMBDARIC := awslambdaric==4.2.2

.PHONY: setup demo test lint bench clean

$(BIN)/firelet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(HELLO)/awslambdaric/__init__.py: $(BIN)/firelet
	$(BIN)/pip install --quiet --target $(HELLO) --upgrade --no-compile $(AWSLAMBDARIC)
	touch $@

setup: $(BIN)/firelet $(HELLO)/awslambdaric/__init__.py

demo: setup
	$(BIN)/python -m runtime.demo examples/firelet.toml

test: setup
	$(BIN)/ruff check rapi sandbox runtime tests benchmarks
	$(BIN)/ruff format --check rapi sandbox runtime tests benchmarks
	$(BIN)/mypy rapi sandbox runtime
	$(BIN)/python -m pytest -q tests

lint: $(BIN)/firelet
	$(BIN)/ruff check --fix rapi sandbox runtime tests benchmarks
	$(BIN)/ruff format rapi sandbox runtime tests benchmarks

bench: setup
	$(BIN)/python benchmarks/warm_invoke.py --plot

clean:
	rm -rf $(VENV) .firelet-state examples/.firelet-state
