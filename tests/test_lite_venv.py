"""kerasbert-lite installed alone: `pip install ./lite` in a fresh venv, no TensorFlow.

The distribution must pull ai-edge-litert and numpy and nothing of
TensorFlow, and score the shared tiny export's embedder file there (the
numbers equal the scorer in this process).
"""

import subprocess
import venv
from pathlib import Path

import pytest

from test_export_fixtures import exported

LITE = Path(__file__).resolve().parents[1] / "lite"


def test_lite_installs_and_scores_without_tensorflow(tmp_path):
    _, _, export_dir, code = exported()
    assert code == 0
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(LITE)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True).stdout.lower()
    assert "ai-edge-litert" in listed and "numpy" in listed
    names = [line.split("==")[0] for line in listed.split()]
    assert not [n for n in names if n.startswith("tensorflow") or n in ("keras", "tf-keras")]
    model = export_dir / "embedder_int8.tflite"
    run = subprocess.run([str(python), "-m", "kerasbert_lite", str(model), "the cat sat",
                          "a cat sat ."], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    from kerasbert_lite import SimilarityScorer
    want = SimilarityScorer(model).score("the cat sat", "a cat sat .")
    assert float(run.stdout) == pytest.approx(want, abs=1e-4)
    probe = subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True)
    assert probe.returncode != 0
