# Usual verbs. Every target sets up .venv first (scripts/setup.sh; instant once installed).
PY := .venv/bin/python
.DEFAULT_GOAL := help
.PHONY: help setup train test test-fast test-slow test-slurm test-sagemaker lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup:  ## create .venv with Python 3.12 and the locked dependencies
	@bash scripts/setup.sh

# `make train PY=/path/to/python` trains with an environment of your own as it is (no set-up).
SETUP := $(if $(filter .venv/bin/python,$(PY)),setup)

train: $(SETUP)  ## a real H1 rough-terrain training: preset=quick_gpu where CUDA is present, else quick_cpu
	@preset=$$($(PY) -c "import torch; print('quick_gpu' if torch.cuda.is_available() else 'quick_cpu')") && \
	echo "make train: preset=$$preset" && $(PY) train.py preset=$$preset $(ARGS)

# Two workers: the Slurm tests (one worker, one cluster) wait on the scheduler much of the time, and the other
# worker takes the rest meanwhile. TEST_WORKERS=0 runs the suite in this process, one test after another.
TEST_WORKERS ?= 2

test: setup  ## every tier: unit, real simulator, real Slurm cluster, AWS emulator
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

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
