"""Tiny model and data folders for the training tests.

`make_model_folder` writes an HF-format BERT (config.json, model.safetensors,
vocab.txt) with `BertConfig.tiny` dimensions over a small word vocabulary, so
`kerasbert.from_pretrained(folder)` and `--model folder` work offline in a
second. `make_data_folder` writes the CS224N files (tab-separated, `"`
quoting, unnamed index column; the SST test file with its extra index column)
built from those words, with a signal a tiny model can learn:

* SST: a sentence holds exactly one of five sentiment words; that word is the label.
* Quora: a duplicate is the same bag of topic words reordered; a
  non-duplicate shares no topic word.
* STS: the two sentences share `m` of five topic words; the label is `m`
  (0-5, with a little deterministic jitter).

Everything is deterministic given the seed.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
SENTIMENT_WORDS = ["awful", "bad", "okay", "good", "great"]  # label = index
FILLERS = ["the", "movie", "film", "plot", "was", "is", "a", "story", "acting", "very",
           "really", "quite", "and", "it"]
TOPICS = ["cat", "dog", "car", "tree", "house", "river", "music", "food", "city", "book",
          "phone", "game", "train", "school", "money", "rain"]
QUESTION_WORDS = ["how", "what", "why", "do", "i", "you", "can", "to", "get", "?"]
VOCAB = SPECIALS + SENTIMENT_WORDS + FILLERS + TOPICS + QUESTION_WORDS

# Small enough for batch 8 / max_length 16 / bucket 16 to be the only shape:
# every tiny sentence below has at most 10 words (+ [CLS] [SEP]).
TINY_ROWS = {"train": 96, "dev": 48, "test": 32}


def make_model_folder(folder, dropout=0.1, seed=0):
    """Writes a tiny random BERT as an HF folder and returns its path."""
    import keras

    import kerasbert
    from kerasbert import BertBackbone, BertConfig, BertTokenizer

    keras.utils.set_random_seed(seed)
    config = BertConfig.tiny(vocabulary_size=len(VOCAB), dropout=dropout,
                             attention_dropout=dropout)
    backbone = BertBackbone.from_bert_config(config)
    kerasbert.save_pretrained(backbone, BertTokenizer(VOCAB), folder)
    return Path(folder)


def _sst_rows(rng, n):
    rows = []
    for _ in range(n):
        label = int(rng.integers(5))
        words = list(rng.choice(FILLERS, size=int(rng.integers(2, 7))))
        words.insert(int(rng.integers(len(words) + 1)), SENTIMENT_WORDS[label])
        rows.append((" ".join(words), label))
    return rows


def _quora_rows(rng, n):
    rows = []
    for i in range(n):
        duplicate = i % 2 == 0
        picked = rng.choice(TOPICS, size=6, replace=False)
        a, other = list(picked[:3]), list(picked[3:])
        b = list(rng.permutation(a)) if duplicate else other
        qa = list(rng.choice(QUESTION_WORDS[:-1], size=2))
        qb = list(rng.choice(QUESTION_WORDS[:-1], size=2))
        rows.append((" ".join(qa + a + ["?"]), " ".join(qb + b + ["?"]),
                     1.0 if duplicate else 0.0))
    return [rows[i] for i in rng.permutation(n)]


def _sts_rows(rng, n):
    rows = []
    for _ in range(n):
        shared = int(rng.integers(6))
        picked = list(rng.choice(TOPICS, size=10 - shared, replace=False))
        a = picked[:5]
        b = a[:shared] + picked[5:]
        b = [str(w) for w in rng.permutation(b)]
        score = float(np.clip(shared + rng.uniform(-0.2, 0.2), 0.0, 5.0))
        rows.append((" ".join(a), " ".join(b), round(score, 1)))
    return rows


def _write(path, header, rows, extra_index=False):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quotechar='"', lineterminator="\n")
        writer.writerow(([""] if extra_index else []) + [""] + header)
        for i, row in enumerate(rows):
            writer.writerow(([i] if extra_index else []) + [f"{float(i)}" if extra_index else i]
                            + list(row))


def make_data_folder(folder, seed=0, rows=None):
    """Writes the CS224N train/dev/test files for SST, Quora and STS; returns the folder.

    Ids are `{task}-{split}-{i}`; test files have no label column. Quora has
    no test file, as on these machines.
    """
    rows = dict(TINY_ROWS, **(rows or {}))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "dev", "test"):
        n, suffix = rows[split], "test-student" if split == "test" else split
        sst = [(f"sst-{split}-{i}", s, label) for i, (s, label) in enumerate(_sst_rows(rng, n))]
        sts = [(f"sts-{split}-{i}", a, b, y) for i, (a, b, y) in enumerate(_sts_rows(rng, n))]
        if split == "test":
            _write(folder / "ids-sst-test-student.csv", ["id", "sentence"],
                   [r[:2] for r in sst], extra_index=True)
            _write(folder / "sts-test-student.csv", ["id", "sentence1", "sentence2"],
                   [r[:3] for r in sts])
            continue
        _write(folder / f"ids-sst-{suffix}.csv", ["id", "sentence", "sentiment"], sst)
        _write(folder / f"sts-{suffix}.csv", ["id", "sentence1", "sentence2", "similarity"], sts)
        quora = [(f"quora-{split}-{i}", a, b, f"{y:.1f}")
                 for i, (a, b, y) in enumerate(_quora_rows(rng, n))]
        _write(folder / f"quora-{suffix}.csv",
               ["id", "sentence1", "sentence2", "is_duplicate"], quora)
    return folder


def tiny_config(model_dir, data_dir, out, **overrides):
    """A `TrainConfig` for the tiny folders: batch 8, max_length 16, one bucket.

    float32, not `auto`: the exact comparisons (resume, two devices, EM) are
    of float32 runs; bf16 has its own tests (tests/test_precision.py).
    """
    from training.train_config import TrainConfig

    values = dict(model=str(model_dir), data_dir=str(data_dir), out=str(out), epochs=2,
                  batch_size=8, eval_batch_size=16, max_length=16, buckets=(16,),
                  warmup_ratio=0.0, checkpoint_every=3, jit_compile=False, precision="float32",
                  seed=0)
    values.update(overrides)
    return TrainConfig(**values)


# The same settings as command-line flags (for `python -m training.run`).
TINY_FLAGS = ["--epochs", "2", "--batch-size", "8", "--eval-batch-size", "16",
              "--max-length", "16", "--buckets", "16", "--warmup-ratio", "0",
              "--checkpoint-every", "3", "--jit", "off", "--precision", "float32", "--seed", "0"]

REPO = Path(__file__).resolve().parent.parent


def run_training(args, timeout=600):
    """Runs `python -m training.run *args` from the repository root; the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "training.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
