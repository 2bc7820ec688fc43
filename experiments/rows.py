"""A row of `results/`: a published run folder, and how to check it.

    publish(run_dir)        copies a finished run folder into results/NAME
    rescore(row, data_dir)  its dev metrics, from its prediction files and the dev labels
    compare(run_dir, row)   does a retrain reproduce the row?

A row folder holds what a reader needs to trust a number without the run
folder (checkpoints and weights are not committed):

    config.json         every training setting (`TrainConfig` + the variant's definition),
                        with the machine's paths written as `$KERASBERT_DATA` and `runs/ROW`
    metrics.jsonl       per-epoch dev metrics, losses and seconds
    summary.json        the best epoch's dev metrics (what the table shows)
    train_loss.csv      per-step task losses as logged to TensorBoard
    run.json            the command that reproduces the row, wall time, machine
    learning_curves.png
    predictions/        CS224N `*-dev-output.csv`, `*-test-output.csv`
    dev-outputs.npz     raw dev outputs (logits, 0-5 scores) in the dev files' row
                        order, which `experiments.ensemble` averages into EM
    test-outputs.npz    the same for the test-student files (runs finished since
                        December 2026), from which EM's test predictions are made
                        without the members' weights
"""

import dataclasses
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

from kerasbert_lite.tasks import MULTITASK, get_task
from training import run_folder as rf

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"

# Table order; any other row folder follows, alphabetically.
ROW_ORDER = ("bm", "dps", "infonce", "mse", "dps_mse", "em", "cross", "cross_s1", "infonce_plus",
             "dps_mse_pooled", "sst_only", "clf_sst_frozen", "clf_sst_finetune",
             "clf_sst_frozen_mean", "clf_cfimdb_frozen", "clf_cfimdb_frozen_mean",
             "clf_cfimdb_finetune")

# TrainConfig field -> `training.run` flag, for the fields a command line sets.
_FLAGS = {"variant": "--variant", "epochs": "--epochs", "model": "--model", "tasks": "--tasks",
          "sentiment_task": "--task", "mode": "--mode",
          "batch_size": "--batch-size", "eval_batch_size": "--eval-batch-size", "lr": "--lr",
          "head_lr": "--head-lr", "max_length": "--max-length", "buckets": "--buckets",
          "quora_fraction": "--quora-fraction", "limit": "--limit", "schedule": "--schedule",
          "warmup_ratio": "--warmup-ratio", "weight_decay": "--weight-decay",
          "clip_norm": "--clip-norm", "teacher": "--teacher", "teacher_weight": "--teacher-weight",
          "distill_temperature": "--distill-temperature", "extra_pairs": "--extra-pairs",
          "calibration_holdout": "--calibration-holdout", "student_layers": "--student-layers",
          "embedding_teacher": "--embedding-teacher", "embedding_weight": "--embedding-weight",
          "embedding_update": "--embedding-update", "seed": "--seed"}


def training_args(config):
    """The `python -m training.run` arguments that reproduce a run's config.json.

    Every setting that differs from the command line's defaults is spelled
    out, plus `--variant` and `--epochs`; `--data-dir` and `--out` are left
    to the caller.

    Example:
    >>> training_args({"variant": "bm", "epochs": 1, "tasks": ["sst"], "seed": 0})
    ['--variant', 'bm', '--epochs', '1', '--tasks', 'sst']
    >>> training_args({"variant": "dps_mse", "epochs": 5, "precision": "auto",
    ...                "precision_used": "mixed_bfloat16"})
    ['--variant', 'dps_mse', '--epochs', '5', '--precision', 'mixed_bfloat16']
    """
    from training.run import build_parser, config_from_args
    from training.variants import get_variant

    defaults = dataclasses.asdict(config_from_args(build_parser().parse_args([])))
    args = []
    single_task = "variant" in config and get_variant(config["variant"]).single_task
    for field, flag in _FLAGS.items():
        if field not in config:
            continue
        value = config[field]
        if isinstance(value, list):
            value = tuple(value)
        if field not in ("variant", "epochs") and value == defaults[field]:
            continue
        if field == "variant" and single_task:
            # A classifier's task and mode are part of what it is.
            args += ["--variant", value, "--task", config.get("sentiment_task", "sst"),
                     "--mode", config.get("mode", "finetune")]
            continue
        if field in ("sentiment_task", "mode") and single_task:
            continue
        if field == "teacher":
            args += [flag, *value]  # several paths, as typed
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        args += [flag, str(value)]
    if "precision_used" in config:
        # The policy the run trained under, not `auto`, which resolves by machine.
        args += ["--precision", config["precision_used"]]
    return args


