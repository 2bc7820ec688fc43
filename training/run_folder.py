"""The run folder's format, in one place: its file names, version, atomic writes, checks.

A training run (`python -m training.run --out FOLDER`) leaves::

    config.json            the settings (TrainConfig) plus what export needs
    vocab.txt              the tokenizer's vocabulary
    best.keras             the best epoch's MultitaskBert
    metrics.jsonl          one line per finished epoch
    summary.json           the best epoch and its dev scores
    learning_curves.png
    tensorboard/
    checkpoints/           latest.json, previous.json, step-*.npz (for --resume)
    predictions/           {sst,para,sts}-{dev,test}-output.csv, dev-/test-outputs.npz
    teacher.json           --variant distill: which teacher the cache below is of
    teacher_outputs.npz    --variant distill: its outputs on the training sets, by example id

The trainer writes it, `export.run_folder.RunFolder` reads it for export,
and `experiments/` publishes rows from it; all three take the names from
here. Every file is written whole or not at all (`atomic_write`), so a kill
at any moment leaves a readable folder. `config.json` carries
`run_folder_format` (`FORMAT_VERSION`); a folder from before it is version 1.
"""

import hashlib
import json
import os
from pathlib import Path

FORMAT_VERSION = 1
CONFIG = "config.json"
VOCAB = "vocab.txt"
BEST_MODEL = "best.keras"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LEARNING_CURVES = "learning_curves.png"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
LATEST_STATE = "latest.json"
# The checkpoint before the latest: what --resume falls back to when the
# latest is unreadable. Its arrays file is kept until a newer one is complete.
PREVIOUS_STATE = "previous.json"
PREDICTIONS = "predictions"
DEV_OUTPUTS = "dev-outputs.npz"
TEST_OUTPUTS = "test-outputs.npz"
TEACHER_RECORD = "teacher.json"
TEACHER_OUTPUTS = "teacher_outputs.npz"
EMBEDDING_TEACHER_RECORD = "embedding_teacher.json"
TEACHER_EMBEDDINGS = "teacher_embeddings.npz"
# What export needs of config.json.
REQUIRED_CONFIG_KEYS = ("variant", "max_length", "lowercase")


def atomic_write(path, write, suffix=""):
    """Writes via a temporary file in the same folder, then renames over `path`.

    `write` takes an open binary file, or (with `suffix`) a path, for savers
    such as `keras.Model.save` or `savefig` that pick the format from the
    file extension. A process killed meanwhile leaves the old `path` (or
    none) and a `.NAME.tmp*` file that the next write replaces.

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda f: f.write(b"whole"))
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('whole', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        if suffix:
            write(str(tmp))
        else:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    """`atomic_write` of a UTF-8 string."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_config(folder, record):
    """config.json: `record` (the settings and what export needs), stamped with the format."""
    record = dict(record, run_folder_format=FORMAT_VERSION)
    atomic_write_text(Path(folder) / CONFIG, json.dumps(record, indent=2, default=list))


def read_config(folder, required=REQUIRED_CONFIG_KEYS):
    """config.json as a dict, checked; a `ValueError`/`FileNotFoundError` naming the file.

    Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_config(folder, {"variant": "bm", "max_length": 64, "lowercase": True})
    >>> read_config(folder)["run_folder_format"]
    1
    >>> _ = (folder / CONFIG).write_text('{"variant": "bm"}')
    >>> read_config(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../config.json: missing keys ['max_length', 'lowercase']
    """
    path = Path(folder) / CONFIG
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    version = config.get("run_folder_format", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: run folder format {version!r}; this version reads up to "
                         f"{FORMAT_VERSION} (update kerasbert)")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if "max_length" in required and (not isinstance(config["max_length"], int)
                                     or config["max_length"] < 3):
        raise ValueError(f"{path}: max_length must be an integer >= 3, "
                         f"got {config['max_length']!r}")
    return config


def write_history(folder, history):
    """metrics.jsonl, one line per finished epoch, replaced whole (never appended to)."""
    atomic_write_text(Path(folder) / METRICS, "".join(json.dumps(h) + "\n" for h in history))


def read_history(folder):
    """metrics.jsonl's records, in epoch order ([] when there is none)."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_summary(folder, summary):
    atomic_write_text(Path(folder) / SUMMARY, json.dumps(summary, indent=2))


def read_summary(folder):
    """summary.json as a dict (`best_epoch`, `best` dev scores, ...)."""
    path = Path(folder) / SUMMARY
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def write_raw_outputs(path, by_task):
    """`{task}_ids` and `{task}_outputs` arrays from `{task: (ids, outputs)}` (an .npz)."""
    import numpy as np

    arrays = {}
    for task, (ids, outputs) in by_task.items():
        arrays[f"{task}_ids"] = np.asarray(ids)
        arrays[f"{task}_outputs"] = outputs
    atomic_write(path, lambda f: np.savez(f, **arrays))


def training_version(folder):
    """Which training a run folder (or the results row published from it) holds.

    A hash of its metrics.jsonl: the per-epoch timings in it make any two
    trainings differ, while publishing or rescoring a run leaves it as it was.
    None if the folder has no metrics.jsonl (not a finished training, or none).
    """
    metrics = Path(folder) / METRICS
    if not metrics.is_file():
        return None
    return hashlib.sha256(metrics.read_bytes()).hexdigest()[:16]
