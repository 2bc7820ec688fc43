"""`ExampleSet`: what the sentence and sentence-pair data records share."""

import numpy as np


class ExampleSet:
    """Base of `SentenceData` and `PairData`: length, `take`, `subset`, column checks.

    A subclass is a dataclass with `ids`, its text columns (named in `_row_fields`),
    `labels` (an array or None), `source`, `skipped` and `_token_length_cache`.

    Example:
    >>> from training.sentence_data import SentenceData
    >>> d = SentenceData(["a", "b", "c"], ["x", "y", "z"], None, "t.csv")
    >>> len(d), d.labeled, d.take(2).ids, d.subset([2]).texts
    (3, False, ['a', 'b'], ['z'])
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
