# The two commands of README.md: `make dev` (the connector on the local stack) and `make test`.
# Everything they need is fetched by the project itself: the venv from PyPI, Kafka and the
# registry from Maven Central (devstack/), helm and kubeconform from the Go module proxy.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
CONNECTOR := $(VENV)/bin/connector
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
UV_VERSION := 0.13.9
LOCK_ARGS ?=
# The package's version: pyproject.toml is its one source (the package, the image label, the chart's appVersion).
VERSION = $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")

.PHONY: dev test stack stop status venv setup tools bench clean lock image

dev: setup ## Run the connector on the local stack: Kafka, registry, 8x8 sandbox, worker
	$(CONNECTOR) dev

test: setup tools ## The whole test suite against the real broker and registry
	$(PY) -m pytest $(PYTEST_ARGS)

setup: venv stack ## venv + stack + topics + schemas
	$(CONNECTOR) topics create
	$(CONNECTOR) schemas register

venv: $(STAMP)

# The versions the tests passed with: requirements-dev.lock (hashes checked), then the package itself.
$(STAMP): pyproject.toml requirements-dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --require-hashes -r requirements-dev.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

lock: venv ## Re-resolve requirements.lock (image) and requirements-dev.lock (make, CI) from pyproject.toml
	$(VENV)/bin/pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --extra rocksdb --generate-hashes --python-version 3.11 $(LOCK_ARGS) -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra rocksdb --generate-hashes --python-version 3.11 $(LOCK_ARGS) -o requirements-dev.lock

image: ## Build the image kafka-8x8-connector:<version>, labelled with the version of pyproject.toml
	docker build --build-arg VERSION=$(VERSION) -t kafka-8x8-connector:$(VERSION) .

stack: ## Start Kafka (KRaft) and Apicurio Registry on 127.0.0.1 (idempotent)
	devstack/stack up

stop: ## Stop everything the project started
	devstack/stack down

status:
	devstack/stack status

tools: ## helm, kubeconform, helm-docs and promtool for the chart tests; chromium for the console's browser tests
	devstack/tools/install.sh

bench: setup ## The benchmarks of bench/, each prints its figures and its ratio to a baseline
	@command -v wrk >/dev/null || { echo "error: the benchmarks need wrk: apt-get install -y wrk"; exit 1; }
	$(PY) bench/sandbox.py
	$(PY) bench/ingress.py
	$(PY) bench/commands.py

clean:
	rm -rf $(VENV) connector-data
