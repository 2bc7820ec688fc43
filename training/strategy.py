"""Which `tf.distribute` strategy a run trains under (`--strategy`, `--tpu`, TF_CONFIG).

* `check_strategy_setup(strategy, tpu)`: what can be told before TensorFlow
  starts (TF_CONFIG readable, present for `multiworker`); `training.run`
  calls it with the other flag checks, so a bad setup is one error line.
* `make_strategy(name, tpu, collective_timeout)`: the strategy. `auto` is
  MultiWorkerMirrored when TF_CONFIG names more than one worker, Mirrored
  on two or more GPUs, else TensorFlow's default strategy (one device,
  the single-device code path bit for bit). A MultiWorkerMirroredStrategy
  must exist before any other TensorFlow op runs: make it first.
* `describe(strategy)`: `{"strategy", "replicas", "workers"}` for config.json.
* `is_chief(strategy)`, `worker_index(strategy)`: who writes the run folder.

Every name here but the two makers reads no TensorFlow.

Example:
>>> check_strategy_setup("auto", environ={})
>>> check_strategy_setup("multiworker", environ={})
Traceback (most recent call last):
...
ValueError: --strategy multiworker: TF_CONFIG is not set; it names the workers and this process's place among them (see the README, "More than one device")
>>> cfg = {"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 1}}
>>> workers_in(cfg), chief_in(cfg)
(2, False)
"""

import json
import os

# Collective ops of MultiWorkerMirrored wait this long for a lost peer when
# no --collective-timeout is given: TensorFlow's own peer health check
# (every 30 s, 10 s timeout) still aborts them.
KINDS = {"_DefaultDistributionStrategy": "one", "OneDeviceStrategy": "one",
         "MirroredStrategy": "mirrored", "MultiWorkerMirroredStrategy": "multiworker",
         "CollectiveAllReduceStrategy": "multiworker", "TPUStrategy": "tpu"}


def read_tf_config(environ=None):
    """TF_CONFIG as a dict (None when unset), checked: a `ValueError` naming what is wrong."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG: not valid JSON ({e})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError("TF_CONFIG: needs a 'cluster' ({'worker': [host:port, ...]}) and a "
                         "'task' ({'type': 'worker', 'index': i})")
    kind, index = task.get("type"), task.get("index")
    members = cluster.get(kind)
    if not isinstance(members, list) or not isinstance(index, int) or not (
            0 <= index < len(members)):
        raise ValueError(f"TF_CONFIG: task {task!r} is not in the cluster "
                         f"({ {k: len(v) for k, v in cluster.items() if isinstance(v, list)} })")
    return config


def workers_in(config):
    """Training processes a TF_CONFIG names (its chief and workers)."""
    if not config:
        return 1
    cluster = config["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def chief_in(config):
    """Whether this TF_CONFIG task is the chief: `chief`, else worker 0 when there is none."""
    if not config:
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def check_strategy_setup(strategy, tpu=None, environ=None):
    """Raises `ValueError` (one line) for a strategy the environment cannot give."""
    config = read_tf_config(environ)
    if strategy == "multiworker" and config is None:
        raise ValueError("--strategy multiworker: TF_CONFIG is not set; it names the workers "
                         "and this process's place among them (see the README, "
                         "\"More than one device\")")
    if strategy in ("one", "mirrored", "tpu") and workers_in(config) > 1:
        raise ValueError(f"--strategy {strategy}: TF_CONFIG names {workers_in(config)} "
                         "workers; use --strategy multiworker (or auto), or unset TF_CONFIG")
    if tpu is not None and strategy != "tpu":
        raise ValueError(f"--tpu must be given with --strategy tpu only, got --strategy "
                         f"{strategy}")


def make_strategy(name="auto", tpu=None, collective_timeout=None):
    """The `tf.distribute.Strategy` for `--strategy name` (see the module docstring)."""
    check_strategy_setup(name, tpu)
    import tensorflow as tf

    config = read_tf_config()
    if name == "auto":
        if workers_in(config) > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one"
    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    _check_reachable(tpu)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ValueError(f"--strategy tpu: no TPU at {tpu or 'the default address'} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    return tf.distribute.TPUStrategy(resolver)


def _check_reachable(tpu, timeout=10):
    """A `grpc://host:port` TPU address that does not answer: a `ValueError` now, not a hang."""
    if not tpu or not tpu.startswith("grpc://"):
        return
    import socket

    host, _, port = tpu[len("grpc://"):].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ValueError(f"--tpu {tpu}: cannot reach {host}:{port} ({e})") from None


def kind(strategy):
    """`one`, `mirrored`, `multiworker` or `tpu` (the class name for another strategy)."""
    name = type(strategy).__name__
    return KINDS.get(name, name)


def workers(strategy):
    """Processes training together under `strategy` (1 but for multi-worker / multi-host)."""
    return int(getattr(strategy.extended, "_num_workers", 1) or 1)


def is_chief(strategy):
    """Whether this process writes the run folder (the one chief of a multi-worker run)."""
    return bool(strategy.extended.should_checkpoint)


def worker_index(strategy):
    """This process's index among the workers (0 on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = getattr(resolver, "task_id", None) if resolver is not None else None
    return int(task_id or 0)


def describe(strategy):
    """What config.json records of the strategy a run trained under."""
    return {"strategy": kind(strategy), "replicas": int(strategy.num_replicas_in_sync),
            "workers": workers(strategy)}


def is_default(strategy):
    """TensorFlow's default strategy: no `strategy.run`, the plain one-device step."""
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


__all__ = ["check_strategy_setup", "chief_in", "describe", "is_chief", "is_default", "kind",
           "make_strategy", "read_tf_config", "worker_index", "workers", "workers_in"]
