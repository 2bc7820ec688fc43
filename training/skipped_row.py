"""`SkippedRow`: one row a reader left out, with where and why."""

import os
from dataclasses import dataclass


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
