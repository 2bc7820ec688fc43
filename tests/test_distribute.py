"""tf.distribute on this CPU: two logical devices, two local workers, a lost worker.

Each test runs TensorFlow in subprocesses: logical devices and TF_CONFIG
must be set before TensorFlow initialises.

* (a) Mirrored over two logical CPUs against one device, dropout off, same
  start weights and global batch: the custom loop's first 3 losses (dps_mse,
  and infonce whose negatives are all-gathered), the dev evaluation after
  them (run on both replicas, gathered back) and 3 `model.fit` steps of
  infonce with the gradient clip active (clipped over the replicas' sum).
* (b) Two worker processes (TF_CONFIG on 127.0.0.1, MultiWorkerMirrored via
  `--strategy auto`) train one tiny epoch into one run folder beside a
  one-device run: one metrics line, every file written by the chief alone
  (each process logs the files it renames into place), no worker
  leftovers, and the chief's metrics equal the one-device run's.
* (c) A worker killed mid-epoch: the other stops within a bounded time
  with one clear error line (collective timeout), and `--resume` on both
  finishes the run.

The worker processes run `training.run.main` through this file with the
heads' dropout off as well (the encoder's is off in the tiny model), so
(b) compares exactly.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tiny_setup import TINY_FLAGS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = 3
LIMIT = 64  # (b): --limit 64, as the issue asks
LOST_LIMIT = 32  # (c): 4 batches a task, kill in the second round


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "lite"), str(HERE),
                                         env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


# ---------------------------------------------------------------- (a) two devices
def test_two_logical_cpus_match_one_device(tiny_model_dir_no_dropout, tiny_data_dir, tmp_path):
    result = tmp_path / "two.json"
    proc = subprocess.run([sys.executable, __file__, "two_devices", str(tiny_model_dir_no_dropout),
                           str(tiny_data_dir), str(tmp_path), str(result)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(result.read_text())
    for variant in ("dps_mse", "infonce"):
        one, two = r[variant]["losses"]
        assert r[variant]["replicas"] == [1, 2]
        assert len(one) == STEPS
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)
        assert r[variant]["max_weight_diff"] < 1e-5
        assert r[variant]["weight_change"] > 1e-4  # the steps did train
        # Evaluation on two replicas, gathered back in data order.
        assert r[variant]["max_output_diff"] < 1e-5
        for name, value in r[variant]["dev"][0].items():
            assert abs(r[variant]["dev"][1][name] - value) < 1e-5, name
    print("two logical CPUs vs one device: " + ", ".join(
        f"{v} max loss difference {np.abs(np.subtract(*r[v]['losses'])).max():.1e}, "
        f"weights {r[v]['max_weight_diff']:.1e}, dev outputs {r[v]['max_output_diff']:.1e}"
        for v in ("dps_mse", "infonce")) + f"; fit weights {r['fit']['max_weight_diff']:.1e}")
    # InfoNCE had positives to train on (its loss is not the no-positive 0).
    assert r["infonce"]["losses"][0][2] > 0
    # model.fit: the gradient clip was active and acts on the replicas' sum.
    fit = r["fit"]
    assert fit["first_grad_norm"] > fit["clip_norm"]
    assert fit["max_weight_diff"] < 1e-5 and fit["weight_change"] > 1e-4


def _two_devices(model_dir, data_dir, out, result):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    mirrored = tf.distribute.MirroredStrategy(devices)

    from tiny_setup import tiny_config
    from training.engine import task_schedule
    from training.multitask_trainer import MultitaskTrainer

    def run(variant, strategy, weights=None):
        # Dense embedding updates: what several replicas run (lazy is one-replica only).
        config = tiny_config(model_dir, data_dir, Path(out) / variant, variant=variant,
                             lr=1e-3, head_lr=1e-2, clip_norm=0.05, limit=LIMIT,
                             embedding_update="dense")
        trainer = MultitaskTrainer(config, strategy=strategy).setup()
        trainer.model.get_layer("head_dropout").rate = 0.0
        if weights is not None:
            trainer.model.set_weights(weights)
        start = trainer.model.get_weights()
        order = task_schedule(trainer.batch_counts)
        iterators = trainer._epoch_iterators(0, order, 0)
        losses = [float(trainer._train_step(task)(*next(iterators[task])))
                  for task in order[:STEPS]]
        raw = {}
        metrics, _ = trainer.evaluate(raw_outputs=raw)
        return trainer, start, losses, metrics, raw

    report = {}
    for variant in ("dps_mse", "infonce"):
        one, start, losses_one, dev_one, raw_one = run(variant, None)
        two, _, losses_two, dev_two, raw_two = run(variant, mirrored, start)
        after_one, after_two = one.model.get_weights(), two.model.get_weights()
        report[variant] = {
            "replicas": [one.replicas, two.replicas],
            "losses": [losses_one, losses_two],
            "max_weight_diff": max(float(np.abs(a - b).max())
                                   for a, b in zip(after_one, after_two)),
            "weight_change": max(float(np.abs(a - s).max()) for a, s in zip(after_one, start)),
            "dev": [dev_one, dev_two],
            "max_output_diff": max(float(np.abs(raw_one[t] - raw_two[t]).max())
                                   for t in raw_one),
        }
    report["fit"] = _fit_two_devices(one, mirrored)
    Path(result).write_text(json.dumps(report))


def _fit_two_devices(trainer, mirrored):
    """3 `model.fit` steps of infonce (clip 0.05) on one device and on `mirrored`."""
    import keras
    import tensorflow as tf

    import kerasbert
    from kerasbert import BertBackbone
    from training.engine import make_optimizer
    from training.keras_fit import _set_trainable, compile_multitask, make_fit_dataset
    from training.variants import get_variant

    variant, clip = get_variant("infonce"), 0.05
    data = {t: trainer.train_batches[t].data for t in ("sst", "quora", "sts")}
    dataset, _ = make_fit_dataset(data, trainer.tokenizer, batch_size=8, seed=0,
                                  lengths=dict.fromkeys(("sentiment", "paraphrase",
                                                         "similarity"), 16))
    steps = list(dataset.take(STEPS))
    config = trainer.model.backbone.bert_config

    def fit(strategy, weights=None):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = kerasbert.MultitaskBert(BertBackbone.from_bert_config(config), dropout=0.0,
                                            **variant.model_kwargs())
            if weights is not None:
                model.set_weights(weights)
            _set_trainable(model)  # as compile_multitask does, before the optimizer
            # Dense embedding updates on both: lazy is one-replica only.
            optimizer = make_optimizer(model, 1e-3, 1e-2, clip_norm=clip, lazy_embeddings=False)
            compile_multitask(model, variant, optimizer=optimizer, jit_compile=False)
        start = model.get_weights()
        ds = tf.data.Dataset.from_generator(
            lambda: iter(steps), output_signature=tf.nest.map_structure(
                tf.TensorSpec.from_tensor, steps[0]))
        model.fit(ds, epochs=1, steps_per_epoch=STEPS, verbose=0, shuffle=False)
        return model, start

    one, start = fit(tf.distribute.get_strategy())
    two, _ = fit(mirrored, start)
    x, y = steps[0]
    with tf.GradientTape() as tape:
        probe = kerasbert.MultitaskBert(BertBackbone.from_bert_config(config), dropout=0.0,
                                        **variant.model_kwargs())
        probe.set_weights(start)
        loss = probe.task_loss(x, y, variant.task_losses())[0]
    grads = tape.gradient(loss, probe.backbone.trainable_variables)
    norm = float(tf.linalg.global_norm([g for g in grads if g is not None]))
    after_one, after_two = one.get_weights(), two.get_weights()
    return {"first_grad_norm": norm, "clip_norm": clip,
            "max_weight_diff": max(float(np.abs(a - b).max())
                                   for a, b in zip(after_one, after_two)),
            "weight_change": max(float(np.abs(a - s).max()) for a, s in zip(after_one, start))}


# ------------------------------------------------------------ (b), (c) two workers
def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _start(args, log, tf_config=None, **extra_env):
    """A `training.run` process (through `_cli` below: head dropout off, renames logged)."""
    env = _env(KERASBERT_WRITE_LOG=str(log), **extra_env)
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return subprocess.Popen([sys.executable, __file__, "cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no exit within {timeout} s (hang)\n{err[-3000:]}")
    return proc.returncode, out, err


def _written(log):
    path = Path(log)
    return path.read_text().splitlines() if path.is_file() else []


@pytest.fixture
def flags(tiny_model_dir_no_dropout, tiny_data_dir):
    # Dense embedding updates: what several replicas run (lazy is one-replica only),
    # so one-device references step the same way.
    return ["--model", str(tiny_model_dir_no_dropout), "--data-dir", str(tiny_data_dir),
            "--lr", "2e-3", "--limit", str(LIMIT), *TINY_FLAGS, "--epochs", "1",
            "--embedding-update", "dense"]


def test_two_workers_write_one_run_folder(flags, tmp_path):
    started = time.time()
    out, single = tmp_path / "two", tmp_path / "one"
    ports = _free_ports(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [_start([*flags, "--out", str(out)], logs[i], _tf_config(ports, i))
               for i in range(2)]
    alone = _start([*flags, "--out", str(single), "--strategy", "one"], tmp_path / "one.log")
    results = [_finish(p, 240) for p in workers + [alone]]
    for code, _, err in results:
        assert code == 0, err[-4000:]

    config = json.loads((out / "config.json").read_text())
    assert (config["strategy"], config["strategy_used"], config["replicas"],
            config["workers"]) == ("auto", "multiworker", 2, 2)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    # The chief wrote every file; the other worker only its scratch
    # checkpoint, in a folder of its own, removed again.
    chief, other = _written(logs[0]), _written(logs[1])
    assert chief and other
    assert all("/checkpoints/.worker-1.tmp/" in path for path in other), other
    assert not set(chief) & set(other)
    assert not list(out.rglob(".worker-*")) and not list(out.rglob("*.tmp*"))
    assert not (out / ".lock").exists()
    assert len(list((out / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
    # The same numbers as one device, the global batch being the same.
    two, one = json.loads(lines[0]), json.loads((single / "metrics.jsonl").read_text())
    for name, value in one["dev"].items():
        assert abs(two["dev"][name] - value) < 1e-4, (name, two["dev"][name], value)
    for task, value in one["train_loss"].items():
        assert abs(two["train_loss"][task] - value) < 1e-4, task
    assert (out / "predictions" / "sts-test-output.csv").read_text() == (
        single / "predictions" / "sts-test-output.csv").read_text()
    print(f"two workers vs one device: max dev difference "
          f"{max(abs(two['dev'][k] - v) for k, v in one['dev'].items()):.2e}, "
          f"{time.time() - started:.0f} s")


def test_two_workers_with_dropout_stay_near_one_device(tiny_model_dir, tiny_data_dir, tmp_path):
    """Dropout on: each replica draws its own masks, so this is another draw of the
    same training; its dev scores stay within 0.05 of the one-device run's."""
    flags = ["--model", str(tiny_model_dir), "--data-dir", str(tiny_data_dir), "--lr", "2e-3",
             "--limit", str(LIMIT), *TINY_FLAGS, "--epochs", "1"]
    ports = _free_ports(2)
    out, single = tmp_path / "two", tmp_path / "one"
    env = {"KERASBERT_KEEP_DROPOUT": "1"}
    workers = [_start([*flags, "--out", str(out)], tmp_path / f"w{i}.log", _tf_config(ports, i),
                      **env) for i in range(2)]
    alone = _start([*flags, "--out", str(single), "--strategy", "one"], tmp_path / "one.log",
                   **env)
    for code, _, err in [_finish(p, 240) for p in workers + [alone]]:
        assert code == 0, err[-4000:]
    two = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["dev"]
    one = json.loads((single / "metrics.jsonl").read_text())["dev"]
    diffs = {k: abs(two[k] - v) for k, v in one.items()}
    print(f"dropout on, two workers vs one device: dev differences {diffs}")
    assert max(diffs.values()) < 0.05, diffs


