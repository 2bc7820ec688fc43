"""Quora dev: how well a model ranks pairs (AUC) against its accuracy at the 0.5 threshold.

    python -m experiments.quora_ranking distill_nce distill_cosine_l3 --data-dir DATA
    python -m experiments.quora_ranking runs/cross runs/dps_mse --mean --data-dir DATA

Each argument is a published row (`results/NAME`) or a run folder (its
`predictions/dev-outputs.npz`); no model is run. `--mean` adds the members'
mean probability, as EM averages. For each it prints the AUC (threshold-free),
the accuracy at p > 0.5 (what the rows report), the mean predicted p against
the share of duplicates, and the best accuracy over thresholds with that
threshold. The threshold is chosen on dev itself, so the last figure is an
upper bound on what calibration could give, not a score: it says whether a
model's Quora loss is in its ranking or only in where its 0.5 falls.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from experiments.rows import RESULTS_DIR, outputs_in_order
from training import run_folder as rf


def auc(scores, labels):
    """Area under the ROC curve: the chance a duplicate outscores a non-duplicate (ties 1/2).

    Example:
    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> auc([0.5, 0.5], [0, 1])
    0.5
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    # 1-based ranks; a run of tied scores shares its mean rank.
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    pos, neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def best_threshold(probabilities, labels, grid=np.linspace(0.05, 0.95, 91)):
    """(accuracy, threshold) of the best `p > threshold` rule over `grid`.

    Example:
    >>> best_threshold([0.55, 0.6, 0.9, 0.95], [0, 0, 1, 1])
    (1.0, 0.6)
    """
    p, y = np.asarray(probabilities), np.asarray(labels).astype(bool)
    accuracies = [float(((p > t) == y).mean()) for t in grid]
    k = int(np.argmax(accuracies))
    return accuracies[k], round(float(grid[k]), 4)


def dev_probabilities(source, ids):
    """Quora duplicate probabilities of a row or run folder, in the order of `ids`."""
    run_outputs = Path(source) / rf.PREDICTIONS / rf.DEV_OUTPUTS
    if run_outputs.is_file():  # a run folder's, keyed by example id
        try:
            logits = outputs_in_order(run_outputs, {"quora": ids}.get)["quora"]
        except KeyError as e:
            raise SystemExit(f"{run_outputs}: no Quora dev output for id {e}") from None
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    row = Path(source) if Path(source).is_dir() else RESULTS_DIR / source
    if not (row / rf.DEV_OUTPUTS).is_file():
        raise SystemExit(f"{source}: no dev-outputs.npz (neither a row in {RESULTS_DIR} "
                         "nor a run folder with predictions/)")
    from experiments.ensemble import member_probabilities  # imports TensorFlow: rows only

    return member_probabilities(row, {"quora": ids}, tasks=("quora",))["quora"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="row names or run folders")
    parser.add_argument("--mean", action="store_true", help="also their mean probability")
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    from training.readers import load_split  # here, so that --help needs no project imports

    dev = load_split("quora", "dev", args.data_dir)
    labels = np.asarray(dev.labels) > 0.5
    probabilities = {s: dev_probabilities(s, dev.ids) for s in args.sources}
    if args.mean:
        probabilities["mean"] = np.mean(list(probabilities.values()), axis=0)
    print(f"Quora dev: {len(labels)} pairs, {labels.mean():.3f} duplicates")
    print(f"{'model':32s} {'AUC':>6s} {'acc@.5':>7s} {'mean p':>7s} {'best acc (threshold)':>21s}")
    for name, p in probabilities.items():
        best, at = best_threshold(p, labels)
        print(f"{name:32s} {auc(p, labels):6.4f} {((p > 0.5) == labels).mean():7.4f} "
              f"{p.mean():7.3f} {best:13.4f} ({at:.2f})")


if __name__ == "__main__":
    sys.exit(main())
