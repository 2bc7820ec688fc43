"""The EM row: ensembles of published rows scored on dev, by size, plus the chosen one.

    python -m experiments.ensemble --members cross dps_mse mse bm --data-dir DATA
    python -m experiments.ensemble --members cross dps_mse --runs runs --data-dir DATA

Members are ranked by their own CS224N overall dev score; the ensemble of
size k averages the top k exactly as `MultitaskEnsemble` (and so the export)
does: softmax probabilities for SST, sigmoid probabilities for Quora, 0-5
scores for STS. It reads each row's `dev-outputs.npz`, so no model is run.
EM is the size with the best overall score; choosing it on dev makes its dev
score slightly optimistic, which the size plot shows in full.

Writes `results/em/` (summary.json, run.json, ensemble_size.json and .png,
dev predictions) and test-student predictions: averaged from the members'
published `test-outputs.npz` when every member has one, else computed by the
Keras ensemble from `--runs` (the members' run folders, which hold the
weights; used only where each folder holds the very training its row
published). Failing both, test predictions written earlier are kept only if
they were made by the same trainings of the same members, else removed and
reported; summary.json's `test_members` and `test_member_versions` say which.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.rows import RESULTS_DIR
from kerasbert_lite.tasks import METRIC_NAMES, MULTITASK, get_task
from training import run_folder as rf
from training.metrics import overall_scores, predicted_labels, task_metric
from training.predictions import prediction_path, read_predictions, write_predictions
from training.readers import load_split, resolve_data_dir
from training.run_folder import training_version

TASKS = MULTITASK
METRIC = {t: METRIC_NAMES[t] for t in TASKS}


def member_probabilities(row, ids, split="dev", tasks=TASKS):
    """One row's raw `split` outputs as probabilities / scores, in `ids` order per task.

    Reads `ROW/{split}-outputs.npz`, whose rows follow the row's
    `predictions/*-{split}-output.csv` files.
    """
    raw = np.load(Path(row) / f"{split}-outputs.npz")
    out = {}
    for task in tasks:
        if task not in raw.files:
            raise ValueError(f"{row}/{split}-outputs.npz has no {task!r} outputs; "
                             f"an EM member must be evaluated on {', '.join(TASKS)}")
        path = prediction_path(Path(row) / rf.PREDICTIONS, task, split)
        file_ids = list(read_predictions(path))
        if len(file_ids) != len(raw[task]):
            raise ValueError(f"{row}: {split}-outputs.npz has {len(raw[task])} {task} rows, "
                             f"{path} {len(file_ids)}")
        position = {example_id: i for i, example_id in enumerate(file_ids)}
        missing = [i for i in ids[task] if i not in position]
        if missing:
            raise ValueError(f"{row}: {len(missing)} {task} {split} ids have no output "
                             f"(e.g. {missing[0]})")
        values = raw[task][[position[i] for i in ids[task]]].astype(np.float64)
        label = get_task(task).label
        if label == "class":  # logits -> probabilities
            values = np.exp(values - values.max(-1, keepdims=True))
            values /= values.sum(-1, keepdims=True)
        elif label == "binary":  # a logit -> p
            values = 1.0 / (1.0 + np.exp(-values))
        out[task] = values
    return out


def ensemble_predictions(task, mean):
    """The CS224N predictions of an ensemble's mean probabilities / scores for `task`."""
    if get_task(task).label == "binary":
        mean = np.log(mean) - np.log1p(-mean)  # back to a logit: > 0 iff p > 0.5
    return predicted_labels(task, mean)


def ensemble_metrics(members, labels):
    """Dev metrics of the mean of `members` (each from `member_probabilities`)."""
    metrics = {}
    for task in TASKS:
        mean = np.mean([m[task] for m in members], axis=0)
        metrics[METRIC[task]] = task_metric(task, ensemble_predictions(task, mean), labels[task])
    metrics.update(overall_scores(metrics))
    return metrics


def size_curve(names, results_dir, data_dir):
    """Members ranked by their own overall score, and the metrics of each top-k mean."""
    dev = {task: load_split(task, "dev", data_dir) for task in TASKS}
    dev_ids = {task: list(d.ids) for task, d in dev.items()}
    labels = {task: d.labels for task, d in dev.items()}
    own = {n: json.loads((Path(results_dir) / n / rf.SUMMARY).read_text())["best"]
           for n in names}
    ranked = sorted(names, key=lambda n: -own[n]["overall_cs224n"])
    probs = {n: member_probabilities(Path(results_dir) / n, dev_ids) for n in ranked}
    curve = [{"size": k, "members": ranked[:k],
              "dev": ensemble_metrics([probs[n] for n in ranked[:k]], labels)}
             for k in range(1, len(ranked) + 1)]
    return ranked, curve, probs, dev


