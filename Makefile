# execbridge: every task starts here. `make demo` and `make test` work from a fresh clone;
# everything they need (buf, the Python virtualenv, grpcurl) is installed into ignored
# folders (.tools/, .venv/) by the targets below.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO    ?= cargo
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
TOOLS    := .tools
BUF      := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
BASELINE := proto-baseline/execbridge.binpb
BINS     := target/debug/execbridge-gateway target/debug/execbridge-executor target/debug/execbridge-marketdata

.PHONY: help build demo run test test-rust test-python test-e2e proto-lint proto-breaking \
        proto-baseline bench bench-marketdata bench-python lint fmt clean tools venv

help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

# Observability checks (alert rules, dashboards, Prometheus) and deployment checks (chart,
# manifests, CRD, Tiltfile), each in its own file.
include mk/observability.mk
include mk/deploy.mk
# Development certificates for native mTLS (`make certs`) and the TLS tests.
include mk/tls.mk

build: ## Build the three services (debug).
	$(CARGO) build --locked --bins -p execbridge-gateway -p execbridge-executor -p execbridge-marketdata

demo: build venv ## Start all three services on loopback, run the example orchestrator, stop.
	EXECBRIDGE_BIN_DIR=target/debug $(PY) e2e/demo.py

run: build venv ## Run all three services on loopback until Ctrl-C (the embedded default).
	EXECBRIDGE_BIN_DIR=target/debug $(PY) e2e/stack.py

test: proto-lint proto-breaking test-rust test-python test-e2e test-observability test-deploy ## Everything CI runs.

test-rust: ## Rust unit and integration tests (and the optional QuestDB audit sink's).
	$(CARGO) test --locked --workspace
	$(CARGO) test --locked -p execbridge-executor --features questdb --lib audit::tests::the_questdb_sink

test-python: venv ## Python client unit tests and mypy --strict.
	$(PY) -m mypy --strict python-client/src/execbridge
	$(PY) -m pytest -q python-client/tests

test-e2e: build venv prometheus-bin ## Cross-process tests: the real binaries over real sockets (and a real Prometheus).
	EXECBRIDGE_BIN_DIR=target/debug $(PY) -m pytest -q e2e

proto-lint: $(BUF) ## buf lint (STANDARD rules).
	$(BUF) lint

proto-breaking: $(BUF) ## buf breaking against the stored baseline of the released contract.
	$(BUF) breaking --against $(BASELINE)

proto-baseline: $(BUF) ## Advance the stored contract baseline (a deliberate release step).
	mkdir -p $(dir $(BASELINE))
	$(BUF) build -o $(BASELINE)

bench: bench-marketdata bench-python ## Every benchmark: SubmitOrder latency vs a bare echo, admission, executor, fanout.
	$(CARGO) build --locked --release --bins -p execbridge-gateway -p execbridge-executor -p execbridge-marketdata -p execbridge-bench
	target/release/execbridge-bench --bin-dir target/release
	$(CARGO) bench --locked -p execbridge-gateway --bench admission
	$(CARGO) bench --locked -p execbridge-executor --bench executor

bench-marketdata: ## Marketdata fanout: 1,000 subscribers over 10 and 1,000 connections, idle memory per connection.
	$(CARGO) build --locked --release --bins -p execbridge-marketdata
	target/release/marketdata-bench --bin-dir target/release

bench-python: venv ## Python client: unary submit_order latency at a fixed rate and batched submit_orders throughput.
	$(CARGO) build --locked --release --bins -p execbridge-gateway -p execbridge-executor -p execbridge-marketdata
	$(PY) python-client/benchmarks/bench_client.py --bin-dir target/release

lint: $(BUF) venv ## clippy, rustfmt check, buf lint, mypy.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(BUF) lint
	$(PY) -m mypy --strict python-client/src/execbridge

fmt: ## Format the Rust code.
	$(CARGO) fmt --all

tools: $(BUF) ## Install buf into .tools/.

$(BUF):
	mkdir -p $(TOOLS)
	test -f $(TOOLS)/package.json || echo '{"name":"execbridge-tools","private":true}' > $(TOOLS)/package.json
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	touch $@

venv: $(VENV)/.installed ## Create .venv with the client (built from proto/) and the test tools.

# Reinstalled when the contract or the client changes: the client's generated code comes
# from proto/ at package build time.
$(VENV)/.installed: $(shell find proto python-client/src python-client/setup.py python-client/pyproject.toml -type f -not -path '*/_proto/*' -not -name '*.pyc' 2>/dev/null) e2e/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet './python-client[dev]' -r e2e/requirements.txt
	touch $@

clean: ## Remove build outputs and installed tools.
	$(CARGO) clean
	rm -rf $(VENV) $(TOOLS) bench-results python-client/build python-client/src/*.egg-info
