# Sluice developer entry points. `make help` lists them.
SHELL := /bin/bash
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed
export KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv deps bins cluster-up cluster-down run load demo demo-down test test-unit test-integration lint crds manifests bench bench-scale bench-control clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV_STAMP) ## create .venv with Sluice and its test tools

deps: ## install system packages (Debian) the tests need
	bash hack/install-deps.sh

bins: ## build the cluster binaries (cached under ~/.cache/sluice/bin)
	hack/build-bins.sh all

cluster-up: $(VENV_STAMP) ## start (or reuse) the local cluster and its data plane [MODELS=dir]
	@$(PY) hack/localcluster.py up --dataplane $(if $(MODELS),--models $(abspath $(MODELS)))

cluster-down: ## stop every process of the local cluster
	@python3 hack/localcluster.py down

run: $(VENV_STAMP) ## the operator in the foreground against the local cluster and its Prometheus
	$(PY) -m sluice.cli run --standalone --health-port 0 --metrics-port 0 \
	  --prometheus-url $$($(PY) hack/localcluster.py url prometheus) --rate-window 10s

ISVC ?= default/slo
RATE ?= 20
DURATION ?= 60
SHAPE ?= steady
load: $(VENV_STAMP) ## Triton requests through the gateway: ISVC=ns/name RATE=req/s DURATION=s [SHAPE=steady|ramp|burst]
	$(PY) hack/load.py $(ISVC) --rate $(RATE) --duration $(DURATION) --shape $(SHAPE)

demo: deps $(VENV_STAMP) ## the main job, narrated: SLO scale-up, canary promoted, canary rolled back, A/B split, timeline PNG
	$(PY) hack/demo.py up

demo-down: ## stop the demo's operator and the cluster
	$(PY) hack/demo.py down

lint: $(VENV_STAMP) ## ruff, mypy on the pure core, import-linter layer contracts
	.venv/bin/ruff check operator tests hack
	.venv/bin/ruff format --check operator/sluice/api
	.venv/bin/mypy
	.venv/bin/lint-imports

crds: $(VENV_STAMP) ## regenerate crds/ from the spec types, and what is derived from them
	.venv/bin/sluice crd > crds/sluice.dev_inferenceservices.yaml
	hack/gen-install.sh

manifests: $(VENV_STAMP) ## sync the chart's CRDs, regenerate manifests/install.yaml and the Argo CD patch
	hack/gen-install.sh

test-unit: $(VENV_STAMP)
	$(PY) -m pytest tests/unit -q

test-integration: $(VENV_STAMP) bins
	$(PY) -m pytest tests/integration -q

test: deps $(VENV_STAMP) bins lint ## the test command: lint, unit and integration tests on real parts
	$(PY) -m pytest tests -q

bench: deps $(VENV_STAMP) bins ## benchmarks; results in docs/bench/ (summary: docs/bench/README.md)
	$(PY) -m tests.bench

bench-scale: deps $(VENV_STAMP) bins ## N=100,300,1000 services vs a plain client; docs/bench/scale.json (about 1 h on 2 cores; more under load)
	$(PY) -m tests.bench.scale_bench

bench-control: $(VENV_STAMP) ## control quality: Sluice vs HPA, KEDA, oracle on simulated traffic (ARGS=--quick)
	$(PY) -m tests.bench.control $(ARGS)

clean: cluster-down
	rm -rf .venv build dist *.egg-info
