"""`PairData`: sentence-pair examples (Quora paraphrase, STS similarity)."""

from dataclasses import dataclass, field

import numpy as np

from training.example_set import ExampleSet


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
