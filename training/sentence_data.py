"""`SentenceData`: single-sentence classification examples (SST, CFIMDB)."""

from dataclasses import dataclass, field

import numpy as np

from training.example_set import ExampleSet


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
