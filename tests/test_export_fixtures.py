"""Shared by the export and scorer tests: tiny fake runs and one export of them.

No tests here. The export (SavedModel + four TFLite conversions, about a
minute) is built once per pytest process by `exported()` and reused by
test_export.py and test_scorer.py.
"""

import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

from kerasbert import BertBackbone, BertConfig, MultitaskBert
from kerasbert.bert_tokenizer import BertTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "cat", "dog", "sat", "on", "mat",
         "is", "happy", "sad", "good", "bad", "movie", "film", "man", "woman", "plays",
         "play", "music", "guitar", "not", "very", "two", "run", "field", "##s", "##ing",
         ".", ",", "!", "?", "'"]
MAX_LENGTH = 16
# The two members of the shared export: a bi-encoder with dot/cosine heads and
# a cross-encoder, so mixed ensembles and both pair layouts are exercised.
MEMBERS = {
    "bi": dict(pair_encoding="bi", pooling="mean", paraphrase_head="dot",
               similarity_head="cosine", similarity_output="relu", projection_dim=8),
    "cross": dict(pair_encoding="cross", pooling="pooled"),
}
SENTENCES = ["the cat sat on the mat .", "a dog is very happy !", "", "the film is not good",
             "two men play music", "Guitar?", "😀 🎸", "猫在垫子上", "the " * 30]
PAIRS = (["the cat sat on the mat .", "a man plays guitar", "", "the movie is bad",
          "😀", "猫", "dog " * 20, "the film"],
         ["a cat sat .", "a woman plays music", "", "the film is good",
          "the dog", "", "cat", "dog " * 20])


def randomize(model, seed, scale=0.3):
    """Random weights of a visible size, so outputs differ between inputs."""
    rng = np.random.default_rng(seed)
    model.set_weights([
        (1.0 + scale * rng.standard_normal(w.shape) if "gamma" in v.path
         else scale * rng.standard_normal(w.shape)).astype("float32")
        for v, w in zip(model.weights, model.get_weights())])


def make_run(folder, seed, vocab=VOCAB, max_length=MAX_LENGTH, variant=None, **model_kwargs):
    """Writes a fake run folder (config.json, best.keras, vocab.txt) like training does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    config = BertConfig.tiny(vocabulary_size=len(vocab), max_sequence_length=32)
    model = MultitaskBert(BertBackbone.from_bert_config(config), **model_kwargs)
    randomize(model, seed)
    model.save(folder / "best.keras")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({
        "variant": variant or folder.name, "max_length": max_length, "lowercase": True,
        "num_sentiment_classes": 5, "model": "tiny"}))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "seed": seed}) + "\n")
    return folder


_CACHE = {}


def load_member(run):
    """The run's saved model, loaded once per process."""
    key = ("model", str(run))
    if key not in _CACHE:
        _CACHE[key] = keras.saving.load_model(Path(run) / "best.keras")
    return _CACHE[key]


def exported():
    """(root, {"bi": run, "cross": run}, export dir, CLI exit code), built once per process."""
    if "root" not in _CACHE:
        from export.run import main
        root = Path(tempfile.mkdtemp(prefix="kerasbert_export_test_"))
        # Shared by two test modules, so no pytest tmp_path: removed at exit.
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        runs = {name: make_run(root / "runs" / name, seed=i + 1, **kwargs)
                for i, (name, kwargs) in enumerate(MEMBERS.items())}
        out = root / "exports" / "em"
        code = main(["--runs", str(runs["bi"]), str(runs["cross"]), "--out", str(out)])
        _CACHE.update(root=root, runs=runs, out=out, code=code)
    return _CACHE["root"], _CACHE["runs"], _CACHE["out"], _CACHE["code"]


def expected_outputs(run_dirs, task, texts_a, texts_b=None, max_length=MAX_LENGTH):
    """What the ensemble must output, computed member by member in Keras.

    Written independently of `export.multitask_ensemble`: each member's Keras
    sub-model on fixed-length inputs, then the documented combination.
    """
    tok = BertTokenizer(VOCAB, lowercase=True, max_length=max_length)

    def enc(*texts):
        return {k: v.numpy() for k, v in tok(*texts, max_length=max_length).items()}

    outs = []
    for run in run_dirs:
        model = load_member(run)
        if task in ("paraphrase", "similarity"):
            inputs = ({"pair": enc(texts_a, texts_b)} if model.pair_encoding == "cross"
                      else {"a": enc(texts_a), "b": enc(texts_b)})
        else:
            inputs = enc(texts_a)
        name = "embedding" if task == "embed" else task
        out = np.asarray(model.task_model(name)(inputs, training=False), np.float64)
        if task == "sentiment":
            out = np.exp(out) / np.exp(out).sum(-1, keepdims=True)
        elif task == "paraphrase":
            out = 1 / (1 + np.exp(-out))
        elif task == "embed":
            out = out / np.linalg.norm(out, axis=-1, keepdims=True)
        outs.append(out)
    if task == "embed":
        return np.concatenate(outs, -1) / math.sqrt(len(outs))
    return np.mean(outs, axis=0)
