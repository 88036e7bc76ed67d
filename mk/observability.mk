# Observability checks: Prometheus alert rules (promtool check/test), Grafana dashboards
# (schema from npm @grafana/schema, PromQL through promtool), and the tools they need.
# Included from the root Makefile; also usable alone: `make -f mk/observability.mk test-observability`.
#
# promtool and prometheus come from Debian's `prometheus` package (installed with
# --no-install-recommends when missing; needs root or sudo). The dashboard JSON Schema is
# generated from the `Dashboard` type @grafana/schema ships, with ts-json-schema-generator,
# into .tools/grafana/ (ignored).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON  ?= python3
VENV    ?= .venv
TOOLS   ?= .tools
OBS_PY             := $(VENV)/bin/python
PROMTOOL           ?= $(shell command -v promtool 2>/dev/null || echo /usr/bin/promtool)
PROMETHEUS         ?= $(shell command -v prometheus 2>/dev/null || echo /usr/bin/prometheus)
GRAFANA_SCHEMA_VERSION := 13.2.3
GRAFANA_TOOLS      := $(TOOLS)/grafana
DASHBOARD_SCHEMA   := $(GRAFANA_TOOLS)/dashboard.schema.json
OBS_PY_TOOLS       := $(VENV)/.observability-tools
OBS_RULES          := $(wildcard observability/rules/*.yml)
OBS_RULE_TESTS     := $(wildcard observability/tests/*.yml)

.PHONY: test-observability observability-rules observability-dashboards observability-tools \
        prometheus-bin dashboards

test-observability: observability-rules observability-dashboards ## Alert rules (promtool check + test) and dashboards (schema + PromQL).

observability-rules: prometheus-bin ## promtool check rules and promtool test rules.
	$(PROMTOOL) check rules $(OBS_RULES)
	$(PROMTOOL) test rules $(OBS_RULE_TESTS)

observability-dashboards: prometheus-bin $(DASHBOARD_SCHEMA) $(OBS_PY_TOOLS) ## Dashboards: generated, valid against the Grafana schema, queries parse.
	$(OBS_PY) observability/check.py --schema $(DASHBOARD_SCHEMA) --promtool $(PROMTOOL)

dashboards: ## Regenerate observability/dashboards/*.json from generate.py.
	$(PYTHON) observability/dashboards/generate.py

observability-tools: prometheus-bin $(DASHBOARD_SCHEMA) $(OBS_PY_TOOLS) ## Install promtool/prometheus, the Grafana schema, jsonschema.

# Debian's prometheus package: the server for e2e/test_prometheus.py and promtool.
prometheus-bin:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	    echo "installing Debian prometheus (--no-install-recommends)"; \
	    $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null \
	      || { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }; \
	fi
	@promtool --version | head -1

$(DASHBOARD_SCHEMA):
	mkdir -p $(GRAFANA_TOOLS)
	test -f $(GRAFANA_TOOLS)/package.json || echo '{"name":"execbridge-grafana-tools","private":true}' > $(GRAFANA_TOOLS)/package.json
	npm install --prefix $(GRAFANA_TOOLS) --no-audit --no-fund --loglevel=error \
	    @grafana/schema@$(GRAFANA_SCHEMA_VERSION) ts-json-schema-generator@2.4.0 typescript@5.9.3
	$(GRAFANA_TOOLS)/node_modules/.bin/ts-json-schema-generator --no-type-check \
	    --path $(GRAFANA_TOOLS)/node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
	    --type Dashboard --out $@.tmp
	mv $@.tmp $@

$(OBS_PY_TOOLS):
	test -x $(OBS_PY) || $(PYTHON) -m venv $(VENV)
	$(OBS_PY) -m pip install --quiet 'jsonschema>=4.20'
	touch $@
