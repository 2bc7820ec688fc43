"""MultitaskTrainer and `python -m training.run` end to end on the tiny model and data.

* One uninterrupted CLI run (A) is checked file by file.
* The same run killed twice (`--kill-after-steps`: once in epoch 1, once in
  epoch 2, neither on a checkpoint step) and resumed must end like A, to float noise.
* Resume / new-run refusals, `--help` and a bad `--data-dir` go through
  `training.run.main` in this process (no extra TensorFlow start-up).
* The non-finite-loss guard, in process.
* MirroredStrategy over two logical CPUs against one device, in a subprocess
  (logical devices must be configured before TensorFlow initialises).

The CLI runs use graph mode (`--jit off`, what "auto" picks on CPU); XLA steps
are covered per variant in test_training_variants.py.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tiny_setup import TINY_FLAGS, TINY_ROWS, VOCAB, run_training, tiny_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BATCH = 8
STEPS_PER_EPOCH = 3 * (TINY_ROWS["train"] // BATCH)  # sst, quora, sts: 12 batches each
EPOCHS = 2
CHECKPOINT_EVERY = 3
KILL_1 = 5  # epoch 1, last checkpoint at step 3
KILL_2 = STEPS_PER_EPOCH + 7  # epoch 2, last checkpoint at step 42
LR = "2e-3"  # high enough for the tiny random model to learn something in 2 epochs
assert KILL_1 % CHECKPOINT_EVERY and KILL_2 % CHECKPOINT_EVERY


def _state(out):
    path = Path(out) / "checkpoints" / "latest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _metric_lines(out):
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _comparable(record):
    """A metrics.jsonl record without its wall-clock fields."""
    return {k: v for k, v in record.items() if k not in ("train_seconds", "eval_seconds")}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """Run A (uninterrupted) beside run B (killed in epoch 1, resumed and killed
    in epoch 2, resumed to the end); what each step left behind."""
    base = tmp_path_factory.mktemp("runs")
    common = ["--model", str(tiny_model_dir), "--data-dir", str(tiny_data_dir), "--lr", LR,
              *TINY_FLAGS]
    a_out, b_out = base / "A", base / "B"
    result = {"a_out": a_out, "b_out": b_out, "common": common}

    def run_a():
        result["a"] = run_training(common + ["--out", str(a_out)])

    thread = threading.Thread(target=run_a)
    thread.start()
    try:
        result["b1"] = run_training(common + ["--out", str(b_out),
                                              "--kill-after-steps", str(KILL_1)])
        result["b1_state"] = _state(b_out)
        result["b1_files"] = sorted(p.name for p in (b_out / "checkpoints").iterdir())
        result["b1_metrics"] = _metric_lines(b_out)
        result["b1_best"] = (b_out / "best.keras").exists()
        result["b2"] = run_training(common + ["--out", str(b_out), "--resume",
                                              "--kill-after-steps", str(KILL_2)])
        result["b2_state"] = _state(b_out)
        result["b2_files"] = sorted(p.name for p in (b_out / "checkpoints").iterdir())
        result["b2_metrics"] = _metric_lines(b_out)
        result["b3"] = run_training(common + ["--out", str(b_out), "--resume"])
    finally:
        thread.join()
    return result


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"


# ----------------------------------------------------------------- run folder
def test_uninterrupted_run_folder(runs, tiny_data_dir):
    import keras

    import kerasbert
    from training.predictions import read_predictions
    from training.readers import load_split

    _ok(runs["a"])
    out = runs["a_out"]
    # Not a terminal: no redrawn bars, a plain progress line each tenth of an epoch.
    assert "\r" not in runs["a"].stderr
    lines = [ln for ln in runs["a"].stderr.splitlines() if "steps/s" in ln]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2"] * 10 + ["epoch 2/2"] * 10, lines
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "dps_mse" and config["epochs"] == EPOCHS
    assert config["lr_used"] == float(LR) and config["buckets"] == [16]
    assert config["num_sentiment_classes"] == 5 and config["lowercase"] is True
    assert config["variant_definition"]["name"] == "dps_mse"

    lines = _metric_lines(out)
    assert [r["epoch"] for r in lines] == [1, 2]
    assert [r["step"] for r in lines] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for record in lines:
        assert set(record["train_loss"]) == {"sst", "quora", "sts"}
        assert set(record["dev"]) == {"sst_acc", "quora_acc", "sts_pearson",
                                      "overall_mean", "overall_cs224n"}
        dev = record["dev"]
        assert dev["overall_cs224n"] == pytest.approx(
            (dev["sst_acc"] + dev["quora_acc"] + (dev["sts_pearson"] + 1) / 2) / 3)
    # The signal is learnable: every task's training loss falls from epoch 1 to 2.
    for task in ("sst", "quora", "sts"):
        assert lines[1]["train_loss"][task] < lines[0]["train_loss"][task], lines

    summary = json.loads((out / "summary.json").read_text())
    assert summary["variant"] == "dps_mse" and summary["epochs"] == EPOCHS
    best = max(lines, key=lambda r: r["dev"]["overall_cs224n"])
    assert summary["best_epoch"] == best["epoch"]
    # _finish reloads best.keras and re-scores dev: the best epoch's numbers.
    assert summary["best"] == pytest.approx(best["dev"], abs=1e-12)

    model = keras.saving.load_model(out / "best.keras")
    assert isinstance(model, kerasbert.MultitaskBert) and model.similarity_head == "cosine"
    assert (out / "vocab.txt").read_text().splitlines() == VOCAB

    pred = out / "predictions"
    dev = {t: load_split(t, "dev", tiny_data_dir) for t in ("sst", "quora", "sts")}
    sst = read_predictions(pred / "sst-dev-output.csv")
    para = read_predictions(pred / "para-dev-output.csv")
    sts = read_predictions(pred / "sts-dev-output.csv")
    for data, got in ((dev["sst"], sst), (dev["quora"], para), (dev["sts"], sts)):
        assert list(got) == list(data.ids)
    assert set(sst.values()) <= set(range(5)) and set(para.values()) <= {0.0, 1.0}
    # The files hold the best model's predictions: they give its dev scores.
    labels = dev["sst"].labels
    assert np.mean([sst[i] == y for i, y in zip(dev["sst"].ids, labels)]) == pytest.approx(
        summary["best"]["sst_acc"])
    r = np.corrcoef([sts[i] for i in dev["sts"].ids], dev["sts"].labels)[0, 1]
    assert r == pytest.approx(summary["best"]["sts_pearson"], abs=1e-3)  # 4 decimals in the file
    # best.keras carries its tokenizer: raw strings in give the run's own dev predictions.
    similarity = kerasbert.text_model(model, task="similarity")
    scores = similarity.predict({"text_a": dev["sts"].texts_a, "text_b": dev["sts"].texts_b},
                                verbose=0)
    np.testing.assert_allclose(scores, [sts[i] for i in dev["sts"].ids], atol=1e-3)
    classes = kerasbert.text_model(model).predict(dev["sst"].texts, verbose=0).argmax(-1)
    assert list(classes) == [sst[i] for i in dev["sst"].ids]
    for task, stem in (("sst", "sst"), ("sts", "sts")):
        test = read_predictions(pred / f"{stem}-test-output.csv")
        assert list(test) == list(load_split(task, "test", tiny_data_dir).ids)
    assert not (pred / "para-test-output.csv").exists()  # no quora test file

    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    state = _state(out)
    assert (state["epoch"], state["position"], state["global_step"]) == (
        EPOCHS, 0, EPOCHS * STEPS_PER_EPOCH)
    # The last checkpoint and the one before it (the fallback, previous.json).
    last = EPOCHS * STEPS_PER_EPOCH
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest.json", "previous.json", f"step-{last - CHECKPOINT_EVERY:08d}.npz",
        f"step-{last:08d}.npz"]
    assert json.loads((out / "checkpoints" / "previous.json").read_text())["global_step"] == \
        last - CHECKPOINT_EVERY
    assert not list(out.glob(".*.tmp*")) and not list((out / "checkpoints").glob(".*.tmp*"))
    assert not (out / ".lock").exists()


# -------------------------------------------------------------- kill / resume
def test_kill_leaves_last_checkpoint(runs):
    assert runs["b1"].returncode == 137, runs["b1"].stderr[-3000:]
    state = runs["b1_state"]
    assert (state["epoch"], state["position"], state["global_step"]) == (0, 3, 3)
    assert runs["b1_files"] == ["latest.json", "step-00000003.npz"]
    assert runs["b1_metrics"] == [] and not runs["b1_best"]

    assert runs["b2"].returncode == 137, runs["b2"].stderr[-3000:]
    state = runs["b2_state"]
    last = KILL_2 // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    assert (state["epoch"], state["position"], state["global_step"]) == (
        1, last - STEPS_PER_EPOCH, last)
    assert runs["b2_files"] == ["latest.json", "previous.json",
                                f"step-{last - CHECKPOINT_EVERY:08d}.npz", f"step-{last:08d}.npz"]
    assert [r["epoch"] for r in runs["b2_metrics"]] == [1]
    assert len(state["history"]) == 1


# What --resume promises: the uninterrupted run's result to float noise. Two
# uninterrupted MiniLM runs on this 2-core CPU already differ by ~1e-7 (losses,
# Pearson, weights; README "Resuming"), so that is the most any resume can give
# in general. The tiny runs here happen to be bit-identical; the test allows noise.
NOISE = 1e-5


def test_resume_equals_uninterrupted(runs):
    import keras

    _ok(runs["a"])
    _ok(runs["b3"])
    a, b = runs["a_out"], runs["b_out"]
    lines_a, lines_b = _metric_lines(a), _metric_lines(b)
    assert [r["epoch"] for r in lines_b] == [r["epoch"] for r in lines_a]
    assert [r["step"] for r in lines_b] == [r["step"] for r in lines_a]
    for ra, rb in zip(lines_a, lines_b):
        assert rb["dev"] == pytest.approx(ra["dev"], rel=0, abs=NOISE)
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=0, abs=NOISE)
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_b["best_epoch"] == summary_a["best_epoch"]
    assert summary_b["best"] == pytest.approx(summary_a["best"], rel=0, abs=NOISE)
    weights_a = keras.saving.load_model(a / "best.keras").get_weights()
    weights_b = keras.saving.load_model(b / "best.keras").get_weights()
    assert len(weights_a) == len(weights_b)
    for wa, wb in zip(weights_a, weights_b):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=NOISE)
    # The last checkpoints (model + optimizer state) agree too.
    last = f"step-{EPOCHS * STEPS_PER_EPOCH:08d}.npz"
    with np.load(a / "checkpoints" / last) as ca, np.load(b / "checkpoints" / last) as cb:
        assert ca.files == cb.files
        for key in ca.files:
            np.testing.assert_allclose(ca[key], cb[key], rtol=0, atol=NOISE, err_msg=key)
    from training.predictions import read_predictions
    for name in ("sst-dev-output.csv", "para-dev-output.csv", "sts-dev-output.csv",
                 "sst-test-output.csv", "sts-test-output.csv"):
        got, want = (read_predictions(run / "predictions" / name) for run in (b, a))
        assert list(got) == list(want)
        # Labels are equal; a 0-5 score may round the other way at its 4th decimal.
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=0,
                                   atol=1.01e-4 if name.startswith("sts") else 0, err_msg=name)


def _main(args, capsys):
    from training.run import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def test_resume_with_other_settings_refused(runs, capsys):
    _ok(runs["a"])
    out = runs["a_out"]
    before = {p.name: p.read_bytes() for p in (out / "config.json", out / "metrics.jsonl")}
    args = [a for a in runs["common"]]
    args[args.index("--lr") + 1] = "0.5"
    code, err = _main(args + ["--out", str(out), "--resume"], capsys)
    assert code == 2
    assert "started with other settings (lr)" in err and "--out" in err
    assert {p.name: p.read_bytes() for p in (out / "config.json", out / "metrics.jsonl")} == before


def test_new_run_into_used_folder_refused(runs, capsys, tmp_path):
    _ok(runs["a"])
    out = tmp_path / "copy"
    shutil.copytree(runs["a_out"], out)
    before = (out / "metrics.jsonl").read_bytes()
    code, err = _main(runs["common"] + ["--out", str(out)], capsys)
    assert code == 2
    assert "already holds a run; pass --resume" in err
    assert (out / "metrics.jsonl").read_bytes() == before


def _finished_copy(runs, tmp_path, name="copy"):
    _ok(runs["a"])
    out = tmp_path / name
    shutil.copytree(runs["a_out"], out)
    return out


PREDICTION_NAMES = ("sst-dev-output.csv", "para-dev-output.csv", "sts-dev-output.csv",
                    "sst-test-output.csv", "sts-test-output.csv")


def test_resume_finishes_what_a_kill_left_undone(runs, capsys, tmp_path):
    # A kill -9 while the prediction files were written left para-dev-output.csv
    # empty, and --resume exited 0 without rewriting it. Every output is now
    # written whole or not at all, and a resume of a finished run redoes the rest.
    out = _finished_copy(runs, tmp_path)
    (out / "predictions" / "para-dev-output.csv").write_text("")
    (out / "predictions" / "sts-test-output.csv").unlink()
    (out / "summary.json").unlink()
    code, err = _main(runs["common"] + ["--out", str(out), "--resume"], capsys)
    assert code == 0, err
    for name in PREDICTION_NAMES:
        assert (out / "predictions" / name).read_bytes() == \
            (runs["a_out"] / "predictions" / name).read_bytes(), name
    assert (out / "summary.json").is_file()
    assert (out / "metrics.jsonl").read_bytes() == (runs["a_out"] / "metrics.jsonl").read_bytes()


def test_damaged_latest_checkpoint_falls_back_to_the_previous(runs, capsys, tmp_path):
    last = EPOCHS * STEPS_PER_EPOCH
    out = _finished_copy(runs, tmp_path)
    arrays = out / "checkpoints" / f"step-{last:08d}.npz"
    arrays.write_bytes(arrays.read_bytes()[:1000])  # a truncated zip
    code, err = _main(runs["common"] + ["--out", str(out), "--resume"], capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, err
    assert warning[0].startswith(f"warning: {arrays}: unreadable (BadZipFile")
    assert warning[0].endswith(f"resuming from the previous checkpoint "
                               f"{out / 'checkpoints' / 'previous.json'} (step {last - 3})")
    # The last 3 steps were redone from step 69: the same run, to float noise.
    a, b = _metric_lines(runs["a_out"]), _metric_lines(out)
    assert [r["epoch"] for r in b] == [1, 2] and b[0] == a[0]
    assert b[1]["dev"] == pytest.approx(a[1]["dev"], abs=1e-6)
    assert _state(out)["global_step"] == last

    # A garbage latest.json: the same fallback, naming the file.
    (out / "checkpoints" / "latest.json").write_text("{not json")
    code, err = _main(runs["common"] + ["--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert f"warning: {out / 'checkpoints' / 'latest.json'}: unreadable (JSONDecodeError" in err

    # Neither usable: one line naming the folder, and nothing written.
    (out / "checkpoints" / "latest.json").write_text("{not json")
    (out / "checkpoints" / "previous.json").write_text("[]")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, err = _main(runs["common"] + ["--out", str(out), "--resume"], capsys)
    assert code == 2
    error = err.strip().splitlines()[-1]
    assert error.startswith(f"error: {out / 'checkpoints'}: no usable checkpoint ("), err
    assert "latest.json: unreadable" in error and "previous.json: not a checkpoint" in error
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_second_process_on_one_out_is_refused(runs, capsys, tmp_path):
    # Two runs on one --out both exited 0 with their metrics.jsonl lines mixed.
    from training.run_lock import RunLock

    out = _finished_copy(runs, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with RunLock(out):
        code, err = _main(runs["common"] + ["--out", str(out), "--resume"], capsys)
        holder = json.loads((out / ".lock").read_text())
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(
        f"error: {out}: in use by another run (pid {os.getpid()} on {holder['host']}, started ")
    assert "wait for it to finish, or choose another --out" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not (out / ".lock").exists()  # released with the holder


def test_max_length_over_the_models_positions(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "long"
    code, err = _main(["--model", str(tiny_model_dir), "--data-dir", str(tiny_data_dir),
                       "--out", str(out), "--max-length", "65"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: --max-length must be at most 64 for {tiny_model_dir} (its position "
        "embeddings), got 65")
    assert not out.exists()  # the folder the lock made is removed with it


# ---------------------------------------------------------------------- CLI
def test_help_lists_variants_and_flags(capsys):
    from training.run import build_parser, main
    from training.variants import VARIANTS

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name, variant in VARIANTS.items():
        assert f"  {name} " in text and variant.description[:40] in text.replace("\n", " ")
    flags = ["--variant", "--model", "--data-dir", "--out", "--epochs", "--batch-size",
             "--eval-batch-size", "--lr", "--max-length", "--buckets", "--quora-fraction",
             "--tasks", "--task", "--mode", "--schedule", "--warmup-ratio", "--weight-decay",
             "--clip-norm", "--checkpoint-every", "--jit", "--seed", "--limit", "--resume"]
    visible = {o for a in build_parser()._actions for o in a.option_strings
               if a.help != "==SUPPRESS=="} - {"-h", "--help"}
    assert set(flags) <= visible
    for flag in visible:  # every flag the parser has, including ones added later
        assert flag in text
    assert "--kill-after-steps" not in text


def test_bad_data_dir(tmp_path, capsys, monkeypatch):
    code, err = _main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                      capsys)
    assert code == 2
    assert "missing" in err and "--data-dir" in err and "KERASBERT_DATA" in err
    monkeypatch.delenv("KERASBERT_DATA", raising=False)
    code, err = _main(["--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "--data-dir" in err and "KERASBERT_DATA" in err
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------- non-finite
def test_non_finite_loss_stops_before_saving(tiny_model_dir, tiny_data_dir, tmp_path,
                                             monkeypatch):
    import tensorflow as tf

    from kerasbert import losses
    from training.multitask_trainer import MultitaskTrainer, NonFiniteLoss

    poison = tf.Variable(0.0)
    original = losses.sentiment_cross_entropy
    monkeypatch.setattr(losses, "sentiment_cross_entropy",
                        lambda *a, **k: original(*a, **k) * (1.0 + poison))
    out = tmp_path / "nan"
    trainer = MultitaskTrainer(tiny_config(tiny_model_dir, tiny_data_dir, out)).setup()
    steps, snapshots = [0], {}
    step_fn = trainer._train_step

    def counting_step(task):
        fn = step_fn(task)

        def wrapped(*args):
            steps[0] += 1
            if steps[0] == 4:  # round robin: step 4 is sst's second batch
                poison.assign(float("nan"))
            loss = fn(*args)
            snapshots[steps[0]] = [np.array(v.numpy()) for v in trainer.model.variables]
            return loss
        return wrapped

    trainer._train_step = counting_step
    with pytest.raises(NonFiniteLoss) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith("sst loss is nan at step 4 (epoch 1)")
    assert str(out / "checkpoints") in message and "--resume" in message
    # Losses are read every log_every (20) steps and before each checkpoint
    # (every 3 here): the NaN of step 4 is found at step 6's read, before
    # step 6's checkpoint is written.
    assert steps[0] == 6
    # On disk: the step-3 checkpoint, holding the step-3 weights (all finite).
    state = _state(out)
    assert state["global_step"] == 3 and state["position"] == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest.json", "step-00000003.npz"]
    with np.load(out / "checkpoints" / "step-00000003.npz") as arrays:
        saved = [arrays[f"model_{i}"] for i in range(len(trainer.model.variables))]
    assert all(np.isfinite(a).all() for a in saved if a.dtype.kind == "f")
    for saved_value, value in zip(saved, snapshots[3]):
        np.testing.assert_array_equal(saved_value, value)
    assert any(not np.isfinite(v).all() for v in snapshots[4] if v.dtype.kind == "f")
    assert _metric_lines(out) == [] and not (out / "best.keras").exists()


# ---------------------------------------------------------------- mirrored
MIRRORED_STEPS = 9


def test_mirrored_two_cpus_matches_one_device(tiny_model_dir_no_dropout, tiny_data_dir,
                                              tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = tmp_path / "mirrored.json"
    proc = subprocess.run([sys.executable, __file__, "mirrored", str(tiny_model_dir_no_dropout),
                           str(tiny_data_dir), str(tmp_path), str(result)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(result.read_text())
    assert r["replicas"] == [1, 2] and r["devices"] >= 2
    one, two = np.array(r["losses"][0]), np.array(r["losses"][1])
    assert len(one) == MIRRORED_STEPS
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)
    # The steps did train (the comparison is not of a frozen model) ...
    assert r["weight_change"] > 1e-3
    # ... and the weights after them agree.
    assert r["max_weight_diff"] < 1e-5
    # Clipping was active: the encoder's gradient norm exceeded the clip
    # norm, which is where per-replica clipping (Keras' own) differs.
    assert r["first_grad_norm"] > r["clip_norm"]


def _mirrored_worker(model_dir, data_dir, out, result):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]

    from kerasbert_lite.tasks import TASKS
    from training.engine import task_schedule
    from training.multitask_trainer import MultitaskTrainer

    clip = 0.05

    def run(strategy, weights=None):
        # Dense embedding updates: what several replicas run (lazy is one-replica only).
        config = tiny_config(model_dir, data_dir, Path(out) / "m", variant="bm", lr=1e-3,
                             head_lr=1e-2, clip_norm=clip, embedding_update="dense")
        trainer = MultitaskTrainer(config, strategy=strategy).setup()
        trainer.model.get_layer("head_dropout").rate = 0.0
        if weights is not None:
            trainer.model.set_weights(weights)
        start = trainer.model.get_weights()
        order = task_schedule(trainer.batch_counts)
        task = order[0]
        x, y = next(iter(trainer.train_batches[task].train_dataset(0, 0)[0]))
        output = TASKS[task].output
        with tf.GradientTape() as tape:
            loss = trainer.model.task_loss({output: x}, {output: y},
                                           trainer.variant.task_losses())[0]
        # The encoder's gradient norm: its optimizer clips it to `clip`.
        variables = trainer.model.backbone.trainable_variables
        norm = float(tf.linalg.global_norm(
            [g for g in tape.gradient(loss, variables) if g is not None]))
        # The trainer's own input: per-replica shares of the global batches.
        iterators = trainer._epoch_iterators(0, order, 0)
        losses = [float(trainer._train_step(task)(*next(iterators[task])))
                  for task in order[:MIRRORED_STEPS]]
        return trainer, start, losses, norm

    one, start, losses_one, norm = run(None)
    mirrored = tf.distribute.MirroredStrategy(devices[:2])
    two, _, losses_two, _ = run(mirrored, start)
    after_one, after_two = one.model.get_weights(), two.model.get_weights()
    report = {
        "devices": len(devices),
        "replicas": [one.strategy.num_replicas_in_sync, two.strategy.num_replicas_in_sync],
        "losses": [losses_one, losses_two],
        "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(after_one, after_two)),
        "weight_change": max(float(np.abs(a - s).max()) for a, s in zip(after_one, start)),
        "first_grad_norm": norm, "clip_norm": clip,
    }
    Path(result).write_text(json.dumps(report))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1] == "mirrored":
        _mirrored_worker(*sys.argv[2:])


# ------------------------------------------------------------------ results row
def test_published_row_rescores_to_its_summary(runs, tiny_data_dir, tmp_path):
    from experiments.rows import publish, rescore
    from training.metrics import predicted_labels
    from training.predictions import read_predictions

    _ok(runs["a"])
    # Republishing over an older row drops its prediction files that this run does not have.
    stale = tmp_path / "tiny" / "predictions" / "para-test-output.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("id,Predicted_Is_Paraphrase\nold,1\n")
    row = publish(runs["a_out"], "tiny", results_dir=tmp_path, note="tiny test run")
    assert not stale.exists()
    assert sorted(p.name for p in (row / "predictions").glob("*.csv")) == sorted(
        p.name for p in (runs["a_out"] / "predictions").glob("*.csv"))
    scores = rescore(row, tiny_data_dir)
    assert set(scores) == {"sst_acc", "quora_acc", "sts_pearson"}
    for metric, (from_files, published) in scores.items():
        assert from_files == pytest.approx(published, abs=1e-3), metric
    raw = np.load(row / "dev-outputs.npz")
    assert sorted(raw.files) == ["quora", "sst", "sts"]
    assert raw["sst"].shape == (TINY_ROWS["dev"], 5)
    for task, stem in (("sst", "sst"), ("quora", "para"), ("sts", "sts")):
        in_file = list(read_predictions(row / "predictions" / f"{stem}-dev-output.csv").values())
        np.testing.assert_allclose(predicted_labels(task, raw[task]), in_file, atol=6e-5)
    logged = (row / "train_loss.csv").read_text().splitlines()
    assert logged[0] == "step,task,loss" and len(logged) > 1
    info = json.loads((row / "run.json").read_text())
    assert info["args"][:4] == ["--variant", "dps_mse", "--epochs", str(EPOCHS)]
    assert "--lr" in info["args"] and info["note"] == "tiny test run"
    # The published config keeps every setting but none of this machine's paths.
    config = json.loads((row / "config.json").read_text())
    trained = json.loads((runs["a_out"] / "config.json").read_text())
    assert config["data_dir"] == "$KERASBERT_DATA" and config["out"] == "runs/tiny"
    assert {k: v for k, v in config.items() if k not in ("data_dir", "out")} == \
        {k: v for k, v in trained.items() if k not in ("data_dir", "out")}
    text = (row / "config.json").read_text()
    assert str(runs["a_out"]) not in text and str(tiny_data_dir) not in text
    # Raw test outputs too (no quora test file here), in the test files' row order.
    test_raw = np.load(row / "test-outputs.npz")
    assert sorted(test_raw.files) == ["sst", "sts"]
    for task, stem in (("sst", "sst"), ("sts", "sts")):
        in_file = read_predictions(row / "predictions" / f"{stem}-test-output.csv")
        assert len(in_file) == TINY_ROWS["test"]
        np.testing.assert_allclose(predicted_labels(task, test_raw[task]),
                                   list(in_file.values()), atol=6e-5)


def test_compare_tells_a_reproduced_row_from_another(runs, tmp_path, monkeypatch, capsys):
    # B was killed twice and resumed: it reproduces A, published as the row, exactly.
    from experiments import results
    from experiments.rows import compare, publish

    _ok(runs["a"])
    _ok(runs["b3"])
    row = publish(runs["a_out"], "tiny", results_dir=tmp_path / "results")
    same = compare(runs["b_out"], row)
    assert same["reproduced"] and same["best_epoch"][0] == same["best_epoch"][1]
    assert len(same["epochs"]) == EPOCHS * 5  # 3 tasks + 2 overall scores per epoch
    assert all(a == b for _, _, a, b in same["epochs"])
    assert same["labels"] == {"sst": 1.0, "quora": 1.0}
    assert same["scores"] == {"sts": 0.0}
    assert same["outputs"] == {"sst": 0.0, "quora": 0.0, "sts": 0.0}
    # Another training: one SST dev label flipped, epoch 1's Quora accuracy .002 off,
    # and one STS output 0.5 off (in the run's own file order, which the row need not share).
    other = tmp_path / "other"
    shutil.copytree(runs["b_out"], other, ignore=shutil.ignore_patterns("checkpoints", "*.keras"))
    sst_csv = other / "predictions" / "sst-dev-output.csv"
    lines = sst_csv.read_text().splitlines()
    example, label = lines[1].split(",")
    lines[1] = f"{example},{(int(label) + 1) % 5}"
    sst_csv.write_text("\n".join(lines) + "\n")
    history = [json.loads(line) for line in (other / "metrics.jsonl").read_text().splitlines()]
    history[0]["dev"]["quora_acc"] += 0.002
    (other / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    with np.load(other / "predictions" / "dev-outputs.npz") as raw:
        arrays = dict(raw)
    arrays["sts_outputs"][3] += 0.5
    np.savez(other / "predictions" / "dev-outputs.npz", **arrays)
    found = compare(other, row)
    assert not found["reproduced"]
    assert found["labels"]["sst"] == pytest.approx(1 - 1 / TINY_ROWS["dev"])
    assert found["labels"]["quora"] == 1.0
    assert found["outputs"]["sts"] == pytest.approx(0.5, abs=1e-6)
    off = [(e, m) for e, m, a, b in found["epochs"] if abs(a - b) > 1e-3]
    assert off == [(1, "quora_acc")]
    assert compare(other, row, tolerance=0.01)["reproduced"]
    # The command line: exit 0 reproduced, 1 not, 2 (with the file named) for an unfinished run.
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    assert results.main(["compare", str(runs["b_out"]), "--row", "tiny"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "reproduced"
    assert results.main(["compare", str(other), "--row", "tiny"]) == 1
    assert "sst dev labels: 97.92% the same" in capsys.readouterr().out  # 47 of 48
    (other / "summary.json").unlink()
    assert results.main(["compare", str(other), "--row", "tiny"]) == 2
    assert f"{other}/summary.json: no such file" in capsys.readouterr().err


def test_em_from_published_test_outputs_matches_the_keras_ensemble(runs, tmp_path):
    # EM's test predictions without weights (published outputs) are those the
    # export's Keras ensemble computes from the members' weights.
    from experiments.ensemble import update_test_predictions, write_test_predictions_from_outputs
    from experiments.rows import publish
    from training.predictions import read_predictions
    from training.readers import load_split

    _ok(runs["a"])
    _ok(runs["b3"])
    data_dir = Path(runs["common"][runs["common"].index("--data-dir") + 1])
    rows = [publish(runs[f"{m}_out"], m, results_dir=tmp_path / "results") for m in "ab"]
    assert write_test_predictions_from_outputs(rows, tmp_path / "from_files", data_dir)
    earlier = tmp_path / "from_weights" / "para-test-output.csv"  # an earlier EM's
    earlier.parent.mkdir()
    earlier.write_text("id,Predicted_Is_Paraphrase\nold,1\n")
    # Rows without test outputs: from the weights in run folders holding the rows' trainings.
    (tmp_path / "runs").mkdir()
    for m in "ab":
        (tmp_path / "results" / m / "test-outputs.npz").unlink()
        (tmp_path / "runs" / m).symlink_to(runs[f"{m}_out"])
    made = update_test_predictions(["a", "b"], tmp_path / "results", tmp_path / "from_weights",
                                   data_dir, runs=tmp_path / "runs")
    assert made["test_members"] == ["a", "b"]
    assert not earlier.exists()  # no quora test file here: neither path keeps the old one
    assert not (tmp_path / "from_files" / "para-test-output.csv").exists()
    for task, stem in (("sst", "sst"), ("sts", "sts")):
        files = read_predictions(tmp_path / "from_files" / f"{stem}-test-output.csv")
        weights = read_predictions(tmp_path / "from_weights" / f"{stem}-test-output.csv")
        assert list(files) == list(weights) == list(load_split(task, "test", data_dir).ids)
        np.testing.assert_allclose(list(files.values()), list(weights.values()), atol=2e-4,
                                   err_msg=task)


@pytest.mark.parametrize("variant", ["dps_mse", "bm"])
def test_bi_encoder_pairs_scored_by_distinct_sentences_match_the_pair_model(
        variant, tiny_model_dir, tiny_data_dir, tmp_path):
    """Evaluation encodes each distinct sentence once at its own length, then
    runs the head: the pair model's outputs, for a cosine (dps_mse) and a
    concat (bm) head."""
    from tiny_setup import tiny_config
    from training.multitask_trainer import MultitaskTrainer
    from training.pipelines import outputs_in_data_order

    config = tiny_config(tiny_model_dir, tiny_data_dir, tmp_path / variant, variant=variant)
    trainer = MultitaskTrainer(config).setup()
    # Untrained heads give all but constant outputs: give them weights that
    # tell pairs apart, so the comparison below means something.
    rng = np.random.default_rng(0)
    for weight in trainer.model.weights:
        if "_dense/" in weight.path or "projection/" in weight.path:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
    for task, output in (("quora", "paraphrase"), ("sts", "similarity")):
        batches = trainer.dev_batches[task]
        pair_model = trainer.model.task_model(output)
        dataset, _ = batches.eval_dataset()
        expected = outputs_in_data_order(
            ((pair_model(x, training=False), w, i) for x, _y, w, i in dataset), len(batches.data))
        got = trainer.predict(task, batches)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
        assert np.std(expected) > 10 * 1e-4 * np.abs(expected).mean()  # 10x the tolerance
        _, sentences, _, _ = trainer._eval_inputs_cache[("sentences", id(batches))]
        assert len(sentences.data) == len(set(batches.data.texts_a) | set(batches.data.texts_b))
