"""`SentenceModel`: a trained run or an export as one object that takes sentences.

In the spirit of sentence-transformers' `SentenceTransformer` and a keras-hub
task: strings in, numbers out, no token batches by hand.

    from export import SentenceModel
    model = SentenceModel.from_run("runs/dps_mse")          # Keras, float32
    model = SentenceModel.from_export("exports/dps_mse")    # LiteRT, int8 (no TensorFlow needed)
    model.encode(["a sentence", "another"])                 # (2, D) unit vectors
    model.similarity("A man plays guitar.", "Someone plays a guitar.")   # 0-5
    model.paraphrase(["q1", "q2"], ["q1 again", "other"])   # probabilities
    model.sentiment(["What a delight!"])                    # (labels, probabilities)

Lists are scored in batches of similar length (less padding), with a
progress bar on long lists at a terminal, and come back in input order. It
lives in export/ because it reads run and export folders (the layout rule:
kerasbert <- training <- export).
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np

from kerasbert_lite.progress import Progress

SST_LABELS = ("very negative", "negative", "neutral", "positive", "very positive")
BINARY_LABELS = ("negative", "positive")
# Lists shorter than this finish in a few seconds: no bar.
PROGRESS_MIN_TEXTS = 512


class SentenceModel:
    """Sentence embeddings, pair scores and sentiment from a run or an export folder.

    Make one with `from_run` or `from_export`. Every method takes a string
    (and returns one result) or a list of strings (and returns arrays in
    input order). A text with no tokens (empty, whitespace) gets NaN, with a
    warning, as `kerasbert_lite` does.

    Example (a tiny random run, as the tests build one):
    >>> import tempfile, pathlib, sys
    >>> sys.path.insert(0, "tests")
    >>> from test_export_fixtures import make_run
    >>> run = make_run(pathlib.Path(tempfile.mkdtemp()) / "bi", seed=1, pair_encoding="bi",
    ...                pooling="mean", similarity_head="cosine", similarity_output="relu",
    ...                projection_dim=8)
    >>> model = SentenceModel.from_run(run)
    >>> model.encode(["the cat sat", "a dog"]).shape
    (2, 8)
    >>> scores = model.similarity(["the cat sat", "a dog"], ["a cat", "the dog is happy"])
    >>> scores.shape, bool(((0 <= scores) & (scores <= 5)).all())
    ((2,), True)
    >>> cosine = float(np.dot(*model.encode(["the cat sat", "a cat"])))
    >>> abs(model.similarity("the cat sat", "a cat") - 5 * max(cosine, 0)) < 1e-5
    True
    >>> label, probabilities = model.sentiment("a happy film")
    >>> label in SST_LABELS, probabilities.shape
    (True, (5,))
    """

    def __init__(self, backend, path, kind):
        self._backend = backend
        self.path = Path(path)
        self.kind = kind
        self.max_length = backend.max_length
        self.pair_encoding = backend.pair_encoding

    @classmethod
    def from_run(cls, path, batch_size=64):
        """A run folder of `python -m training.run` (best.keras, vocab.txt, config.json), in Keras.

        Args:
            path: the run folder.
            batch_size: texts (or pairs) per model call by default.

        Raises:
            FileNotFoundError / ValueError: naming the file that is missing or unusable.
        """
        return cls(_KerasBackend(path, batch_size), path, "run")

    @classmethod
    def from_export(cls, path, precision="int8", batch_size=32, num_threads=None):
        """An export folder of `python -m export.run`, on LiteRT through `kerasbert_lite`.

        Uses the folder's ids-in file `model_ids_{precision}.tflite` (every
        signature, builtin ops), with `vocab.txt` and `manifest.json`
        beside it. An ensemble export scores as the ensemble.

        Args:
            path: the export folder.
            precision: "int8" (the shipped files) or "float32".
            batch_size: texts per interpreter call.
            num_threads: CPU threads for LiteRT (None: its default).
        """
        return cls(_LiteBackend(path, precision, batch_size, num_threads), path, "export")

    # ------------------------------------------------------------------ API
    def encode(self, texts, batch_size=None, progress=None):
        """Sentence vectors, unit length: (N, D) float32, or (D,) for one string.

        Unit length, so a dot product is the cosine the model's cosine
        similarity head scores (`similarity = 5 * max(cosine, 0)` for the
        dps_mse / infonce variants). Only for bi-encoder runs, which encode
        each sentence alone: a cross-encoder reads the two sentences together
        and has no sentence vectors (ValueError).

        Args:
            texts: a string or a list of strings.
            batch_size: texts per model call (default: the model's).
            progress: True / False to force the bar on or off; None shows it
                on long lists at a terminal.
        """
        if self.pair_encoding != "bi":
            raise ValueError(f"{self.path}: a cross-encoder (pairs are encoded together) has "
                             "no sentence embeddings; score pairs with similarity(a, b) or "
                             "paraphrase(a, b), or use a bi-encoder run (dps_mse, infonce, ...)")
        texts, single = _strings(texts, "texts")
        with self._bar(len(texts), "encoding", progress) as bar:
            vectors = self._backend.embed(texts, batch_size, bar.update)
        with np.errstate(invalid="ignore", divide="ignore"):
            vectors = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
        return vectors[0] if single else vectors

    def similarity(self, texts_a, texts_b, batch_size=None, progress=None):
        """STS similarity on the 0-5 scale of each pair `(texts_a[i], texts_b[i])`.

        Returns: (N,) float32, or a float for two strings.
        """
        return self._pairs("similarity", texts_a, texts_b, batch_size, progress)

    def paraphrase(self, texts_a, texts_b, batch_size=None, progress=None):
        """Probability that each pair is a paraphrase (Quora duplicate).

        Returns: (N,) float32, or a float for two strings.
        """
        return self._pairs("paraphrase", texts_a, texts_b, batch_size, progress)

    def sentiment(self, texts, batch_size=None, progress=None):
        """(labels, probabilities): a label name per text and (N, C) class probabilities.

        Labels are SST's five ("very negative" ... "very positive"), or
        "negative" / "positive" for a CFIMDB run; None for a text with no
        tokens. For one string: (label, (C,) probabilities).
        """
        texts, single = _strings(texts, "texts")
        with self._bar(len(texts), "sentiment", progress) as bar:
            probs = self._backend.sentiment(texts, batch_size, bar.update)
        names = SST_LABELS if probs.shape[-1] == 5 else BINARY_LABELS
        labels = [None if np.isnan(p).any() else names[int(np.argmax(p))] for p in probs]
        return (labels[0], probs[0]) if single else (labels, probs)

    def __repr__(self):
        return (f"SentenceModel.from_{self.kind}({str(self.path)!r}) "
                f"[{self.pair_encoding}-encoder, max_length {self.max_length}]")

    # -------------------------------------------------------------- helpers
    def _pairs(self, task, texts_a, texts_b, batch_size, progress):
        texts_a, single_a = _strings(texts_a, "texts_a")
        texts_b, single_b = _strings(texts_b, "texts_b")
        if single_a != single_b or len(texts_a) != len(texts_b):
            raise ValueError(f"texts_a has {len(texts_a)} strings but texts_b has "
                             f"{len(texts_b)}: give two strings or two lists of one length")
        with self._bar(2 * len(texts_a), task, progress) as bar:
            out = self._backend.pairs(task, texts_a, texts_b, batch_size, bar.update)
        return float(out[0]) if single_a else out

    @staticmethod
    def _bar(total, desc, progress):
        return Progress(total, desc, unit="text", enabled=progress,
                        min_total=PROGRESS_MIN_TEXTS)


def _strings(texts, name):
    """(list of str, was a single string)."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, bytes):
        return [texts.decode("utf-8")], True
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, expected a string")
        out.append(text)
    return out, False


def _warn_empty(empty, what):
    if np.any(empty):
        warnings.warn(f"{int(np.sum(empty))} {what} with no tokens (empty or whitespace): "
                      "NaN", stacklevel=4)


class _KerasBackend:
    """A run folder's best.keras (float32), batched by token length."""

    def __init__(self, path, batch_size):
        import tensorflow as tf

        from export.run_folder import RunFolder
        from kerasbert.bert_tokenizer import BertTokenizer

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        run = RunFolder(path)
        self.model = run.load_model()
        self.max_length = run.max_length
        self.pair_encoding = self.model.pair_encoding
        self.tokenizer = BertTokenizer(run.vocabulary(), lowercase=run.lowercase,
                                       max_length=run.max_length)
        self._tf = tf
        self._functions = {}

    def _call(self, name, inputs):
        tf = self._tf
        if name not in self._functions:
            submodel = self.model.task_model(name)
            # One trace for every batch size and padded length.
            spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None, None], t.dtype), inputs)
            self._functions[name] = tf.function(lambda x: submodel(x, training=False),
                                                input_signature=[spec])
        return np.asarray(self._functions[name](inputs))

    def _width(self, lengths):
        """The padded length of a batch: its longest text, up to a multiple of 8."""
        return int(min(self.max_length, 8 * math.ceil(max(int(np.max(lengths)), 2) / 8)))

    def _batches(self, sizes, batch_size, update):
        """Index arrays of batches in length order; `update` after each."""
        order = np.argsort(sizes, kind="stable")
        step = int(batch_size or self.batch_size)
        for start in range(0, len(order), step):
            idx = order[start:start + step]
            yield idx
            update(len(idx))

    def _lengths(self, texts):
        return self.tokenizer.token_lengths(texts).numpy() if texts else np.zeros(0, int)

    def embed(self, texts, batch_size, update):
        lengths = self._lengths(texts)
        out = None
        for idx in self._batches(lengths, batch_size, update):
            batch = [texts[i] for i in idx]
            vectors = self._call("embedding", self.tokenizer(batch, max_length=self._width(
                lengths[idx])))
            if out is None:
                out = np.zeros((len(texts), vectors.shape[-1]), np.float32)
            out[idx] = vectors
        if out is None:
            return np.zeros((0, 0), np.float32)
        _warn_empty(lengths <= 2, "text(s)")
        out[lengths <= 2] = np.nan
        return out

    def sentiment(self, texts, batch_size, update):
        lengths = self._lengths(texts)
        out = np.zeros((len(texts), self.model.num_sentiment_classes), np.float32)
        for idx in self._batches(lengths, batch_size, update):
            batch = [texts[i] for i in idx]
            logits = self._call("sentiment", self.tokenizer(batch, max_length=self._width(
                lengths[idx]))).astype(np.float64)
            logits -= logits.max(axis=-1, keepdims=True)
            out[idx] = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        _warn_empty(lengths <= 2, "text(s)")
        out[lengths <= 2] = np.nan
        return out

    def pairs(self, task, texts_a, texts_b, batch_size, update):
        len_a, len_b = self._lengths(texts_a), self._lengths(texts_b)
        out = np.zeros(len(texts_a), np.float32)
        # Each pair counts as two texts in the bar, as in kerasbert_lite.
        for idx in self._batches(len_a + len_b, batch_size, lambda n: update(2 * n)):
            a, b = [texts_a[i] for i in idx], [texts_b[i] for i in idx]
            if self.pair_encoding == "cross":
                inputs = {"pair": self.tokenizer(a, b, max_length=self._width(
                    len_a[idx] + len_b[idx] - 1))}
            else:
                inputs = {"a": self.tokenizer(a, max_length=self._width(len_a[idx])),
                          "b": self.tokenizer(b, max_length=self._width(len_b[idx]))}
            out[idx] = np.reshape(self._call(task, inputs), -1)
        if task == "paraphrase":
            out = (1.0 / (1.0 + np.exp(-out.astype(np.float64)))).astype(np.float32)
        empty = (len_a <= 2) | (len_b <= 2)
        _warn_empty(empty, "pair(s) with an empty side")
        out[empty] = np.nan
        return out