KILL_AT = 5
TIMEOUT = 45  # above the start-up skew of two workers on a loaded 2-core CPU


def test_a_lost_worker_stops_the_other_and_the_run_resumes(flags, tmp_path):
    started = time.time()
    out = tmp_path / "run"
    ports = _free_ports(2)
    args = [*flags, "--out", str(out), "--collective-timeout", str(TIMEOUT),
            "--checkpoint-every", "3", "--limit", str(LOST_LIMIT)]
    chief = _start(args, tmp_path / "w0.log", _tf_config(ports, 0))
    killed = _start([*args, "--kill-after-steps", str(KILL_AT)], tmp_path / "w1.log",
                    _tf_config(ports, 1))
    code, _, err = _finish(killed, 240)
    assert code == 137, err[-3000:]
    lost = time.time()
    code, _, err = _finish(chief, TIMEOUT + 60)
    waited = time.time() - lost
    assert code == 3, err[-3000:]
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "lost contact with another worker" in error[0], err[-3000:]
    assert "--resume" in error[0]
    print(f"the chief stopped {waited:.0f} s after the other worker died")
    state = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert state["global_step"] == 3

    ports = _free_ports(2)
    resumed = [_start([*args, "--resume"], tmp_path / f"r{i}.log", _tf_config(ports, i))
               for i in range(2)]
    for code, _, err in [_finish(p, 240) for p in resumed]:
        assert code == 0, err[-4000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "summary.json").is_file()
    assert not list(out.rglob(".worker-*"))
    print(f"kill, stop and resume: {time.time() - started:.0f} s")


