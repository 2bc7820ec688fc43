"""CS224N dev metrics, the overall scores, and `StreamingPearson` for `model.fit`."""

import keras
import numpy as np
import tensorflow as tf

from kerasbert_lite.tasks import METRIC_NAMES, MULTITASK, get_task  # noqa: F401


def predicted_labels(task, outputs):
    """Model outputs -> the predictions the CS224N files hold (`Task.predicted`)."""
    return get_task(task).predicted(outputs)


def task_metric(task, predictions, labels):
    """Accuracy for classification tasks, Pearson r for STS (`Task.score`)."""
    return get_task(task).score(predictions, labels)


def selection_score(metrics, tasks=None):
    """The dev score that picks the best epoch.

    Args:
        metrics: one epoch's dev metrics (`sst_acc`, `quora_acc`, ...).
        tasks: the tasks the run trains. Given, the score is the CS224N
            overall over those tasks only: the mean of their accuracies and
            (r + 1) / 2 for STS. An SST-only run still evaluates its untrained
            Quora and STS heads, and their epoch-to-epoch noise must not pick
            the epoch. Without it: CS224N overall when all three tasks are
            scored, else the plain mean, else a lone CFIMDB accuracy.

    >>> selection_score({"cfimdb_acc": 0.7})
    0.7
    >>> selection_score({"sst_acc": 0.46, "quora_acc": 0.39, "sts_pearson": 0.06}, tasks=["sst"])
    0.46
    """
    if tasks:
        missing = [METRIC_NAMES[t] for t in tasks if METRIC_NAMES[t] not in metrics]
        if missing:
            raise ValueError(f"no dev {', '.join(missing)} to select an epoch by in {sorted(metrics)}")
        # Pearson r maps from [-1, 1] to [0, 1], as in the CS224N overall score.
        parts = [(metrics[METRIC_NAMES[t]] + 1) / 2 if get_task(t).label == "score"
                 else metrics[METRIC_NAMES[t]] for t in tasks]
        return float(np.mean(parts))
    for key in ("overall_cs224n", "overall_mean", "cfimdb_acc"):
        if key in metrics:
            return metrics[key]
    raise ValueError(f"no dev score to select an epoch by in {sorted(metrics)}")


def overall_scores(metrics):
    """Both overall scores over whichever of the benchmark's tasks (`MULTITASK`) are present.

    `overall_mean`: plain mean of SST acc, Quora acc and STS r.
    `overall_cs224n`: the leaderboard's (SST + Quora + (r + 1) / 2) / 3,
    which maps r from [-1, 1] to [0, 1] first. Other datasets' metrics
    (`cfimdb_acc`, a new row's) are in neither: the scores are the benchmark's.

    >>> overall_scores({"sst_acc": .5, "quora_acc": .8, "sts_pearson": .4, "cfimdb_acc": .9})
    {'overall_mean': 0.5666666666666668, 'overall_cs224n': 0.6666666666666666}
    """
    benchmark = [get_task(t) for t in MULTITASK]
    parts = [metrics[t.metric] for t in benchmark if t.metric in metrics]
    out = {}
    if parts:
        out["overall_mean"] = float(np.mean(parts))
    if len(parts) == len(benchmark):
        # Summed left to right as the leaderboard's formula, so committed scores reproduce.
        out["overall_cs224n"] = float(sum(
            (metrics[t.metric] + 1) / 2 if t.label == "score" else metrics[t.metric]
            for t in benchmark) / len(benchmark))
    return out


@keras.saving.register_keras_serializable(package="kerasbert")
class StreamingPearson(keras.metrics.Metric):
    """Pearson r between predictions and labels over every example seen.

    Unlike `keras.metrics.PearsonCorrelation` (a mean of per-batch
    correlations), this accumulates sums over the whole epoch, so it is the
    CS224N STS metric (`np.corrcoef` over the dev set) when `evaluate` sees
    each dev example once. Rows with sample weight 0 (padding) are ignored.

    Example:
    >>> m = StreamingPearson()
    >>> m.update_state([1.0, 2.0], [1.0, 2.5]); m.update_state([3.0], [2.9])
    >>> round(float(m.result()), 4)  # np.corrcoef([1, 2, 3], [1, 2.5, 2.9])[0, 1]
    0.9484
    """

    _SUMS = ("n", "x", "y", "xx", "yy", "xy")

    def __init__(self, name="pearson", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._sums = [self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                        name=f"sum_{k}") for k in self._SUMS]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        x = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        w = (tf.ones_like(x) if sample_weight is None
             else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        for var, value in zip(self._sums, (w, w * x, w * y, w * x * x, w * y * y, w * x * y)):
            var.assign_add(tf.reduce_sum(value))

    def result(self):
        n, sx, sy, sxx, syy, sxy = (tf.maximum(s, 0.0) if k in ("n", "xx", "yy") else s
                                    for k, s in zip(self._SUMS, self._sums))
        n = tf.maximum(n, 1.0)
        cov = sxy / n - (sx / n) * (sy / n)
        var_x = tf.maximum(sxx / n - tf.square(sx / n), 0.0)
        var_y = tf.maximum(syy / n - tf.square(sy / n), 0.0)
        # A constant prediction has no correlation: 0, as training.metrics says.
        return tf.math.divide_no_nan(cov, tf.sqrt(var_x * var_y))

    def reset_state(self):
        for var in self._sums:
            var.assign(0.0)
