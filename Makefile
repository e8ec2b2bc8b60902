# OncoAgent: `make demo` and `make test` are all a fresh clone needs (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
# Debian packages the test suite drives as real peers (postgresql: the store's second backend, a server per test
# session); installed by `make system-deps` when missing.
SYSTEM_PACKAGES := dcmtk orthanc iproute2 util-linux dicom3tools poppler-utils libharfbuzz-subset0 postgresql chromium
# The web worklist's front-end libraries (package.json, package-lock.json) are installed from the npm registry
# by `npm ci` and copied beside the web app's own static files; nothing of them is committed.
VENDOR := agent/web/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed
export YOLO_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv web-assets demo test test-unit lint system-deps lock clean

help:
	@echo "make demo    create .venv, install, run the daemon on generated sample inputs"
	@echo "make test    install (with test tools and system packages) and run the whole suite"
	@echo "make lint    ruff, mypy and the import contracts (lint-imports)"

venv: $(STAMP)

# pyradiomics ships only an sdist whose build needs numpy and versioneer present: install those first,
# then build it without isolation, then everything else from the lock, then this project (editable).
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) pip setuptools wheel
	$(BIN)/pip install -q -c $(LOCK) numpy versioneer
	$(BIN)/pip install -q -c $(LOCK) --no-build-isolation pyradiomics
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

web-assets: $(VENDOR_STAMP)

$(VENDOR_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)
	cp -r node_modules/openseadragon/build/openseadragon $(VENDOR)/openseadragon
	touch $(VENDOR_STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: $(STAMP) $(VENDOR_STAMP)
	$(BIN)/oncoagent --data-dir var/demo demo

# The unit tests (offline, independent) run on both cores; the rest, with its real servers and timing, one at a time.
test: $(STAMP) system-deps $(VENDOR_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy agent pipelines dicom_node reports
	$(BIN)/lint-imports
	.ci/check-paths
	tests/run-isolated.sh $(BIN)/python -m pytest -q -n 2 tests/unit
	tests/run-isolated.sh $(BIN)/python -m pytest -q tests/integration tests/e2e

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy agent pipelines dicom_node reports
	$(BIN)/lint-imports

# Regenerate the lock from a clean venv of the direct dependencies (run after editing pyproject.toml), the test
# tools and the benchmarks' peers (sahi: benchmarks/wsi_vs_sahi.py).
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install -q numpy setuptools wheel versioneer
	.lockvenv/bin/pip install -q --no-build-isolation pyradiomics
	.lockvenv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 -e . pytest pytest-timeout ruff mypy import-linter hypothesis playwright schemathesis pytest-xdist sahi
	(head -2 $(LOCK); .lockvenv/bin/pip list --format=freeze | grep -iE '^(pip|setuptools|wheel)=='; \
	 .lockvenv/bin/pip freeze --exclude-editable) > $(LOCK).new && mv $(LOCK).new $(LOCK)
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) var node_modules $(VENDOR) .pytest_cache .ruff_cache .mypy_cache
