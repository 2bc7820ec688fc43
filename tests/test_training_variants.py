"""Every training variant takes XLA-compiled steps and fits a repeated batch.

For each variant in `VARIANTS` a `MultitaskTrainer` is built once on the tiny
model and data (batch 8, max_length 16, one bucket, `jit_compile=True`); for
every task the variant trains, `trainer._train_step(task)` is run several
times on one fixed training batch. The loss must be finite, the task's
weights must move, and the loss must go down. Dropout is off (encoder
dropout 0 in the model folder, head dropout set to 0) so that the repeated
batch is a fixed objective and "goes down" is not at the mercy of noise.

XLA compilation of ~25 train steps dominates the cost, so the work runs in
two worker processes side by side (this file, run as a script), with XLA's
LLVM backend optimisation turned down (`--xla_backend_optimization_level=0`:
the same HLO passes and lowering, only less machine-code optimisation).
Each worker reports per variant; the tests below assert per variant.
"""

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from training.variants import VARIANTS

STEPS = 10
LR = 1e-3
HERE = Path(__file__).resolve().parent


def _pick_batch(trainer, task):
    """The fixed training batch: of epoch 0's batches, the one with the highest
    initial loss (a batch the model already fits, as an InfoNCE batch at
    temperature 0.007 can be, has nothing left to lower). Pair batches must
    hold both kinds of example (positives for a contrastive loss, both
    classes for BCE)."""
    import numpy as np

    dataset, _ = trainer.train_batches[task].train_dataset(0, 0)
    v = trainer.variant
    best, best_loss = None, -np.inf
    for x, y in dataset:
        y_ = np.asarray(y)
        if y_.ndim == 2:  # distillation: (gold, teacher outputs)
            y_ = y_[:, 0]
        if task == "quora" and not 0 < y_.sum() < len(y_):
            continue
        if task == "sts" and not ((y_ >= v.infonce_positive_threshold).any() and (y_ < 2.5).any()):
            continue
        loss = float(_task_loss(trainer, task, x, y))
        if loss > best_loss:
            best, best_loss = (x, y), loss
    assert best is not None, f"no suitable {task} batch"
    return best


def _task_loss(trainer, task, x, y):
    from kerasbert_lite.tasks import TASKS
    output = TASKS[task].output
    return trainer.model.task_loss({output: x}, {output: y}, trainer.variant.task_losses())[0]


def _task_variables(trainer, task):
    """The trainable variables of the sub-model the task's loss reads."""
    from kerasbert_lite.tasks import TASKS
    name = trainer.variant.task_losses().submodel(TASKS[task].output)
    return trainer.model.task_model(name).trainable_variables


def run_variants(names, model_dir, data_dir, out):
    """Worker: {variant: {task: {...}} or {"error": traceback}}."""
    import numpy as np

    from tiny_setup import tiny_config
    from training.multitask_trainer import MultitaskTrainer

    results = {}
    for name in names:
        try:
            extra = {}
            if VARIANTS[name].distill:
                from test_export_fixtures import make_run
                from tiny_setup import VOCAB
                extra["teacher"] = (str(make_run(Path(out) / f"{name}_teacher", seed=3,
                                                 vocab=VOCAB)),)
            config = tiny_config(model_dir, data_dir, Path(out) / name, variant=name,
                                 jit_compile=True, lr=LR, **extra)
            trainer = MultitaskTrainer(config).setup()
            trainer.model.get_layer("head_dropout").rate = 0.0  # before any trace
            per_task = {"train_tasks": list(trainer.train_tasks), "jit": trainer.jit_compile}
            for task in trainer.train_tasks:
                x, y = _pick_batch(trainer, task)
                step = trainer._train_step(task)
                variables = _task_variables(trainer, task)
                before = [np.array(w.numpy()) for w in variables]
                losses = [float(step(x, y))]
                moved = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, variables))
                losses += [float(step(x, y)) for _ in range(STEPS - 1)]
                per_task[task] = {"losses": losses, "moved": moved, "variables": len(variables),
                                  "step_jit": bool(getattr(step, "_jit_compile", None)),
                                  "labels": np.asarray(y).tolist()}
            results[name] = per_task
        except Exception:  # noqa: BLE001 - reported per variant
            results[name] = {"error": traceback.format_exc()}
    return results


@pytest.fixture(scope="module")
def variant_results(tiny_model_dir_no_dropout, tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    names = list(VARIANTS)
    halves = [names[0::2], names[1::2]]
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                      + " --xla_backend_optimization_level=0").strip(),
               TF_CPP_MIN_LOG_LEVEL="2")
    procs = []
    for i, half in enumerate(halves):
        result = out / f"results-{i}.json"
        args = [sys.executable, __file__, json.dumps(half), str(tiny_model_dir_no_dropout),
                str(tiny_data_dir), str(out), str(result)]
        procs.append((subprocess.Popen(args, cwd=HERE.parent, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True), result))
    results = {}
    for proc, result in procs:
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0 and result.is_file(), f"worker failed:\n{log[-4000:]}"
        results.update(json.loads(result.read_text()))
    return results


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_under_xla(variant_results, name):
    result = variant_results[name]
    assert "error" not in result, result.get("error")
    variant = VARIANTS[name]
    expected = ["sst"] if variant.single_task else list(variant.tasks)
    assert result["train_tasks"] == expected
    assert result["jit"] is True
    for task in expected:
        r = result[task]
        losses = r["losses"]
        assert r["step_jit"], f"{name}/{task}: the step is not XLA-compiled"
        assert len(losses) == STEPS and all(map(_finite, losses)), f"{name}/{task}: {losses}"
        # Every variable of the task's sub-model got an update (AdamW moves a
        # weight even for a tiny gradient), but for the tanh pooler, which
        # mean / [CLS] pooling leaves without a gradient.
        unused = 0 if variant.pooling == "pooled" else 2
        assert r["moved"] == r["variables"] - unused > 0, (
            f"{name}/{task}: {r['moved']} of {r['variables']} variables moved")
        # Dropout is off: a fixed objective, so any real descent shows (float
        # noise is ~1e-7). Some heads start slowly: dps_mse_pooled's STS loss,
        # 5 * relu(cosine), has no gradient where a random encoder's cosine
        # is negative, and falls only ~1e-3 in 10 steps.
        first, last = losses[0], min(losses[-3:])
        assert last < first - 1e-4 * max(1.0, abs(first)), f"{name}/{task}: {losses}"


@pytest.mark.parametrize("name", ["classifier", "classifier_mean"])
def test_classifier_trains_sentiment_only(variant_results, name):
    assert set(variant_results[name]) == {"train_tasks", "jit", "sst"}


def _finite(value):
    import math
    return math.isfinite(value)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    names, model_dir, data_dir, out, result = sys.argv[1:]
    report = run_variants(json.loads(names), model_dir, data_dir, out)
    Path(result).write_text(json.dumps(report))
