# Firelet: two entry points, `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HELLO := examples/hello-py
# awslambdaric and its dependencies, vendored into the example's code dir for
# the system interpreter inside the sandbox (same minor version as the host).
AWSLAMBDARIC := awslambdaric==4.2.2

.PHONY: setup system-deps demo test lint bench clean

# System tools the demo and the tests use, installed (as root, Debian/Ubuntu)
# only when missing: curl (the shell example) and what npm needs to build the
# native part of the Node runtime client aws-lambda-ric.
system-deps:
	@missing=""; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v autoreconf >/dev/null || missing="$$missing autoconf"; \
	command -v automake >/dev/null || missing="$$missing automake"; \
	command -v libtoolize >/dev/null || missing="$$missing libtool"; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v make >/dev/null || missing="$$missing make"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(BIN)/firelet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(HELLO)/awslambdaric/__init__.py: $(BIN)/firelet
	$(BIN)/pip install --quiet --target $(HELLO) --upgrade --no-compile $(AWSLAMBDARIC)
	touch $@

setup: system-deps $(BIN)/firelet $(HELLO)/awslambdaric/__init__.py

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
