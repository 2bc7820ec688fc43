"""`summary_table`: the few lines a finished run ends with, instead of a JSON dump."""

from pathlib import Path

from kerasbert_lite.tasks import TASKS


def _rows():
    """(key, name) of the dev metrics, in table order, then the overall score.

    Read at each call, so a row added to `TASKS` is printed too.
    """
    return [(t.metric, t.metric_title) for t in TASKS.values()] + [
        ("overall_cs224n", "overall (CS224N)")]


def summary_table(summary, out):
    """The end of `python -m training.run`: best epoch, its dev scores, where the files are.

    Args:
        summary: the run's summary.json as a dict (`variant`, `best_epoch`, `epochs`,
            `best` dev metrics, `minutes_per_epoch`).
        out: the run folder.

    Example:
    >>> print(summary_table({"variant": "dps_mse", "best_epoch": 4, "epochs": 5,
    ...                      "minutes_per_epoch": 7.16, "best": {"sst_acc": 0.4923,
    ...                      "quora_acc": 0.7676, "sts_pearson": 0.8364,
    ...                      "overall_cs224n": 0.7260}}, "runs/dps_mse"))
    dps_mse: best epoch 4 of 5 (7.2 min/epoch)
      SST accuracy       0.492
      Quora accuracy     0.768
      STS Pearson r      0.836
      overall (CS224N)   0.726
    runs/dps_mse/
      best.keras         the best epoch's model (token ids in; see README: raw strings)
      predictions/       CS224N dev and test outputs, dev-outputs.npz
      metrics.jsonl      dev scores per epoch; learning_curves.png, tensorboard/
    """
    minutes = summary.get("minutes_per_epoch")
    lines = [f"{summary.get('variant')}: best epoch {summary.get('best_epoch')} of "
             f"{summary.get('epochs')}" + (f" ({minutes:.1f} min/epoch)" if minutes else "")]
    best = summary.get("best") or {}
    lines += [f"  {label:<18} {best[key]:.3f}" for key, label in _rows() if key in best]
    lines += [f"{Path(out).as_posix()}/",
              "  best.keras         the best epoch's model (token ids in; see README: raw strings)",
              "  predictions/       CS224N dev and test outputs, dev-outputs.npz",
              "  metrics.jsonl      dev scores per epoch; learning_curves.png, tensorboard/"]
    return "\n".join(lines)