class _LiteBackend:
    """An export folder's ids-in TFLite file through `kerasbert_lite.SimilarityScorer`."""

    def __init__(self, path, precision, batch_size, num_threads):
        from kerasbert_lite.similarity_scorer import SimilarityScorer

        if precision not in ("int8", "float32"):
            raise ValueError(f"precision must be 'int8' or 'float32', got {precision!r}")
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: export folder does not exist")
        manifest_path = folder / "manifest.json"
        try:
            members = json.loads(manifest_path.read_text(encoding="utf-8"))["members"]
        except FileNotFoundError:
            raise FileNotFoundError(f"{manifest_path}: missing (not an export folder of "
                                    "python -m export.run?)") from None
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            raise ValueError(f"{manifest_path}: unreadable ({e})") from e
        # Sentence vectors mean something only when every member encodes sentences alone.
        self.pair_encoding = ("bi" if all(m.get("pair_encoding") == "bi" for m in members)
                              else "cross")
        self.scorer = SimilarityScorer(folder / f"model_ids_{precision}.tflite",
                                       num_threads=num_threads, batch_size=batch_size)
        self.max_length = self.scorer.max_length

    def _sized(self, batch_size):
        if batch_size is not None:
            if int(batch_size) < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            self.scorer.batch_size = int(batch_size)

    def embed(self, texts, batch_size, update):
        self._sized(batch_size)
        return self.scorer.embed(texts, progress=update)

    def sentiment(self, texts, batch_size, update):
        self._sized(batch_size)
        return self.scorer.sentiment(texts, progress=update)[1]

    def pairs(self, task, texts_a, texts_b, batch_size, update):
        self._sized(batch_size)
        if task == "paraphrase":
            return self.scorer.paraphrase(texts_a, texts_b, progress=update)
        return self.scorer.score_batch(texts_a, texts_b, progress=update)
