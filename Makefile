# The verbs people type. Every target creates what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# SAM CLI and cfn-lint pin their own boto3/botocore ranges: they live in their own venv so they
# never constrain the function's dependencies.
TOOLS := .tools
SAM := $(TOOLS)/sam/bin/sam
CFN_LINT := $(TOOLS)/sam/bin/cfn-lint
# checkov pins an old boto3 and urllib3 1.x, which conflict with SAM CLI's: its own venv, shared
# with bandit (neither is a dependency of the function or of the tests).
SCANNERS := $(TOOLS)/checkov
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
export FANOUT_SAM := $(abspath $(SAM))
export FANOUT_CFN_LINT := $(abspath $(CFN_LINT))

.PHONY: setup demo invoke docs docs-serve test unit integration template lint scan stress bench build clean

setup: $(VENV)/.installed $(TOOLS)/sam/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(TOOLS)/sam/.installed:
	$(PYTHON) -m venv $(TOOLS)/sam
	$(TOOLS)/sam/bin/pip install --quiet --disable-pip-version-check aws-sam-cli cfn-lint
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/fanout demo

# One SQS event file through the real handler, as `sam local invoke -e` passes it, without
# Docker: against the emulator AWS_ENDPOINT_URL names, else an embedded one started for it.
EVENT ?= events/sqs-cloudfront-invalidate.json
invoke: $(VENV)/.installed
	$(VENV)/bin/fanout invoke $(EVENT)

# The docs site (mkdocs.yml, docs/), built offline into site/; --strict fails on broken links.
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed
	$(VENV)/bin/mkdocs serve

test: setup lint scan
	$(PY) -m pytest

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

integration: $(VENV)/.installed
	$(PY) -m pytest tests/integration

template: setup
	$(PY) -m pytest tests/template

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Static scanners: checkov on both templates (every skip is justified in the resource's
# Metadata.checkov.skip), bandit on the function's code (medium and high severity).
$(SCANNERS)/.installed:
	$(PYTHON) -m venv $(SCANNERS)
	$(SCANNERS)/bin/pip install --quiet --disable-pip-version-check 'checkov>=3.2,<4' 'bandit>=1.8,<2'
	touch $@

scan: $(SCANNERS)/.installed
	$(SCANNERS)/bin/checkov -f template.yaml -f target-role.yaml --framework cloudformation --skip-download --quiet
	$(SCANNERS)/bin/bandit -r src -ll

# The fault-injection suite ROUNDS times under CPU contention and slow AWS answers; fails unless
# every scenario shows 0 duplicated / 0 lost / 0 ended twice (make test runs one round, loaded).
ROUNDS ?= 10
stress: $(VENV)/.installed
	$(PY) -m tests.integration.faults.stress --rounds $(ROUNDS)

# Benchmarks measure (they are not tests): results go to bench/results/latest.{md,json}.
bench: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m fanout.bench.run $(BENCH_ARGS)

build: setup
	PYENV_VERSION=3.11.7:3.12.1:3.13.0 $(SAM) build

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .mypy_cache .ruff_cache site
