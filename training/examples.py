"""The records the readers return: `SentenceData`, `PairData` and their `SkippedRow`s.

Example:
>>> d = SentenceData(["a", "b", "c"], ["x", "y", "z"], None, "t.csv")
>>> len(d), d.labeled, d.take(2).ids, d.subset([2]).texts
(3, False, ['a', 'b'], ['z'])
"""

import os
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SkippedRow:
    """One row left out of a dataset: `path`, 1-based physical `line`, `reason`.

    Example:
    >>> str(SkippedRow("/data/quora-dev.csv", 2577, "empty is_duplicate"))
    'quora-dev.csv:2577: empty is_duplicate'
    """

    path: str
    line: int
    reason: str

    def __str__(self):
        return f"{os.path.basename(self.path)}:{self.line}: {self.reason}"


class ExampleSet:
    """Base of `SentenceData` and `PairData`: length, `take`, `subset`, column checks.

    A subclass is a dataclass with `ids`, its text columns (named in `_row_fields`),
    `labels` (an array or None), `source`, `skipped` and `_token_length_cache`.

    """

    _row_fields: tuple = ()

    def __len__(self):
        return len(self.ids)

    @property
    def labeled(self):
        return self.labels is not None

    def take(self, n):
        """The first `n` examples (all when `n` is None), e.g. for `--limit` smoke runs."""
        if n is None:
            return self.subset(np.arange(len(self)))
        if n < 0:
            raise ValueError(f"take(n) needs n >= 0, got {n}")
        return self.subset(np.arange(min(int(n), len(self))))

    def subset(self, indices):
        """The examples at `indices` (any int sequence, order kept), e.g. for `--quora-fraction`.

        `source` and `skipped` are kept: they describe the file the rows came
        from. Token lengths already cached for bucketing are sliced along.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"{self.source}: subset index out of range for {len(self)} examples")
        values = {name: [getattr(self, name)[i] for i in indices] for name in self._row_fields}
        labels = None if self.labels is None else self.labels[indices]
        out = type(self)(**values, labels=labels, source=self.source, skipped=list(self.skipped))
        out._token_length_cache = {key: {part: lengths[indices] for part, lengths in cached.items()}
                                   for key, cached in self._token_length_cache.items()}
        return out

    def _check_lengths(self):
        """Raises `ValueError` naming the file when the columns differ in length."""
        columns = {name: getattr(self, name) for name in self._row_fields}
        if self.labels is not None:
            columns["labels"] = self.labels
        sizes = {name: len(values) for name, values in columns.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{self.source}: columns differ in length {sizes}")


@dataclass(eq=False)
class SentenceData(ExampleSet):
    """Single-sentence classification data (SST, CFIMDB).

    Args:
        ids: example ids, as in the file.
        texts: sentences, whitespace-stripped.
        labels: int32 (N,) class ids, or None for unlabeled (test) data.
        source: the file read (for messages).
        skipped: rows left out of the file, with reasons.

    Example:
    >>> d = SentenceData(["a", "b"], ["good", "bad"], np.array([1, 0], np.int32), "x.csv")
    >>> len(d), d.take(1).texts, d.subset([1, 0]).labels.tolist()
    (2, ['good'], [0, 1])
    """

    ids: list
    texts: list
    labels: np.ndarray | None
    source: str
    skipped: list = field(default_factory=list)
    # Per-tokenizer untruncated token lengths, filled by `training.pipelines`.
    _token_length_cache: dict = field(default_factory=dict, init=False, repr=False)

    _row_fields = ("ids", "texts")

    def __post_init__(self):
        self._check_lengths()


@dataclass(eq=False)
class PairData(ExampleSet):
    """Sentence-pair data (Quora paraphrase, STS similarity).

    Args:
        ids: example ids, as in the file.
        texts_a, texts_b: first and second sentences, whitespace-stripped.
        labels: float32 (N,) (Quora 0/1, STS 0-5), or None for unlabeled data.
        source: the file read (for messages).
        skipped: rows left out of the file, with reasons.

    Example:
    >>> d = PairData(["a"], ["How old?"], ["What age?"], np.array([1.0], np.float32), "q.csv")
    >>> len(d), d.take(5).texts_b
    (1, ['What age?'])
    """

    ids: list
    texts_a: list
    texts_b: list
    labels: np.ndarray | None
    source: str
    skipped: list = field(default_factory=list)
    # Per-tokenizer untruncated token lengths, filled by `training.pipelines`.
    _token_length_cache: dict = field(default_factory=dict, init=False, repr=False)

    _row_fields = ("ids", "texts_a", "texts_b")

    def __post_init__(self):
        self._check_lengths()
