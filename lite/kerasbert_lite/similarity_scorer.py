"""`SimilarityScorer`: kerasbert's ids-in TFLite files on LiteRT, with no TensorFlow.

Understands, by what the file holds:

- `embedder_*.tflite` (MediaPipe-ready, `export.device_models`): the vocabulary
  and `kerasbert.json` are packed inside; `score` is 5 * max(cosine, 0) of
  two embeddings (as the export's manifest says), `embed` the unit vectors;
- `sentiment_*.tflite`: `sentiment` only;
- `model_ids_*.tflite` (all four signatures, ids in): needs `vocab.txt` and
  `manifest.json` beside it, as the export folder has them;
- an export folder: its int8 embedder and sentiment files (the ids-in int8
  file when the export has no embedder).

Text-in files (`model_int8.tflite`, ...) hold tf-text custom ops that
LiteRT alone lacks: they are refused with the file to use instead.

What an empty text means: nothing to compare or classify. A text with no
tokens (empty, whitespace, or only ignorable characters) gets NaN (score,
embedding row, probabilities) and a warning with the count; `score()` of
one pair refuses it with a ValueError.
"""

import json
import warnings
from pathlib import Path

import numpy as np

from kerasbert_lite.model_file_error import ModelFileError
from kerasbert_lite.tflite_file import TFLiteFile, packed_files
from kerasbert_lite.wordpiece import WordPieceTokenizer, read_vocabulary

_TEXT_IN_HINT = ("holds tf-text custom ops (a text-in file) that LiteRT alone cannot run; use "
                 "embedder_int8.tflite or model_ids_int8.tflite from the same export folder, or "
                 "`python -m export.score` with TensorFlow and tensorflow-text")
_SCORES = {"relu": lambda c: 5.0 * np.maximum(c, 0.0),
           "sigmoid": lambda c: 5.0 / (1.0 + np.exp(-c)),
           "linear": lambda c: c}


class SimilarityScorer:
    """Scores, embeds and classifies sentences with an exported ids-in TFLite file.

    Args:
        path: an `embedder_*.tflite`, `sentiment_*.tflite` or
            `model_ids_*.tflite` file, or an export folder.
        num_threads: CPU threads for LiteRT (None: its default).
        batch_size: texts per interpreter call.

    Raises:
        ModelFileError: the file is missing, corrupted, text-in, or lacks what
            the call needs; the message names the file and the one to use.

    Example:
    >>> scorer = SimilarityScorer("exports/em/embedder_int8.tflite")  # doctest: +SKIP
    >>> round(scorer.score("A man plays a guitar.", "A man is playing guitar."), 2)  # doctest: +SKIP
    4.6
    >>> scorer.embed(["a", "b"]).shape  # doctest: +SKIP
    (2, 128)
    """

    def __init__(self, path, num_threads=None, batch_size=32):
        path = Path(path)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.num_threads = num_threads
        if path.is_dir():
            files = [path / n for n in ("embedder_int8.tflite", "sentiment_int8.tflite")
                     if (path / n).is_file()]
            if not any(f.name.startswith("embedder") for f in files) and (
                    path / "model_ids_int8.tflite").is_file():
                files.insert(0, path / "model_ids_int8.tflite")
            if not files:
                raise ModelFileError(path, "holds no embedder_int8.tflite, sentiment_int8.tflite "
                                           "or model_ids_int8.tflite: not an export folder?")
        else:
            files = [path]
        self.path = path
        self.models = [_Model(f, num_threads) for f in files]
        self.max_length = self.models[0].max_length

    def _model_for(self, task):
        for m in self.models:
            if task in m.tasks:
                return m
        have = sorted({t for m in self.models for t in m.tasks})
        hint = {"score": "embedder_*.tflite or model_ids_*.tflite",
                "paraphrase": "model_ids_*.tflite",
                "embed": "embedder_*.tflite or model_ids_*.tflite",
                "sentiment": "sentiment_*.tflite or model_ids_*.tflite"}[task]
        raise ModelFileError(self.path, f"cannot {task} (it can: {', '.join(have) or 'nothing'}); "
                                        f"use {hint} from the export folder")

    # ---- public API ----

    def score(self, text_a, text_b):
        """The 0-5 similarity of one pair; ValueError if a text has no tokens."""
        model = self._model_for("score")
        for name, text in (("text_a", text_a), ("text_b", text_b)):
            if not model.tokenizer.tokenize(_as_str(text, name)):
                raise ValueError(f"{name} has no tokens (empty or whitespace): an empty text "
                                 "has no similarity to score")
        return float(self.score_batch([text_a], [text_b])[0])

    def score_batch(self, texts_a, texts_b, return_truncated=False, progress=None):
        """0-5 scores of `(texts_a[i], texts_b[i])`; NaN where a side has no tokens.

        Args:
            progress: called with the number of texts done after each model call
                (two per pair; e.g. a `kerasbert_lite.progress.Progress`'s `update`).

        Returns:
            float32 (N,), or `(scores, truncated)` with a bool (N,) array, True
            where a text was cut to max_length or had a word over the byte limit.
        """
        texts_a, texts_b = _as_strs(texts_a, "texts_a"), _as_strs(texts_b, "texts_b")
        if len(texts_a) != len(texts_b):
            raise ValueError(f"texts_a has {len(texts_a)} strings but texts_b has "
                             f"{len(texts_b)}")
        scores, truncated = self._model_for("score").score(texts_a, texts_b, self.batch_size,
                                                           progress)
        return (scores, truncated) if return_truncated else scores

    def paraphrase(self, texts_a, texts_b, progress=None):
        """Probabilities that `(texts_a[i], texts_b[i])` are paraphrases, (N,) float32.

        Needs the ids-in file (`model_ids_*.tflite`): the device files have no
        paraphrase head. NaN where a side has no tokens.
        """
        texts_a, texts_b = _as_strs(texts_a, "texts_a"), _as_strs(texts_b, "texts_b")
        if len(texts_a) != len(texts_b):
            raise ValueError(f"texts_a has {len(texts_a)} strings but texts_b has "
                             f"{len(texts_b)}")
        probs, _ = self._model_for("paraphrase").pair_signature(
            "paraphrase", "probability", texts_a, texts_b, self.batch_size, progress)
        return probs

    def embed(self, texts, return_truncated=False, progress=None):
        """Unit-length embeddings, (N, D) float32; NaN rows for texts with no tokens.

        `progress`, if given, is called with the number of texts done after each model call.
        """
        emb, truncated = self._model_for("embed").embed(_as_strs(texts, "texts"), self.batch_size,
                                                        progress)
        return (emb, truncated) if return_truncated else emb

    def sentiment(self, texts, progress=None):
        """(labels, probabilities): a label name per text (None if it has no tokens), (N, C).

        `progress`, if given, is called with the number of texts done after each model call.
        """
        model = self._model_for("sentiment")
        probs, _ = model.sentiment(_as_strs(texts, "texts"), self.batch_size, progress)
        labels = [None if np.isnan(p).any() else model.labels[int(np.argmax(p))] for p in probs]
        return labels, probs

    def __repr__(self):
        return (f"SimilarityScorer({str(self.path)!r}, files="
                f"{[m.path.name for m in self.models]}, max_length={self.max_length})")


