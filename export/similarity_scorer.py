"""`SimilarityScorer`: STS-style 0-5 scores from an exported text-in TFLite file."""

import json
import warnings
from pathlib import Path

import numpy as np
from kerasbert_lite.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer

from kerasbert_lite.model_file_error import ModelFileError
from export.tflite_runtime import load_interpreter, signature_runner

_SIGNATURE = "similarity"
_INPUTS = ("text_a", "text_b")


class SimilarityScorer:
    """Scores sentence pairs with the `similarity` signature of a text-in TFLite model.

    Runs on the ai-edge-litert runtime with tf-text's custom ops registered,
    so raw strings go in: tokenisation is part of the model. Inputs longer
    than the model's max_length are truncated (as in training), and reported
    through `score_batch(..., return_truncated=True)`. Emoji and any script
    are fine (unknown pieces become [UNK]). A text with no tokens (empty,
    whitespace, or only ignorable characters) has nothing to compare: its
    pair scores NaN, with a warning, and `score()` refuses it. (Two empty
    strings would otherwise score 5.0, as if identical.)

    Not thread-safe: use one scorer per thread.

    Args:
        model_path: an exported text-in model (`model_int8.tflite`,
            `model_float32.tflite`).
        num_threads: CPU threads for the kernels (None: the runtime's default).
        batch_size: pairs per interpreter call in `score_batch`.

    Raises:
        ModelFileError: the file is missing, not TFLite, corrupted, or has no
            text-in `similarity` signature.

    Example:
    >>> scorer = SimilarityScorer("exports/em/model_int8.tflite")  # doctest: +SKIP
    >>> scorer.score("A man plays a guitar.", "A man is playing guitar.")  # doctest: +SKIP
    4.61
    >>> scorer.score_batch(["a", "b"], ["a", "c"]).shape  # doctest: +SKIP
    (2,)
    """

    def __init__(self, model_path, num_threads=None, batch_size=64):
        self.model_path = Path(model_path)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.num_threads = num_threads
        self._interpreter = load_interpreter(self.model_path, num_threads=num_threads)
        details = self._interpreter.get_signature_list().get(_SIGNATURE)
        if details is not None and sorted(details["inputs"]) != sorted(_INPUTS):
            raise ModelFileError(
                self.model_path,
                f"its {_SIGNATURE!r} signature takes {details['inputs']}, not text_a/text_b: "
                "an ids-in model? The scorer needs a text-in model (model_int8.tflite or "
                "model_float32.tflite)")
        self._runner = signature_runner(self._interpreter, _SIGNATURE, self.model_path)
        self._has_truncated = "truncated" in details["outputs"]
        self.max_length = self._read_max_length()
        self._allocated_batch = None
        # The signature runner resizes the inputs and re-allocates the whole
        # graph on every call, which for string inputs re-prepares every op
        # (about 0.7 ms of a 3 ms MiniLM int8 pair). When the batch size is
        # unchanged, setting the strings and invoking is enough: the graph's
        # data-dependent tensors are resized during Invoke anyway. Uses the
        # runner's private handles, so it falls back to the runner without them.
        handles = ("_interpreter_wrapper", "_subgraph_index", "_inputs", "_outputs")
        self._fast = all(hasattr(self._runner, h) for h in handles)

    def _read_max_length(self):
        # The export's manifest sits beside the model; the TFLite file itself
        # does not record max_length.
        manifest = self.model_path.parent / "manifest.json"
        try:
            with open(manifest, encoding="utf-8") as f:
                value = json.load(f).get("max_length")
            return int(value) if value is not None else None
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def score(self, text_a, text_b):
        """The 0-5 similarity of one pair of strings; ValueError if a text has no tokens."""
        for name, text in (("text_a", text_a), ("text_b", text_b)):
            if isinstance(text, str) and not _WORDS.words(text):
                raise ValueError(f"{name} has no tokens (empty or whitespace): an empty text "
                                 "has no similarity to score")
        return float(self.score_batch([text_a], [text_b])[0])

    def score_batch(self, texts_a, texts_b, return_truncated=False, progress=None):
        """Scores pairs `(texts_a[i], texts_b[i])`.

        Args:
            texts_a, texts_b: sequences of strings of the same length.
            return_truncated: also return a bool array, True where the pair
                did not fit max_length and was cut (None if the model does
                not report it).
            progress: called with the number of texts done (two per pair)
                after each model call, as kerasbert_lite's scorer does.

        Returns:
            float32 (N,) scores, or `(scores, truncated)`.
        """
        texts_a = _as_strings(texts_a, "texts_a")
        texts_b = _as_strings(texts_b, "texts_b")
        if len(texts_a) != len(texts_b):
            raise ValueError(f"texts_a has {len(texts_a)} strings but texts_b has "
                             f"{len(texts_b)}")
        n = len(texts_a)
        scores = np.zeros(n, np.float32)
        truncated = np.zeros(n, bool)
        # Similar lengths per call: the model computes up to the longest pair
        # of a batch, so sorting wastes less on padding.
        order = np.argsort([len(a) + len(b) for a, b in zip(texts_a, texts_b)], kind="stable")
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            out = self._invoke(np.array([texts_a[i] for i in idx], dtype=object),
                               np.array([texts_b[i] for i in idx], dtype=object))
            scores[idx] = np.reshape(out["score"], -1)
            if self._has_truncated:
                truncated[idx] = np.reshape(out["truncated"], -1) != 0
            if progress is not None:
                progress(2 * len(idx))
        empty = np.array([not _WORDS.words(a.decode("utf-8")) or not _WORDS.words(
            b.decode("utf-8")) for a, b in zip(texts_a, texts_b)], bool)
        if empty.any():
            warnings.warn(f"{int(empty.sum())} pair(s) with an empty side (no tokens): "
                          "their score is NaN", stacklevel=2)
            scores[empty] = np.nan
        if return_truncated:
            return scores, (truncated if self._has_truncated else None)
        return scores

    def _invoke(self, text_a, text_b):
        """One interpreter call on (B,) object arrays of UTF-8 bytes."""
        if not self._fast or len(text_a) != self._allocated_batch:
            out = self._runner(text_a=text_a, text_b=text_b)  # resizes and allocates
            self._allocated_batch = len(text_a)
            return out
        runner = self._runner
        wrapper, subgraph = runner._interpreter_wrapper, runner._subgraph_index
        wrapper.SetTensor(runner._inputs["text_a"], text_a, subgraph)
        wrapper.SetTensor(runner._inputs["text_b"], text_b, subgraph)
        wrapper.Invoke(subgraph)
        return {name: wrapper.GetTensor(index, subgraph) for name, index in runner._outputs}

    def __repr__(self):
        return (f"SimilarityScorer({str(self.model_path)!r}, num_threads={self.num_threads}, "
                f"max_length={self.max_length})")


# Splits text into words as the in-graph tokenizer does (no vocabulary needed):
# a text with no words has no tokens.
_WORDS = WordPieceTokenizer(list(SPECIAL_TOKENS))


def _as_strings(texts, name):
    """UTF-8 bytes for each text; a clear error for anything that is not a string."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of strings, not a single string "
                        "(use score() for one pair)")
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{name}[{i}] is not valid UTF-8 ({e})") from e
            out.append(text)
        elif isinstance(text, str):
            # Lone surrogates (e.g. from surrogateescape decoding) cannot be
            # encoded: they become "?" rather than an error mid-batch.
            out.append(text.encode("utf-8", errors="replace"))
        else:
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, expected a string")
    return out
