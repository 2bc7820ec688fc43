"""The CS224N datasets as one table: files, columns, labels, outputs, losses, metrics, predictions.

Everything that differs between SST, CFIMDB, Quora and STS is a field of its
`Task` here; the readers, the variants, the loss registry
(`kerasbert.losses`), the training loop, `model.fit`, evaluation and
prediction files read it. A new dataset is one more row (and, if its label
is of a new kind, one more `label` case in `Task.predicted` / `Task.score`).

It lives in the TensorFlow-free bottom layer so that what only needs the
table (`python -m training.run --help`, flag checks, the results scripts)
starts in a second, without TensorFlow.

Example:
>>> TASKS["sts"].file("test"), TASKS["sts"].output, TASKS["sts"].metric
('sts-test-student.csv', 'similarity', 'sts_pearson')
>>> TASKS["quora"].prediction_file("dev")
'para-dev-output.csv'
>>> [t.name for t in tasks_of_output("sentiment")]
['sst', 'cfimdb']
>>> benchmark_task("similarity").name, TASKS["sst"].column, TASKS["sts"].export_metric
('sts', 'SST acc', 'sts_pearson')

The derived mappings (`METRIC_NAMES`, `SENTIMENT_CLASSES`) are live views of
`TASKS`, so a row added to it at run time (a test's, a plugin's) shows in them:
>>> dict(SENTIMENT_CLASSES)
{'sst': 5, 'cfimdb': 2}
"""

import collections.abc
import dataclasses

import numpy as np

SPLITS = ("train", "dev", "test")
# The file name part of each split: the test files are the unlabeled "student" ones.
SPLIT_SUFFIX = {"train": "train", "dev": "dev", "test": "test-student"}
OUTPUTS = ("sentiment", "paraphrase", "similarity")


