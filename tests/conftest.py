import os
import sys
from pathlib import Path

import pytest

# experiments/ (the results bookkeeping) is not installed: tests import it from the checkout,
# as `python -m experiments.results` does from the repository root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir():
    """The CS224N data folder: $KERASBERT_DATA, else ../shared/data beside the repo."""
    path = Path(os.environ.get("KERASBERT_DATA")
                or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (path / "ids-sst-dev.csv").is_file():
        pytest.fail(f"CS224N data not found at {path}; set KERASBERT_DATA")
    return path


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 as (backbone, tokenizer, folder)."""
    import kerasbert
    from kerasbert.from_pretrained import embedded_model_dir
    backbone, tokenizer = kerasbert.from_pretrained()
    return backbone, tokenizer, embedded_model_dir()


def _read_tsv(path, columns):
    """Rows of a CS224N file (tab-separated, `"` quoting) as tuples of the named columns."""
    import csv
    with open(path, encoding="utf-8", newline="") as f:
        return [tuple(row[c] for c in columns) for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="session")
def sst_dev_sentences(data_dir):
    """Every sentence of ids-sst-dev.csv, in file order."""
    return [s for (s,) in _read_tsv(data_dir / "ids-sst-dev.csv", ["sentence"])]


@pytest.fixture(scope="session")
def sts_dev_pairs(data_dir):
    """Every (sentence1, sentence2) pair of sts-dev.csv, in file order."""
    return _read_tsv(data_dir / "sts-dev.csv", ["sentence1", "sentence2"])


# ---- tiny training folders (tests/tiny_setup.py), shared by the training tests ----

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An HF-format tiny BERT folder over tiny_setup.VOCAB (dropout 0.1)."""
    from tiny_setup import make_model_folder
    return make_model_folder(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model_dir_no_dropout(tmp_path_factory):
    """The same tiny BERT with encoder dropout 0 (for exact cross-device comparisons)."""
    from tiny_setup import make_model_folder
    return make_model_folder(tmp_path_factory.mktemp("tiny_model_nodrop"), dropout=0.0)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """CS224N-format SST / Quora / STS files with a learnable signal (tiny_setup)."""
    from tiny_setup import make_data_folder
    return make_data_folder(tmp_path_factory.mktemp("tiny_data"))


# ---- the shared export of two tiny fake runs (test_export_fixtures.exported) ----

@pytest.fixture(scope="session")
def export_dir():
    """The export folder written once by `python -m export.run` on the tiny runs."""
    from test_export_fixtures import exported
    _, _, out, code = exported()
    assert code == 0, "export.run failed; see the captured output"
    return out


@pytest.fixture(scope="session")
def runs():
    """{"bi": run folder, "cross": run folder}: the exported members."""
    from test_export_fixtures import exported
    return exported()[1]