def plot_size_curve(curve, path, paper_em=(.508, .783, .657)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [c["size"] for c in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for (task, metric), colour, paper in zip(METRIC.items(), ("C0", "C1", "C2"), paper_em):
        ax.plot(sizes, [c["dev"][metric] for c in curve], "o-", color=colour, label=metric)
        ax.axhline(paper, color=colour, linestyle=":", linewidth=1)
    ax.plot(sizes, [c["dev"]["overall_cs224n"] for c in curve], "s--", color="k",
            label="overall_cs224n")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{c['size']}\n+{c['members'][-1]}" for c in curve], fontsize=7)
    ax.set_xlabel("ensemble size (members added best-first)")
    ax.set_ylabel("dev score")
    ax.set_title("EM: dev score by ensemble size (dotted: paper EM)")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_test_predictions(run_dirs, pred_dir, data_dir, batch_size=64):
    """Test-student predictions of the ensemble of `run_dirs` (the members' weights).

    Runs the export's own graph functions (`*_from_ids`, padding trimmed per
    batch) on batches of similar length, so it costs the real tokens only.
    """
    from export.multitask_ensemble import MultitaskEnsemble

    ensemble = MultitaskEnsemble.from_runs(run_dirs)
    for task, test in _test_splits(pred_dir, data_dir).items():
        pair = get_task(task).is_pair
        lengths = ([len(a) + len(b) for a, b in zip(test.texts_a, test.texts_b)] if pair
                   else [len(t) for t in test.texts])
        order = np.argsort(lengths, kind="stable")
        out = None
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            if pair:
                encodings, _ = ensemble._encode_text_pairs([test.texts_a[i] for i in index],
                                                           [test.texts_b[i] for i in index])
                values = getattr(ensemble, f"{get_task(task).output}_from_ids")(encodings).numpy()
            else:
                encoding, _ = ensemble._encode_text([test.texts[i] for i in index])
                values = ensemble.sentiment_from_ids(encoding).numpy()
            if out is None:
                out = np.zeros((len(order),) + values.shape[1:], np.float64)
            out[index] = values
        write_predictions(pred_dir, task, "test", test.ids, ensemble_predictions(task, out))


def write_test_predictions_from_outputs(rows, pred_dir, data_dir):
    """Test-student predictions of the mean of `rows`' published `test-outputs.npz`.

    The same mean the Keras ensemble computes, from files instead of weights.
    Returns False, writing nothing, unless every row has test outputs; a task
    without a test file (or without outputs in every row) is skipped and reported.
    """
    rows = [Path(r) for r in rows]
    if not all((r / rf.TEST_OUTPUTS).is_file() for r in rows):
        return False
    published = [set(np.load(r / rf.TEST_OUTPUTS).files) for r in rows]
    tests = _test_splits(pred_dir, data_dir,
                         lambda task: all(task in files for files in published)
                         or f"not every member has {task} test outputs")
    ids = {task: list(test.ids) for task, test in tests.items()}
    probs = [member_probabilities(r, ids, "test", tasks=tuple(tests)) for r in rows]
    for task, test in tests.items():
        mean = np.mean([p[task] for p in probs], axis=0)
        write_predictions(pred_dir, task, "test", test.ids, ensemble_predictions(task, mean))
    return True


def _test_splits(pred_dir, data_dir, can_predict=lambda task: True):
    """{task: test split} for the tasks the ensemble will write test predictions for.

    A task is skipped, reported, and its earlier test prediction file removed (it
    would disagree with this ensemble) when its test file is missing or
    `can_predict(task)` returns a reason string instead of True.
    """
    tests = {}
    for task in TASKS:
        try:
            test = load_split(task, "test", data_dir)
        except FileNotFoundError as e:
            reason = str(e)
        else:
            reason = can_predict(task)
            if reason is True:
                tests[task] = test
                continue
        prediction_path(pred_dir, task, "test").unlink(missing_ok=True)
        print(f"no {task} test predictions: {reason}", file=sys.stderr)
    return tests


def update_test_predictions(members, results_dir, pred_dir, data_dir, runs=None, made_by=None):
    """Brings the ensemble's test predictions in `pred_dir` up to date with `members`.

    From the rows' published test outputs if all have them, else from the weights
    in `runs/<member>` if every folder holds the training its row published.
    Failing both, predictions are kept only if `made_by` (the summary's record of
    who made them) is this very set of trainings; otherwise they are removed and
    the reason reported. Returns the new record: {"test_members": names or None,
    "test_member_versions": {name: training_version} or None}.
    """
    versions = {name: training_version(Path(results_dir) / name) for name in members}
    for name, version in versions.items():
        if version is None:  # every published row has one; without it nothing can be matched
            raise FileNotFoundError(f"{Path(results_dir) / name / rf.METRICS}: no such file")
    made = {"test_members": list(members), "test_member_versions": versions}
    if write_test_predictions_from_outputs([Path(results_dir) / n for n in members],
                                           pred_dir, data_dir):
        return made
    if runs is not None:
        folders = [Path(runs) / name for name in members]
        unusable = []
        for folder in folders:
            version = training_version(folder)
            if version is None:
                unusable.append(f"{folder} (missing)")
            elif version != versions[folder.name]:
                unusable.append(f"{folder} (another training than its row)")
        if not unusable:
            write_test_predictions(folders, pred_dir, data_dir)
            return made
        print(f"cannot recompute test predictions from weights: {', '.join(unusable)}",
              file=sys.stderr)
    made_by = made_by or {}
    if made_by.get("test_members") != list(members):
        why = f"made for {made_by.get('test_members') or 'unrecorded members'}, not {list(members)}"
    else:
        recorded = made_by.get("test_member_versions") or {}
        changed = [n for n in members if recorded.get(n) != versions[n]]
        if not changed:
            return made
        why = f"made by other trainings of {changed} than the rows now hold"
    drop_test_predictions(pred_dir, why)
    return {"test_members": None, "test_member_versions": None}


def drop_test_predictions(pred_dir, why):
    """Remove the ensemble's test predictions, saying `why` they no longer hold.

    Files left from an earlier ensemble would silently disagree with the dev row.
    """
    stale = [prediction_path(pred_dir, task, "test") for task in TASKS]
    stale = [path for path in stale if path.exists()]
    for path in stale:
        path.unlink()
    if stale:
        print(f"removed {len(stale)} test prediction files {why}; publish the members with "
              "test outputs, or pass --runs with their run folders, to write them",
              file=sys.stderr)
    return stale


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.ensemble",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", required=True,
                        help="row names in results/ (multitask rows evaluated on all tasks)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", default=None,
                        help="folder of the members' run folders (weights), for test predictions "
                             "when a member has no published test-outputs.npz")
    parser.add_argument("--name", default="em", help="row name (em)")
    parser.add_argument("--size", type=int, default=None,
                        help="ensemble size to publish (default: the best on dev)")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)

    ranked, curve, probs, dev = size_curve(args.members, RESULTS_DIR, data_dir)
    chosen = (curve[args.size - 1] if args.size else
              max(curve, key=lambda c: c["dev"]["overall_cs224n"]))
    row = RESULTS_DIR / args.name
    (row / rf.PREDICTIONS).mkdir(parents=True, exist_ok=True)
    for c in curve:
        print(f"size {c['size']} (+{c['members'][-1]:<15}) " + "  ".join(
            f"{k} {v:.4f}" for k, v in c["dev"].items()))
    plot_size_curve(curve, row / "ensemble_size.png")
    (row / "ensemble_size.json").write_text(json.dumps(curve, indent=2) + "\n")
    for task in TASKS:
        mean = np.mean([probs[n][task] for n in chosen["members"]], axis=0)
        write_predictions(row / rf.PREDICTIONS, task, "dev", dev[task].ids,
                          ensemble_predictions(task, mean))
    previous = row / rf.SUMMARY
    made_by = json.loads(previous.read_text()) if previous.exists() else None
    made = update_test_predictions(chosen["members"], RESULTS_DIR, row / rf.PREDICTIONS,
                                   data_dir, runs=args.runs, made_by=made_by)
    summary = {"variant": "em", "members": chosen["members"], "best": chosen["dev"], **made,
               "epochs": None, "minutes_per_epoch": None}
    (row / rf.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    command = ("python -m experiments.ensemble --members " + " ".join(args.members)
               + " --data-dir $KERASBERT_DATA" + (f" --runs {args.runs}" if args.runs else "")
               + (f" --size {args.size}" if args.size else ""))
    (row / "run.json").write_text(json.dumps(
        {"command": command, "ranked": ranked, "chosen_size": chosen["size"],
         "export": "python -m export.run --runs " + " ".join(
             f"runs/{n}" for n in chosen["members"]) + f" --out exports/{args.name} "
             "--data-dir $KERASBERT_DATA"}, indent=2) + "\n")
    print(f"EM = {chosen['members']}: " + json.dumps(chosen["dev"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
