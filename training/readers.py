"""Readers for the CS224N minBERT task files (SST, CFIMDB, Quora, STS).

The files are tab-separated despite the `.csv` name, use `"` quoting and
start with an unnamed row-index column; the test-student files of SST and
CFIMDB carry one more leading index column. Columns are therefore always
read by header name, never by position.

A row that cannot be used (missing field, empty text, bad label, a byte
that is not UTF-8, a stray quote, an id seen before) is skipped, recorded as
a `SkippedRow` with its file and line number, and summarised in one logged
line; nothing is dropped silently. Each line is one row: a quote left open
costs its own line, not the rows after it. A file that lacks a needed
column or yields no valid row raises `ValueError`.

Example:
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ids-sst-dev.csv"
>>> _ = path.write_text("\\tid\\tsentence\\tsentiment\\n0\\ta1\\t Good film .\\t3\\n"
...                     "1\\ta2\\t   \\t1\\n")
>>> data = read_sentiment(path, num_classes=5)
>>> data.texts, data.labels.tolist(), len(data.skipped)
(['Good film .'], [3], 1)
>>> str(data.skipped[0])
'ids-sst-dev.csv:3: empty sentence'
"""

import csv
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

from kerasbert_lite.tasks import (SENTIMENT_CLASSES, SPLITS, TASKS, get_task,  # noqa: F401
                                  tasks_of_output)
from training.examples import PairData, SentenceData, SkippedRow

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "KERASBERT_DATA"

# Shown per file in the logged summary; the full list is on `.skipped`.
_MAX_REASONS_LOGGED = 5


def read_sentiment(path, num_classes, labeled=True):
    """Reads an SST (`num_classes=5`) or CFIMDB (`num_classes=2`) file.

    Args:
        path: the file (columns `id`, `sentence` and, when labeled, `sentiment`).
        num_classes: labels must be integers in [0, num_classes); "3" and "3.0" both read as 3.
        labeled: read the `sentiment` column; False for test-student files.

    Returns:
        `SentenceData` with int32 labels (None when unlabeled).
    """
    # Every sentiment dataset has these columns; the one of this class count names errors.
    sentiment = tasks_of_output("sentiment")
    task = next((t for t in sentiment if t.num_classes == num_classes), sentiment[0])
    return read_task(dataclasses.replace(task, num_classes=num_classes), path, labeled)


def read_quora(path, labeled=True):
    """Reads a Quora question-pairs file: `id`, `sentence1`, `sentence2`, `is_duplicate`.

    Labels are given as "0.0"/"1.0" (plain "0"/"1" accepted too) and come
    back as float32 0/1; anything else skips the row.
    """
    return read_task(TASKS["quora"], path, labeled)


def read_sts(path, labeled=True):
    """Reads an STS file: `id`, `sentence1`, `sentence2`, `similarity` (float in [0, 5])."""
    return read_task(TASKS["sts"], path, labeled)


def _read_rows(path, columns, label_column, parse_label):
    """Reads `path`, returning ([(id, texts, label)], [SkippedRow]).

    `columns` is ("id", text columns...). Every problem of a row is listed in
    its reason, so one look at the log says all that is wrong with it.

    Each physical line is one row, decoded and parsed on its own: in these
    files a quoted field never holds a newline or a tab, so one that would
    is a stray quote, and read as csv does it would swallow the rows after
    it into one field. Here it costs only its own line, reported as such, as
    do a byte that is not UTF-8 and an id seen before.
    """
    path = str(path)
    _raise_csv_field_limit()
    needed = list(columns) + ([label_column] if label_column else [])
    rows, skipped = [], []
    total = 0
    first_line_of = {}  # id -> line it was first read on
    with open(path, "rb") as f:
        header_line = f.readline()
        if not header_line:
            raise ValueError(f"{path}: empty file, expected a header with columns {needed}")
        header, problem = _parse_line(header_line, first=True)
        if problem:
            raise ValueError(f"{path}:1: header line {problem}")
        header = [name.strip() for name in header]
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header has {header}")
        position = {name: header.index(name) for name in needed}
        for line, raw in enumerate(f, start=2):
            row, problem = _parse_line(raw)
            if row == [] and not problem:  # a blank line: not a data row
                continue
            total += 1
            if problem:
                skipped.append(SkippedRow(path, line, problem))
                continue
            problems = []
            if len(row) > len(header):
                problems.append(f"{len(row)} fields, header has {len(header)}")
            values = {}
            for name in needed:
                i = position[name]
                if i >= len(row):
                    problems.append(f"missing field '{name}'")
                elif not row[i].strip():
                    problems.append(f"empty {name}")
                else:
                    values[name] = row[i].strip()
            label = None
            if label_column and label_column in values:
                label, problem = parse_label(values[label_column])
                if problem:
                    problems.append(f"{label_column} {problem}")
            if "id" in values and values["id"] in first_line_of:
                problems.append(f"duplicate id '{values['id']}' (first on line "
                                f"{first_line_of[values['id']]})")
            if problems:
                skipped.append(SkippedRow(path, line, ", ".join(problems)))
                continue
            first_line_of[values["id"]] = line
            rows.append((values["id"], [values[c] for c in columns[1:]], label))
    _log_summary(path, total, skipped)
    if not rows:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise ValueError(f"{path}: no valid rows ({total} data rows, {len(skipped)} skipped{first})")
    return rows, skipped


