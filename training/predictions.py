"""CS224N-style prediction files."""

import csv
import io
from pathlib import Path

from training.run_folder import atomic_write_text

from kerasbert_lite.tasks import get_task


def prediction_path(folder, task, split):
    """`folder/{sst,para,sts,cfimdb}-{dev,test}-output.csv`: a prediction file's CS224N name."""
    return Path(folder) / get_task(task).prediction_file(split)


def write_predictions(folder, task, split, ids, predictions):
    """Writes `prediction_path(folder, task, split)` with columns `id`, `Predicted_*`.

    The file is replaced whole (`atomic_write`): a kill leaves the old one or
    the new one, never a part. Ids must be unique.
    """
    column = get_task(task).prediction_column
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = prediction_path(folder, task, split)
    if len(ids) != len(predictions):
        raise ValueError(f"{path}: {len(predictions)} predictions for {len(ids)} ids")
    if len(set(ids)) != len(ids):
        seen = set()
        twice = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"{path}: id {twice!r} would be written twice")
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["id", column])
    for example_id, value in zip(ids, predictions):
        writer.writerow([example_id, get_task(task).format_prediction(value)])
    atomic_write_text(path, text.getvalue())
    return path


def read_predictions(path):
    """Reads a file written by `write_predictions` into `{id: value}`.

    Raises `ValueError` naming the file and line of a malformed row or of an
    id seen twice (a dict would keep one of them silently).
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) != 2 or header[0] != "id":
            raise ValueError(f"{path}: header {header} is not ['id', 'Predicted_...']")
        values, first_line = {}, {}
        for row in reader:
            line = reader.line_num
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 fields (id, prediction), "
                                 f"got {len(row)}")
            try:
                value = float(row[1])
            except ValueError:
                raise ValueError(f"{path}:{line}: prediction {row[1]!r} is not a number") from None
            if row[0] in values:
                raise ValueError(f"{path}:{line}: id {row[0]!r} again (first on line "
                                 f"{first_line[row[0]]})")
            values[row[0]], first_line[row[0]] = value, line
        return values
