# kubectl-caas: `make test` and `make demo` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KEYSTONE_VENV := .cache/keystone-venv
OSC_VENV := .cache/osc-venv
OIDC_DIR := tests/servers/oidc
STAMP := $(VENV)/.installed

.PHONY: all test unit integration lint demo bench plugins clean env FORCE

all: test

$(STAMP): pyproject.toml scripts/kubectl_caas_front
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(KEYSTONE_VENV)/.ready: tests/servers/keystone.py | $(STAMP)
	$(PY) tests/servers/keystone.py ensure-venv $(KEYSTONE_VENV)
	touch $@

$(OSC_VENV)/.ready: tests/servers/osc.py | $(STAMP)
	$(PY) tests/servers/osc.py ensure-venv $(OSC_VENV)
	touch $@

$(OIDC_DIR)/node_modules/.ready: $(OIDC_DIR)/package-lock.json
	cd $(OIDC_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

env: $(STAMP) $(KEYSTONE_VENV)/.ready $(OSC_VENV)/.ready $(OIDC_DIR)/node_modules/.ready

lint: $(STAMP)
	$(VENV)/bin/ruff check kubectl_caas tests benchmarks plugins demo

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

PLUGIN_SOURCES := $(shell find kubectl_caas -name '*.py' -o -name '*.json') pyproject.toml plugins/build.py scripts/kubectl_caas_front \
	$(wildcard plugins/krew/*.yaml)

# `make plugins SITE=plugins/sites/NAME.yaml` bakes that site's defaults into both files
# (plugins/README.md). `:=` so that a SITE variable in the environment is not picked up by accident.
SITE :=
# Rebuild when SITE names another file (or none): dist/.site holds the name of the last one.
dist/.site: FORCE
	@mkdir -p dist
	@echo '$(SITE)' | cmp -s - $@ || echo '$(SITE)' > $@

dist/kubectl-openstack dist/kubectl-iam &: $(PLUGIN_SOURCES) dist/.site $(SITE) | $(STAMP)
	$(PY) plugins/build.py --out dist $(if $(SITE),--site $(SITE))

plugins: dist/kubectl-openstack dist/kubectl-iam

test: env lint plugins
	KEYSTONE_VENV=$(abspath $(KEYSTONE_VENV)) $(PY) -m pytest tests -q -n 2

demo: env
	KEYSTONE_VENV=$(abspath $(KEYSTONE_VENV)) $(PY) demo/demo.py

bench: env
	KEYSTONE_VENV=$(abspath $(KEYSTONE_VENV)) $(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) .cache dist build $(OIDC_DIR)/node_modules
