"""Which CS224N files a run needs, and the paragraph that says where to get them.

`python -m training.run` checks the data folder with `missing_data_message`
right after the flags, before TensorFlow starts or the encoder loads: a new
user without the data learns it in a second, not after minutes of setup.
"""

import os
from pathlib import Path

from kerasbert_lite.tasks import MULTITASK, TASKS
from training.readers import DATA_ENV_VAR, split_path

# Where the files come from, for the message (the repository never holds them).
DATA_SOURCE = ("the Stanford CS224N default final project's starter repository "
               "(minbert-default-final-project, on GitHub as gpoesia/minbert-default-final-project), "
               "its data/ folder")


def required_files(variant, tasks=None, sentiment_task="sst"):
    """The (task, split) files a run reads: train files of the tasks it trains, dev of all it
    scores. Test files are optional (a run without one skips its test predictions).

    Args:
        variant: a `training.variants.Variant`.
        tasks: `--tasks` (None: the variant's).
        sentiment_task: `sst` or `cfimdb`.

    Example:
    >>> from training.variants import get_variant
    >>> required_files(get_variant("bm"), tasks=("sst",))
    [('sst', 'train'), ('sst', 'dev'), ('quora', 'dev'), ('sts', 'dev')]
    >>> required_files(get_variant("classifier"), sentiment_task="cfimdb")
    [('cfimdb', 'train'), ('cfimdb', 'dev')]
    """
    if variant.single_task:
        return [(sentiment_task, "train"), (sentiment_task, "dev")]
    trained = [sentiment_task if TASKS[t].output == "sentiment" else t
               for t in (tasks or variant.tasks)]
    scored = (sentiment_task,) + tuple(t for t in MULTITASK if TASKS[t].output != "sentiment")
    scored += tuple(t for t in trained if t not in scored)  # a new row's dev picks the epoch
    return [(t, "train") for t in trained] + [(t, "dev") for t in scored]


def missing_data_message(config):
    """None when every file `config` needs is there; else one paragraph saying what is missing.

    The paragraph names the missing files, the folder looked in (and which
    setting pointed there), where the CS224N minBERT data come from and the
    three ways to point at them.

    Args:
        config: a `training.train_config.TrainConfig`.

    Example:
    >>> import tempfile
    >>> from training.train_config import TrainConfig
    >>> folder = tempfile.mkdtemp()
    >>> print(missing_data_message(TrainConfig(variant="classifier", sentiment_task="cfimdb",
    ...                                        data_dir=folder)))  # doctest: +ELLIPSIS
    the CS224N data are missing: ids-cfimdb-train.csv, ids-cfimdb-dev.csv not found in ... \
(from --data-dir). They come from the Stanford CS224N default final project's ...
    """
    from training.variants import get_variant

    if config.data_dir:
        folder, origin = Path(config.data_dir).expanduser(), "--data-dir"
    elif os.environ.get(DATA_ENV_VAR):
        folder, origin = Path(os.environ[DATA_ENV_VAR]).expanduser(), DATA_ENV_VAR
    else:
        folder, origin = None, None
    needed = required_files(get_variant(config.variant), config.tasks, config.sentiment_task)
    names = [split_path(task, split, folder or ".").name for task, split in needed]
    if folder is None:
        where = f"no data folder was given (neither --data-dir nor {DATA_ENV_VAR}) for " \
                f"{', '.join(names)}"
    elif not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        where = f"the data folder {folder} (from {origin}) {what}; it should hold " \
                f"{', '.join(names)}"
    else:
        missing = [n for n in names if not (folder / n).is_file()]
        if not missing:
            return None
        where = f"{', '.join(missing)} not found in {folder} (from {origin})"
    return (f"the CS224N data are missing: {where}. They come from {DATA_SOURCE} "
            f"(tab-separated .csv files; never part of this repository). Download that folder "
            f"and point at it with --data-dir /path/to/data, {DATA_ENV_VAR}=/path/to/data, "
            f"or `make train DATA=/path/to/data`.")
