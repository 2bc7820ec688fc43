"""`export.SentenceModel` gives what the trainer itself predicted, from runs and exports.

Two tiny runs are trained with `python -m training.run` (a dps_mse
bi-encoder and a cross-encoder); the sentence API on their run folders must
reproduce each run's own dev outputs (`predictions/dev-outputs.npz`, the
CS224N files), in input order, whatever the batching. The export side is
checked on the shared tiny export against the members' Keras outputs.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_setup import TINY_FLAGS

REPO = Path(__file__).resolve().parent.parent


def _read_tsv(path, columns):
    with open(path, encoding="utf-8", newline="") as f:
        return [tuple(row[c] for c in columns) for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """{"dps_mse": run folder, "cross": run folder}: one-epoch tiny runs."""
    base = tmp_path_factory.mktemp("sentence_runs")
    out = {"stdout": {}}
    for variant in ("dps_mse", "cross"):
        out[variant] = base / variant
        done = subprocess.run(
            [sys.executable, "-m", "training.run", "--variant", variant, "--model",
             str(tiny_model_dir), "--data-dir", str(tiny_data_dir), "--out", str(out[variant]),
             "--lr", "2e-3", *TINY_FLAGS, "--epochs", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert done.returncode == 0, done.stderr[-3000:]
        out["stdout"][variant] = done.stdout
    return out


def test_a_run_ends_with_a_table(trained):
    import json

    summary = json.loads((trained["dps_mse"] / "summary.json").read_text())
    lines = trained["stdout"]["dps_mse"].splitlines()
    assert lines[0].startswith("dps_mse: best epoch 1 of 1 (")
    assert lines[1] == f"  SST accuracy       {summary['best']['sst_acc']:.3f}"
    assert lines[3] == f"  STS Pearson r      {summary['best']['sts_pearson']:.3f}"
    assert lines[5] == f"{trained['dps_mse'].as_posix()}/"
    assert "predictions/" in lines[7]


def _dev_outputs(run, task, ids):
    with np.load(run / "predictions" / "dev-outputs.npz") as arrays:
        by_id = dict(zip(arrays[f"{task}_ids"].tolist(), arrays[f"{task}_outputs"]))
    return np.array([by_id[i] for i in ids])


@pytest.mark.parametrize("variant", ["dps_mse", "cross"])
def test_run_reproduces_the_trainers_dev_predictions(trained, tiny_data_dir, variant):
    from export import SentenceModel
    from training.predictions import prediction_path, read_predictions

    run = trained[variant]
    model = SentenceModel.from_run(run, batch_size=7)  # batches that cut across lengths
    ids, a, b = zip(*_read_tsv(tiny_data_dir / "sts-dev.csv", ["id", "sentence1", "sentence2"]))
    scores = model.similarity(list(a), list(b))
    np.testing.assert_allclose(scores, _dev_outputs(run, "sts", ids), atol=2e-5)
    written = read_predictions(prediction_path(run / "predictions", "sts", "dev"))
    np.testing.assert_allclose(scores, [written[i] for i in ids], atol=6e-5)  # 4 decimals

    ids, a, b = zip(*_read_tsv(tiny_data_dir / "quora-dev.csv", ["id", "sentence1", "sentence2"]))
    probs = model.paraphrase(list(a), list(b))
    logits = _dev_outputs(run, "quora", ids)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=2e-6)
    written = read_predictions(prediction_path(run / "predictions", "quora", "dev"))
    assert [int(p > 0.5) for p in probs] == [int(written[i]) for i in ids]

    ids, texts = zip(*_read_tsv(tiny_data_dir / "ids-sst-dev.csv", ["id", "sentence"]))
    labels, probs = model.sentiment(list(texts))
    logits = _dev_outputs(run, "sst", ids)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, expected, atol=2e-6)
    written = read_predictions(prediction_path(run / "predictions", "sst", "dev"))
    names = ("very negative", "negative", "neutral", "positive", "very positive")
    assert labels == [names[int(written[i])] for i in ids]

    # One string in, one value out; the same as in a list.
    assert model.similarity(a[0], b[0]) == pytest.approx(float(
        model.similarity([a[0]], [b[0]])[0]), abs=1e-6)


def test_encode_is_what_the_similarity_head_compares(trained, tiny_data_dir):
    from export import SentenceModel

    model = SentenceModel.from_run(trained["dps_mse"])
    _, a, b = zip(*_read_tsv(tiny_data_dir / "sts-dev.csv", ["id", "sentence1", "sentence2"]))
    u, v = model.encode(list(a), batch_size=5), model.encode(list(b), batch_size=64)
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, atol=1e-5)
    # dps_mse: similarity = 5 * relu(cosine of the projections).
    np.testing.assert_allclose(5 * np.maximum((u * v).sum(-1), 0), model.similarity(a, b),
                               atol=2e-5)
    # Input order, not length order, whatever the batch size.
    backwards = model.encode(list(a)[::-1], batch_size=3)
    np.testing.assert_allclose(backwards, u[::-1], atol=1e-6)
    assert model.encode(a[0]).shape == u[0].shape


def test_cross_encoder_has_no_sentence_vectors(trained):
    from export import SentenceModel

    model = SentenceModel.from_run(trained["cross"])
    with pytest.raises(ValueError, match="cross-encoder .* no sentence embeddings"):
        model.encode(["a sentence"])


def test_bad_inputs(trained):
    from export import SentenceModel

    model = SentenceModel.from_run(trained["dps_mse"])
    with pytest.raises(ValueError, match="texts_a has 2 strings but texts_b has 1"):
        model.similarity(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        model.sentiment(["fine", 3])
    with pytest.warns(UserWarning, match="1 pair.* no tokens"):
        scores = model.similarity(["the cat", ""], ["a dog", "a dog"])
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    with pytest.raises(FileNotFoundError, match="run folder does not exist"):
        SentenceModel.from_run(trained["dps_mse"] / "nowhere")


def test_export_goes_through_the_tflite_scorer(export_dir, runs, capsys):
    from export import SentenceModel
    from test_export_fixtures import PAIRS, expected_outputs

    model = SentenceModel.from_export(export_dir, precision="float32")
    a, b = [s for s in PAIRS[0] if s], [s for s in PAIRS[1] if s]
    a, b = a[:min(len(a), len(b))], b[:min(len(a), len(b))]
    members = [runs["bi"], runs["cross"]]
    np.testing.assert_allclose(model.similarity(a, b),
                               expected_outputs(members, "similarity", a, b), atol=1e-4)
    np.testing.assert_allclose(model.paraphrase(a, b),
                               expected_outputs(members, "paraphrase", a, b), atol=1e-4)
    labels, probs = model.sentiment(a)
    np.testing.assert_allclose(probs, expected_outputs(members, "sentiment", a), atol=1e-4)
    assert len(labels) == len(a)
    # The ensemble holds a cross-encoder: no sentence vectors.
    with pytest.raises(ValueError, match="cross-encoder"):
        model.encode(a)
    int8 = SentenceModel.from_export(export_dir)  # the shipped int8 file
    capsys.readouterr()
    assert np.max(np.abs(int8.similarity(a, b, progress=True) - model.similarity(a, b))) < 0.5
    bar = capsys.readouterr().err  # forced on: every text of every pair counted
    assert "similarity" in bar and f"{2 * len(a)}/{2 * len(a)}" in bar


REAL_RUN = Path(os.environ.get("KERASBERT_REAL_RUN", REPO / "runs" / "dps_mse_bf16"))


@pytest.mark.skipif(not (REAL_RUN / "predictions" / "dev-outputs.npz").is_file(),
                    reason="no trained dps_mse_bf16 run folder here (runs/ is not committed)")
def test_real_run_matches_its_dev_predictions(data_dir, sts_dev_pairs):
    # The bf16-trained run scored dev in bf16; SentenceModel computes in float32.
    from export import SentenceModel

    model = SentenceModel.from_run(REAL_RUN)
    rows = _read_tsv(data_dir / "sts-dev.csv", ["id", "sentence1", "sentence2"])[:64]
    ids, a, b = zip(*rows)
    scores = model.similarity(list(a), list(b))
    reference = _dev_outputs(REAL_RUN, "sts", ids)
    assert np.max(np.abs(scores - reference)) < 0.05
    assert np.corrcoef(scores, reference)[0, 1] > 0.9999
