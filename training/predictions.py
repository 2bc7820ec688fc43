"""CS224N-style prediction files."""

import csv
from pathlib import Path

# File stem and column of each task, as in the CS224N starter's outputs.
PREDICTION_FILES = {
    "sst": ("sst", "Predicted_Sentiment"),
    "cfimdb": ("cfimdb", "Predicted_Sentiment"),
    "quora": ("para", "Predicted_Is_Paraphrase"),
    "sts": ("sts", "Predicted_Similarity"),
}


def prediction_path(folder, task, split):
    """`folder/{sst,para,sts,cfimdb}-{dev,test}-output.csv`: a prediction file's CS224N name."""
    return Path(folder) / f"{PREDICTION_FILES[task][0]}-{split}-output.csv"


def write_predictions(folder, task, split, ids, predictions):
    """Writes `prediction_path(folder, task, split)` with columns `id`, `Predicted_*`."""
    column = PREDICTION_FILES[task][1]
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = prediction_path(folder, task, split)
    if len(ids) != len(predictions):
        raise ValueError(f"{path}: {len(predictions)} predictions for {len(ids)} ids")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", column])
        for example_id, value in zip(ids, predictions):
            writer.writerow([example_id, f"{value:.4f}" if task == "sts" else int(value)])
    return path


def read_predictions(path):
    """Reads a file written by `write_predictions` into `{id: value}`."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if len(header) != 2 or header[0] != "id":
            raise ValueError(f"{path}: header {header} is not ['id', 'Predicted_...']")
        return {row[0]: float(row[1]) for row in reader}
