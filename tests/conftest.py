import os
from pathlib import Path

import pytest

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