def _parse_line(raw, first=False):
    """One physical line (bytes) -> (fields, None), or (None, why it cannot be read).

    >>> _parse_line(b'0\\ta\\t"He said ""hi"" ."\\t2\\r\\n')
    (['0', 'a', 'He said "hi" .', '2'], None)
    >>> _parse_line(b'3\\tc\\t"A man\\tB\\t2.2\\n')[1]
    'unterminated quote: a quoted field runs past the end of its line (a stray \\'"\\'?)'
    >>> _parse_line(b'1\\tb\\tcaf\\xe9\\t2\\n')[1]
    'not valid UTF-8 (byte 0xe9 at column 8)'
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
    if first:
        text = text.lstrip("\ufeff")  # a BOM from spreadsheet exports
    text = text.rstrip("\n").rstrip("\r")
    try:
        row = next(csv.reader([text], delimiter="\t", quotechar='"', strict=True), [])
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            return None, ("unterminated quote: a quoted field runs past the end of its line "
                          "(a stray '\"'?)")
        if "new-line" in str(e):
            return None, "carriage return inside the line"
        return None, f"malformed quoting ({e})"
    if any("\t" in field for field in row):
        return None, "quoted field contains a tab (a stray '\"'?)"
    return row, None


def _log_summary(path, total, skipped):
    name = os.path.basename(path)
    if not skipped:
        logger.info("%s: read %d rows", name, total)
        return
    reasons = "; ".join(f"line {s.line}: {s.reason}" for s in skipped[:_MAX_REASONS_LOGGED])
    if len(skipped) > _MAX_REASONS_LOGGED:
        reasons += f"; ... {len(skipped) - _MAX_REASONS_LOGGED} more"
    logger.warning("%s: skipped %d of %d rows (%s)", name, len(skipped), total, reasons)


def _raise_csv_field_limit():
    # CFIMDB reviews exceed csv's 128 KiB default field limit; sys.maxsize
    # overflows a C long on some platforms, so fall back to 2**31 - 1.
    try:
        csv.field_size_limit(sys.maxsize)
    except OverflowError:
        csv.field_size_limit(2**31 - 1)


def _parse_number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_class(text, num_classes):
    value = _parse_number(text)
    if value is None:
        return None, f"'{text}' is not a number"
    if value != int(value):
        return None, f"'{text}' is not an integer"
    if not 0 <= value < num_classes:
        return None, f"'{text}' is out of range 0-{num_classes - 1}"
    return int(value), None


def _parse_binary(text):
    value = _parse_number(text)
    if value is None:
        return None, f"'{text}' is not a number"
    if value not in (0.0, 1.0):
        return None, f"'{text}' is not 0 or 1"
    return value, None


def _parse_range(text, low, high):
    value = _parse_number(text)
    if value is None:
        return None, f"'{text}' is not a number"
    if not low <= value <= high:
        return None, f"'{text}' is out of range {low:g}-{high:g}"
    return value, None


def split_path(task, split, data_dir):
    """The file of `task`/`split` in `data_dir`, e.g. ("sst", "test") -> ids-sst-test-student.csv."""
    return Path(data_dir) / get_task(task).file(split)


def load_split(task, split, data_dir):
    """Reads one task's split; "test" means the unlabeled test-student file.

    Args:
        task: a `kerasbert_lite.tasks.TASKS` name: "sst", "cfimdb", "quora" or "sts".
        split: "train", "dev" or "test".
        data_dir: the folder holding the CS224N files (see `resolve_data_dir`).

    Returns:
        `SentenceData` for one-sentence tasks, `PairData` for pairs.
    """
    path = split_path(task, split, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (task {task!r}, split {split!r})")
    return read_task(get_task(task), path, labeled=split != "test")


def read_task(task, path, labeled=True):
    """Reads `path` as the `kerasbert_lite.tasks.Task` `task` says (columns, label kind)."""
    if task.label == "class":
        parse = lambda text: _parse_class(text, task.num_classes)  # noqa: E731
    elif task.label == "binary":
        parse = _parse_binary
    else:
        parse = lambda text: _parse_range(text, *task.label_range)  # noqa: E731
    label_column = task.label_column if labeled else None
    rows, skipped = _read_rows(path, ("id",) + task.text_columns, label_column, parse)
    dtype = np.int32 if task.label == "class" else np.float32
    labels = np.array([r[2] for r in rows], dtype) if labeled else None
    ids = [r[0] for r in rows]
    if task.is_pair:
        return PairData(ids=ids, texts_a=[r[1][0] for r in rows], texts_b=[r[1][1] for r in rows],
                        labels=labels, source=str(path), skipped=skipped)
    return SentenceData(ids=ids, texts=[r[1][0] for r in rows], labels=labels,
                        source=str(path), skipped=skipped)


def resolve_data_dir(flag_value=None):
    """The data folder: `flag_value` (the `--data-dir` flag), else `$KERASBERT_DATA`.

    Raises:
        ValueError: neither is set, or the folder does not exist.
    """
    value = flag_value or os.environ.get(DATA_ENV_VAR)
    if not value:
        raise ValueError(
            "no data folder given: pass --data-dir /path/to/data or set "
            f"{DATA_ENV_VAR}=/path/to/data (the folder with ids-sst-train.csv etc.)")
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if flag_value else DATA_ENV_VAR
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ValueError(f"data folder {path} (from {origin}) {what}; "
                         f"fix --data-dir or {DATA_ENV_VAR}")
    return path