def machine():
    """What the numbers were measured on: CPU model, cores, library versions."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def portable_config(config, name):
    """`config` without this machine's paths: where a row trained says nothing about it.

    The data folder becomes `$KERASBERT_DATA`, the run folder `runs/NAME`
    and a distillation teacher's folders `runs/THEIR_NAME`: the places
    `run.json`'s command and `make results` use.

    Example:
    >>> portable_config({"data_dir": "/home/me/data", "out": "/tmp/x.new", "epochs": 3}, "bm")
    {'data_dir': '$KERASBERT_DATA', 'out': 'runs/bm', 'epochs': 3}
    >>> portable_config({"teacher": ["/home/me/runs/em_a"]}, "distill")["teacher"]
    ['runs/em_a']
    """
    portable = {**config, "data_dir": "$KERASBERT_DATA", "out": f"runs/{name}"}
    if config.get("teacher"):
        portable["teacher"] = [f"runs/{Path(p).name}" for p in config["teacher"]]
    return portable


def publish(run_dir, name=None, results_dir=RESULTS_DIR, note=None):
    """Copies a finished run folder into `results_dir/name` (default: the run folder's name).

    Raises:
        FileNotFoundError: the run has no summary.json (it has not finished) or
            lacks a file the row needs.
    """
    run_dir, name = Path(run_dir), name or Path(run_dir).name
    if not (run_dir / rf.SUMMARY).is_file():
        raise FileNotFoundError(f"{run_dir}/summary.json: no such file; the run has not "
                                f"finished (resume it with training.run --resume)")
    config = json.loads((run_dir / rf.CONFIG).read_text())
    epochs = history(run_dir)
    row = Path(results_dir) / name
    (row / rf.PREDICTIONS).mkdir(parents=True, exist_ok=True)
    (row / rf.CONFIG).write_text(json.dumps(portable_config(config, name), indent=2) + "\n")
    for file in (rf.METRICS, rf.SUMMARY, rf.LEARNING_CURVES):
        shutil.copy2(run_dir / file, row / file)
    # A republished row holds exactly this run's prediction files: an earlier run's file for a
    # task or split this run did not score would otherwise sit beside them as if it were current.
    for stale in (row / rf.PREDICTIONS).glob("*-output.csv"):
        stale.unlink()
    for csv_file in sorted((run_dir / rf.PREDICTIONS).glob("*-output.csv")):
        shutil.copy2(csv_file, row / rf.PREDICTIONS / csv_file.name)
    _publish_outputs(run_dir / rf.PREDICTIONS, row, "dev")
    if not _publish_outputs(run_dir / rf.PREDICTIONS, row, "test", required=False):
        print(f"{run_dir}: no test-outputs.npz (a run finished before they were written, or "
              f"scored without test files); "
              f"an EM holding {name} needs its weights for test predictions. Rescore it with "
              f"`python -m training.run --out {run_dir} --resume` to write them",
              file=sys.stderr)
    _publish_train_loss(run_dir / rf.TENSORBOARD, row / "train_loss.csv")
    train_s = sum(h["train_seconds"] for h in epochs)
    eval_s = sum(h["eval_seconds"] for h in epochs)
    # The portable config: a teacher's folders are named as runs/NAME, like the row's own.
    args = training_args(portable_config(config, name))
    info = {"command": "python -m training.run " + " ".join(args)
                       + " --data-dir $KERASBERT_DATA",
            "args": args,
            "epochs": len(epochs), "train_minutes": round(train_s / 60, 1),
            "eval_minutes": round(eval_s / 60, 1), "machine": machine()}
    if note:
        info["note"] = note
    (row / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return row


def history(folder):
    """The per-epoch records of a run or row's metrics.jsonl."""
    lines = (Path(folder) / rf.METRICS).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _publish_outputs(pred_dir, row, split, required=True):
    """Raw `split` outputs, reordered to the rows of its prediction files, without ids.

    Returns False (and writes nothing) if the run has none and they are not required.
    """
    source = pred_dir / f"{split}-outputs.npz"
    target = row / f"{split}-outputs.npz"
    if not source.is_file():
        if required:
            raise FileNotFoundError(f"{source}: no such file; rescore the run with "
                                    f"`python -m training.run --out {pred_dir.parent} --resume`")
        target.unlink(missing_ok=True)  # never keep an earlier run's outputs beside these
        return False
    from training.predictions import prediction_path, read_predictions

    np.savez_compressed(target, **outputs_in_order(
        source, lambda task: list(read_predictions(prediction_path(pred_dir, task, split)))))
    return True


def outputs_in_order(source, ids_of):
    """{task: the raw outputs in a run's `*-outputs.npz`, in the order of `ids_of(task)`}.

    A task for which `ids_of` returns None is left out.
    """
    arrays = {}
    with np.load(source) as raw:
        for key in raw.files:
            if not key.endswith("_outputs"):
                continue
            task = key[: -len("_outputs")]
            ids = ids_of(task)
            if ids is None:
                continue
            order = {example_id: i for i, example_id in enumerate(raw[f"{task}_ids"].tolist())}
            arrays[task] = raw[key][[order[i] for i in ids]].astype(np.float32)
    return arrays


def _publish_train_loss(tensorboard_dir, path):
    """The logged per-step task losses (TensorBoard `loss/*`) as `step,task,loss` rows.

    A resumed run logs some steps twice; the last value of a step wins.
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    losses = {}
    for events in sorted(Path(tensorboard_dir).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(events)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag.startswith("loss/"):
                    losses[(event.step, value.tag[5:])] = float(tf.make_ndarray(value.tensor))
    with open(path, "w") as f:
        f.write("step,task,loss\n")
        for (step, task), loss in sorted(losses.items()):
            f.write(f"{step},{task},{loss:.5f}\n")


def rows(results_dir=RESULTS_DIR):
    """Row folders (those with a summary.json) in table order."""
    found = {p.name: p for p in Path(results_dir).iterdir() if (p / rf.SUMMARY).is_file()}
    order = [n for n in ROW_ORDER if n in found] + sorted(n for n in found if n not in ROW_ORDER)
    return [found[n] for n in order]


def rescore(row, data_dir):
    """Dev metrics recomputed from a row's prediction files and the dev labels.

    Returns `{metric: (from files, from summary.json)}`; the CSVs round STS
    scores to 4 decimals, so the two agree to ~1e-4, not exactly.
    """
    from training.metrics import METRIC_NAMES, task_metric
    from training.predictions import prediction_path, read_predictions
    from training.readers import load_split

    best = json.loads((Path(row) / rf.SUMMARY).read_text())["best"]
    out = {}
    for task, metric in METRIC_NAMES.items():
        path = prediction_path(Path(row) / rf.PREDICTIONS, task, "dev")
        if metric not in best or not path.is_file():
            continue
        predicted = read_predictions(path)
        dev = load_split(task, "dev", data_dir)
        missing = [i for i in dev.ids if i not in predicted]
        if missing or len(predicted) != len(dev.ids):
            raise ValueError(f"{path}: {len(predicted)} rows for {len(dev.ids)} dev examples "
                             f"({len(missing)} dev ids missing, e.g. {missing[:1]})")
        values = np.array([predicted[i] for i in dev.ids])
        out[metric] = (task_metric(task, values, dev.labels), best[metric])
    return out


def compare(run_dir, row, tolerance=1e-3):
    """How closely a run, retrained from a row's command, reproduces the published row.

    Args:
        run_dir: the finished run folder.
        row: the published row folder (`results/NAME`).
        tolerance: the largest difference of a logged dev metric that still counts
            as the same (1e-3 is one SST example in 1,101).

    Returns:
        A dict: `epochs`, `[(epoch, metric, run value, row value)]` for every
        logged dev metric; `labels`, `{task: share of dev examples whose predicted
        label is the same}` (SST, Quora); `scores`, `{task: largest difference of a
        dev prediction}` (STS, as the CSVs round it); `outputs`, `{task: largest
        difference of the raw dev outputs}`; `best_epoch`, `(run, row)`; and
        `reproduced`: the same epochs, the same best epoch, and every logged
        metric within `tolerance`.
    """
    from training.predictions import prediction_path, read_predictions

    run_dir, row = Path(run_dir), Path(row)
    for folder in (run_dir, row):
        if not (folder / rf.SUMMARY).is_file():
            raise FileNotFoundError(f"{folder}/summary.json: no such file (not a finished run "
                                    f"or a published row)")

    ran, published = ({h["epoch"]: h["dev"] for h in history(f)} for f in (run_dir, row))
    epochs = [(epoch, metric, ran[epoch][metric], published[epoch][metric])
              for epoch in sorted(set(ran) & set(published))
              for metric in published[epoch] if metric in ran[epoch]]
    best = tuple(json.loads((f / rf.SUMMARY).read_text())["best_epoch"]
                 for f in (run_dir, row))
    labels, scores, row_ids = {}, {}, {}
    for task in MULTITASK:
        paths = [prediction_path(f / rf.PREDICTIONS, task, "dev") for f in (run_dir, row)]
        if not all(path.is_file() for path in paths):
            continue
        mine, theirs = map(read_predictions, paths)
        if mine.keys() != theirs.keys():
            raise ValueError(f"{paths[0]} and {paths[1]} predict different dev examples")
        row_ids[task] = list(theirs)
        a, b = np.array(list(mine.values())), np.array([theirs[i] for i in mine])
        if get_task(task).label == "score":
            scores[task] = float(np.abs(a - b).max())
        else:
            labels[task] = float(np.mean(a == b))
    outputs = {}
    if (run_dir / rf.PREDICTIONS / rf.DEV_OUTPUTS).is_file() and \
            (row / rf.DEV_OUTPUTS).is_file():
        # The row's outputs are in its prediction files' order: put the run's in the same.
        ran_outputs = outputs_in_order(run_dir / rf.PREDICTIONS / rf.DEV_OUTPUTS, row_ids.get)
        with np.load(row / rf.DEV_OUTPUTS) as row_outputs:
            for task in set(ran_outputs) & set(row_outputs.files):
                outputs[task] = float(np.abs(ran_outputs[task] - row_outputs[task]).max())
    reproduced = (set(ran) == set(published) and best[0] == best[1]
                  and all(abs(a - b) <= tolerance for _, _, a, b in epochs))
    return {"epochs": epochs, "labels": labels, "scores": scores, "outputs": outputs,
            "best_epoch": best, "reproduced": reproduced}


def print_comparison(found, out=None):
    """`compare`'s result as a few lines a reader can check (to `out`, default stdout)."""
    out = out or sys.stdout
    worst = {}
    for epoch, metric, a, b in found["epochs"]:
        worst[epoch] = max(worst.get(epoch, 0.0), abs(a - b))
    for epoch, diff in sorted(worst.items()):
        print(f"epoch {epoch}: largest dev metric difference {diff:.2g}", file=out)
    print(f"best epoch: run {found['best_epoch'][0]}, row {found['best_epoch'][1]}", file=out)
    for task, share in found["labels"].items():
        print(f"{task} dev labels: {share:.2%} the same", file=out)
    for task, diff in found["scores"].items():
        print(f"{task} dev scores: largest difference {diff:.2g}", file=out)
    for task, diff in sorted(found["outputs"].items()):
        print(f"{task} raw dev outputs: largest difference {diff:.2g}", file=out)
    print("reproduced" if found["reproduced"] else "NOT reproduced", file=out)
