"""CS224N dev metrics and the overall scores."""

import numpy as np

METRIC_NAMES = {"sst": "sst_acc", "cfimdb": "cfimdb_acc", "quora": "quora_acc", "sts": "sts_pearson"}


def predicted_labels(task, outputs):
    """Model outputs -> the predictions the CS224N files hold."""
    outputs = np.asarray(outputs)
    if task in ("sst", "cfimdb"):
        return outputs.argmax(axis=-1).astype(np.int64)
    if task == "quora":
        return (outputs > 0).astype(np.int64)  # a logit: > 0 means p > 0.5
    return outputs.astype(np.float64)


def task_metric(task, predictions, labels):
    """Accuracy for classification tasks, Pearson r for STS."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(predictions) != len(labels):
        raise ValueError(f"{task}: {len(predictions)} predictions for {len(labels)} labels")
    if task == "sts":
        if np.std(predictions) == 0 or np.std(labels) == 0:
            return 0.0  # a constant prediction has no correlation
        return float(np.corrcoef(predictions, labels)[0, 1])
    return float(np.mean(predictions == labels.astype(np.int64)))


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
        parts = [(metrics[METRIC_NAMES[t]] + 1) / 2 if t == "sts" else metrics[METRIC_NAMES[t]]
                 for t in tasks]
        return float(np.mean(parts))
    for key in ("overall_cs224n", "overall_mean", "cfimdb_acc"):
        if key in metrics:
            return metrics[key]
    raise ValueError(f"no dev score to select an epoch by in {sorted(metrics)}")


def overall_scores(metrics):
    """Both overall scores over whichever of SST / Quora / STS are present.

    `overall_mean`: plain mean of SST acc, Quora acc and STS r.
    `overall_cs224n`: the leaderboard's (SST + Quora + (r + 1) / 2) / 3,
    which maps r from [-1, 1] to [0, 1] first.
    """
    parts = [metrics[k] for k in ("sst_acc", "quora_acc", "sts_pearson") if k in metrics]
    out = {}
    if parts:
        out["overall_mean"] = float(np.mean(parts))
    if all(k in metrics for k in ("sst_acc", "quora_acc", "sts_pearson")):
        out["overall_cs224n"] = float(
            (metrics["sst_acc"] + metrics["quora_acc"] + (metrics["sts_pearson"] + 1) / 2) / 3)
    return out