def test_multiworker_without_tf_config_is_one_error_line(capsys, monkeypatch):
    from training.run import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["--strategy", "multiworker"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --strategy multiworker: TF_CONFIG")
    assert main(["--tpu", "grpc://10.0.0.2:8470"]) == 2
    assert "--tpu" in capsys.readouterr().err
    # An address that does not answer: one line at once, not a hang in TPU start-up.
    assert main(["--strategy", "tpu", "--tpu", f"grpc://127.0.0.1:{_free_ports(1)[0]}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach 127.0.0.1" in err[0], err
    monkeypatch.setenv("TF_CONFIG", "{not json")
    assert main(["--strategy", "multiworker"]) == 2
    assert "TF_CONFIG: not valid JSON" in capsys.readouterr().err


def _cli(argv):
    """`training.run.main` with the heads' dropout off, each rename into place logged."""
    import training.variants as variants

    if not os.environ.get("KERASBERT_KEEP_DROPOUT"):
        plain = variants.Variant.model_kwargs
        variants.Variant.model_kwargs = lambda self: dict(plain(self), dropout=0.0)
    log = os.environ.get("KERASBERT_WRITE_LOG")
    if log:
        replace = os.replace

        def logged(src, dst, *args, **kwargs):
            with open(log, "a") as f:
                f.write(os.path.abspath(dst) + "\n")
            return replace(src, dst, *args, **kwargs)

        os.replace = logged
    from training.run import main
    sys.exit(main(argv))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1] == "two_devices":
        _two_devices(*sys.argv[2:])
    elif sys.argv[1] == "cli":
        _cli(sys.argv[2:])