@dataclasses.dataclass(frozen=True)
class Task:
    """One dataset.

    Args:
        name: the dataset's name (`--tasks`, metric prefixes).
        output: the `MultitaskBert` output it trains.
        file_stem: files are `{file_stem}-{train,dev,test-student}.csv`.
        text_columns: the columns holding the text(s), after `id`.
        label_column: the label's column (absent from test files).
        label: `"class"` (int id < `num_classes`), `"binary"` (0/1 float) or
            `"score"` (float in `label_range`).
        num_classes: classes of a `"class"` label.
        label_range: (low, high) of a `"score"` label.
        losses: the losses a recipe may train the task's output with
            (`kerasbert.losses` implements each); the first is the default.
        metric: the dev metric's key, `{name}_acc` or `{name}_pearson`.
        prediction_stem, prediction_column: the CS224N prediction file
            `{prediction_stem}-{split}-output.csv` and its value column.
        title: the name tables and logs print ("SST", "Quora"); default `name`.
    """

    name: str
    output: str
    file_stem: str
    text_columns: tuple
    label_column: str
    label: str
    losses: tuple
    metric: str
    prediction_stem: str
    prediction_column: str
    num_classes: int = None
    label_range: tuple = None
    title: str = None

    @property
    def display_name(self):
        return self.title or self.name

    @property
    def column(self):
        """The metric's short header in tables: "SST acc", "STS r"."""
        return f"{self.display_name} {'r' if self.label == 'score' else 'acc'}"

    @property
    def metric_title(self):
        """The metric's long name in a run's summary: "SST accuracy", "STS Pearson r"."""
        return f"{self.display_name} {'Pearson r' if self.label == 'score' else 'accuracy'}"

    @property
    def export_metric(self):
        """The metric's key in export manifests: `sst_accuracy`, `quora_accuracy`, `sts_pearson`.

        Manifests spell accuracy out (unlike `metric`); committed ones are
        read back, so the spelling stays.
        """
        return self.metric if self.label == "score" else f"{self.name}_accuracy"

    def file(self, split):
        """The file name of `split` ("train", "dev" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return f"{self.file_stem}-{SPLIT_SUFFIX[split]}.csv"

    def prediction_file(self, split):
        return f"{self.prediction_stem}-{split}-output.csv"

    @property
    def is_pair(self):
        return len(self.text_columns) == 2

    def predicted(self, outputs):
        """Model outputs -> the predictions the CS224N files hold."""
        outputs = np.asarray(outputs)
        if self.label == "class":
            return outputs.argmax(axis=-1).astype(np.int64)
        if self.label == "binary":
            return (outputs > 0).astype(np.int64)  # a logit: > 0 means p > 0.5
        return outputs.astype(np.float64)

    def score(self, predictions, labels):
        """The dev metric: accuracy, or Pearson r for a score."""
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        if len(predictions) != len(labels):
            raise ValueError(f"{self.name}: {len(predictions)} predictions for {len(labels)} labels")
        if self.label == "score":
            if np.std(predictions) == 0 or np.std(labels) == 0:
                return 0.0  # a constant prediction has no correlation
            return float(np.corrcoef(predictions, labels)[0, 1])
        return float(np.mean(predictions == labels.astype(np.int64)))

    def format_prediction(self, value):
        """One value as a prediction file writes it."""
        return f"{value:.4f}" if self.label == "score" else str(int(value))


_SENTENCE = dict(text_columns=("sentence",), label_column="sentiment", label="class",
                 prediction_column="Predicted_Sentiment", output="sentiment",
                 losses=("cross_entropy",))
_PAIR = dict(text_columns=("sentence1", "sentence2"))

TASKS = {t.name: t for t in (
    Task("sst", file_stem="ids-sst", metric="sst_acc", prediction_stem="sst", num_classes=5,
         title="SST", **_SENTENCE),
    Task("cfimdb", file_stem="ids-cfimdb", metric="cfimdb_acc", prediction_stem="cfimdb",
         num_classes=2, title="CFIMDB", **_SENTENCE),
    Task("quora", output="paraphrase", file_stem="quora", label_column="is_duplicate",
         label="binary", losses=("bce", "bce_infonce"), metric="quora_acc", prediction_stem="para",
         prediction_column="Predicted_Is_Paraphrase", title="Quora", **_PAIR),
    Task("sts", output="similarity", file_stem="sts", label_column="similarity",
         label="score", label_range=(0.0, 5.0), losses=("bce_threshold", "mse", "infonce"),
         metric="sts_pearson", prediction_stem="sts",
         prediction_column="Predicted_Similarity", title="STS", **_PAIR),
)}
# The multitask benchmark's three datasets, one per output, in output order.
MULTITASK = ("sst", "quora", "sts")


class _TableView(collections.abc.Mapping):
    """{name: value(task)} over the `TASKS` rows `keep(task)` picks, read at each use.

    A dict built at import would miss rows added to `TASKS` later.
    """

    def __init__(self, value, keep=lambda task: True):
        self._value, self._keep = value, keep

    def __getitem__(self, name):
        task = TASKS[name]
        if not self._keep(task):
            raise KeyError(name)
        return self._value(task)

    def __iter__(self):
        return (name for name, task in TASKS.items() if self._keep(task))

    def __len__(self):
        return sum(1 for _ in self)

    def __repr__(self):
        return repr(dict(self))


SENTIMENT_CLASSES = _TableView(lambda t: t.num_classes, lambda t: t.output == "sentiment")
METRIC_NAMES = _TableView(lambda t: t.metric)


def get_task(name):
    """The `Task` called `name`; a `ValueError` listing the known ones otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {tuple(TASKS)}") from None


def tasks_of_output(output):
    """The tasks that train `output`, in table order."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; expected one of {OUTPUTS}")
    return [t for t in TASKS.values() if t.output == output]


def benchmark_task(output):
    """The `MULTITASK` dataset of `output`: the one the benchmark scores it on.

    >>> benchmark_task("paraphrase").name
    'quora'
    """
    for name in MULTITASK:
        if TASKS[name].output == output:
            return TASKS[name]
    raise ValueError(f"unknown output {output!r}; expected one of {OUTPUTS}")


def sentiment_task_names():
    """The `--task` choices: every sentiment dataset, in table order.

    >>> sentiment_task_names()
    ('sst', 'cfimdb')
    """
    return tuple(t.name for t in tasks_of_output("sentiment"))
