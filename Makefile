# modelreg: `make run` starts the registry on its embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed-dev
PROTOS := $(wildcard protos/modelreg/v1/*.proto)
GEN_DIR := clients
export PATH := $(abspath $(BIN)):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test proto proto-check lint bench clean

# The registry alone: what `make run` needs.
$(BASE_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

# Everything the tests need: tools, the agent's runtimes, ultralytics (torch pinned in constraints.txt).
$(STAMP): $(BASE_STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,agent,ultralytics]'
	touch $@

install: $(STAMP)

## Start the registry on 127.0.0.1:50051 (embedded Postgres + local artifacts under ./.modelreg).
run: $(BASE_STAMP)
	$(BIN)/modelreg server

## Regenerate the gRPC stubs (with mypy-protobuf type stubs) into clients/modelreg/v1.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos \
		--python_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) \
		--mypy_out=$(GEN_DIR) --mypy_grpc_out=$(GEN_DIR) $(PROTOS)

## Fail if the committed stubs differ from what the protos generate.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I protos --python_out=$$tmp --grpc_python_out=$$tmp \
		--mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) && \
	for f in $$(cd $$tmp && find . -type f -name '*.py*'); do \
		cmp -s $$tmp/$$f $(GEN_DIR)/$$f || { echo "stale generated stub: $(GEN_DIR)/$$f (run 'make proto')"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated stubs are up to date"

## buf lint on protos/.
lint: $(STAMP)
	cd protos && $(abspath $(BIN))/buf lint

## Run the test suite (installs what it needs first).
test: $(STAMP) proto-check lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Benchmarks side by side with MLflow (needs the dev, agent and ultralytics extras for every row); `make bench ONLY=name` runs one.
bench: $(STAMP)
	$(PY) -m benchmarks $(if $(ONLY),--only $(ONLY),)

clean:
	rm -rf $(VENV) .pytest_cache