class _Model:
    """One ids-in file: its tokenizer, settings and signature runners."""

    def __init__(self, path, num_threads):
        self.path = Path(path)
        self.file = TFLiteFile(self.path, num_threads=num_threads, text_in_hint=_TEXT_IN_HINT)
        signatures = self.file.signatures
        packed = packed_files(self.file.data)
        if "kerasbert.json" in packed and len(signatures) == 1:
            self._init_device_file(packed, signatures)
        elif {"similarity", "embed", "sentiment"} <= set(signatures):
            self._init_ids_file(signatures)
        else:
            raise ModelFileError(self.path, f"is not a kerasbert ids-in file (signatures "
                                            f"{sorted(signatures)}, no kerasbert.json packed)")
        self.tokenizer = WordPieceTokenizer(self.vocabulary, lowercase=self.lowercase)

    def _init_device_file(self, packed, signatures):
        try:
            config = json.loads(packed["kerasbert.json"])
            self.vocabulary = read_vocabulary(packed["vocab.txt"].decode("utf-8"))
        except (KeyError, ValueError, UnicodeDecodeError) as e:
            raise ModelFileError(self.path, f"packed kerasbert.json / vocab.txt unreadable ({e})")
        self.kind = config["model"]
        self.lowercase = bool(config.get("lowercase", True))
        ((self.signature, details),) = signatures.items()
        self.max_length = self.file.input_length(self.signature)
        if self.kind == "embedder":
            self.tasks = ("score", "embed")
            output = config.get("similarity_output", "relu")
            if output not in _SCORES:
                raise ModelFileError(self.path, f"unknown similarity_output {output!r}")
            self.to_score = _SCORES[output]
        else:
            self.tasks = ("sentiment",)
            self.labels = list(config.get("labels") or [])

    def _init_ids_file(self, signatures):
        self.kind = "ids"
        folder = self.path.parent
        for name in ("vocab.txt", "manifest.json"):
            if not (folder / name).is_file():
                raise ModelFileError(self.path, f"needs {name} beside it (the export folder's); "
                                                f"{folder / name} is missing")
        self.vocabulary = read_vocabulary(folder / "vocab.txt")
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            self.lowercase = bool(manifest["lowercase"])
        except (ValueError, KeyError) as e:
            raise ModelFileError(folder / "manifest.json", f"unreadable ({e})") from e
        self.max_length = self.file.input_length("embed")
        self.labels = list(manifest.get("device", {}).get("sentiment", {}).get("labels") or [
            "very negative", "negative", "neutral", "positive", "very positive"])
        self.tasks = ("score", "paraphrase", "embed", "sentiment")

    # ---- batched calls, in length order, results in input order ----

    def _run(self, signature, feeds_for, n, sizes, batch_size, output, progress=None,
             per_item=1):
        order = np.argsort(sizes, kind="stable")
        out = None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            result = self.file.run(signature, feeds_for(idx))[output]
            if out is None:
                out = np.zeros((n,) + result.shape[1:], np.float32)
            out[idx] = result
            if progress is not None:
                progress(per_item * len(idx))
        return out

    def _encode(self, texts):
        enc = self.tokenizer.encode(texts, self.max_length)
        empty = enc["lengths"] <= 2
        return enc, empty

    def _sentence_feed(self, enc, idx, device):
        ids, mask, seg = (enc[k][idx] for k in ("token_ids", "padding_mask", "segment_ids"))
        if device:
            return {"ids": ids, "mask": mask, "segment_ids": seg}
        return {"token_ids": ids, "padding_mask": mask, "segment_ids": seg}

    def embed(self, texts, batch_size, progress=None):
        enc, empty = self._encode(texts)
        signature, output = (self.signature, "embedding") if self.kind != "ids" else (
            "embed", "embedding")
        emb = self._run(signature, lambda idx: self._sentence_feed(enc, idx, self.kind != "ids"),
                        len(texts), enc["lengths"], batch_size, output, progress) if texts else \
            np.zeros((0, 0), np.float32)
        _warn_empty(empty, "text(s)", "embedding")
        emb[empty] = np.nan
        return emb, enc["truncated"]

    def sentiment(self, texts, batch_size, progress=None):
        enc, empty = self._encode(texts)
        signature = self.signature if self.kind != "ids" else "sentiment"
        probs = self._run(signature, lambda idx: self._sentence_feed(enc, idx, self.kind != "ids"),
                          len(texts), enc["lengths"], batch_size, "probabilities",
                          progress) if texts else \
            np.zeros((0, len(self.labels)), np.float32)
        _warn_empty(empty, "text(s)", "sentiment")
        probs[empty] = np.nan
        return probs, enc["truncated"]

    def score(self, texts_a, texts_b, batch_size, progress=None):
        n = len(texts_a)
        if n == 0:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        if self.kind == "embedder":
            emb, truncated = self.embed(list(texts_a) + list(texts_b), batch_size, progress)
            with np.errstate(invalid="ignore"):
                cosine = np.sum(emb[:n] * emb[n:], axis=-1)
            scores = self.to_score(cosine).astype(np.float32)
            return scores, truncated[:n] | truncated[n:]
        return self.pair_signature("similarity", "score", texts_a, texts_b, batch_size, progress)

    def pair_signature(self, signature, output, texts_a, texts_b, batch_size, progress=None):
        """An ids-in file's pair signature (similarity, paraphrase): (values, truncated)."""
        n = len(texts_a)
        if n == 0:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        # The ensemble's own signature, each input group as named.
        inputs = self.file.signatures[signature]["inputs"]
        enc = {"a": self.tokenizer.encode(texts_a, self.max_length),
               "b": self.tokenizer.encode(texts_b, self.max_length)}
        if any(name.startswith("pair_") for name in inputs):
            enc["pair"] = self.tokenizer.encode_pairs(texts_a, texts_b, self.max_length)

        def feed(idx):
            return {name: enc[name.split("_", 1)[0]][name.split("_", 1)[1]][idx]
                    for name in inputs}
        sizes = enc["a"]["lengths"] + enc["b"]["lengths"]
        scores = self._run(signature, feed, n, sizes, batch_size, output, progress,
                           per_item=2)
        empty = (enc["a"]["lengths"] <= 2) | (enc["b"]["lengths"] <= 2)
        _warn_empty(empty, "pair(s) with an empty side", signature)
        scores[empty] = np.nan
        truncated = enc["a"]["truncated"] | enc["b"]["truncated"]
        if "pair" in enc:
            truncated |= enc["pair"]["truncated"]
        return scores, truncated


def _warn_empty(empty, what, result):
    if np.any(empty):
        warnings.warn(f"{int(np.sum(empty))} {what} with no tokens (empty or whitespace): "
                      f"their {result} is NaN", stacklevel=4)


def _as_str(text, name):
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{name} is not valid UTF-8 ({e})") from e
    if not isinstance(text, str):
        raise TypeError(f"{name} is {type(text).__name__}, expected a string")
    return text


def _as_strs(texts, name):
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    return [_as_str(t, f"{name}[{i}]") for i, t in enumerate(texts)]
