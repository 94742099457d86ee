# Usual verbs. Every target sets up .venv first (scripts/setup.sh; instant once installed).
PY := .venv/bin/python
.DEFAULT_GOAL := help
.PHONY: help setup train test test-fast test-slow test-slurm test-sagemaker lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup:  ## create .venv with Python 3.12 and the locked dependencies
	@bash scripts/setup.sh

train: setup  ## a short real H1 rough-terrain training on this machine's CPU (a few minutes)
	$(PY) train.py preset=quick_cpu $(ARGS)

test: setup  ## every tier: unit, real simulator, real Slurm cluster, AWS emulator
	$(PY) -m pytest tests $(ARGS)

test-fast:  ## unit tests only (seconds)
	$(PY) -m pytest tests -m "not slow and not slurm and not sagemaker" $(ARGS)

test-slow: setup  ## real-simulator training tests
	$(PY) -m pytest tests -m slow $(ARGS)

test-slurm: setup  ## tests against a real Slurm cluster started by the suite (root)
	$(PY) -m pytest tests -m slurm $(ARGS)

test-sagemaker: setup  ## tests against the in-process AWS emulator
	$(PY) -m pytest tests -m sagemaker $(ARGS)

lint: setup  ## ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup  ## ruff fix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
