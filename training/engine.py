"""The training engine both front-ends share: schedule, task order, optimizer, one step.

* `WarmupLinearDecay`: BERT's learning-rate schedule.
* `task_schedule`: which task each step of an epoch trains (the custom loop).
* `make_optimizer`: AdamW (`training.fused_adamw.FusedAdamW`: Keras' AdamW
  with each variable's update one kernel, the embedding tables stepped lazily:
  only the rows a batch used) with the encoder at `lr` and the
  freshly initialised heads at `head_lr`, through the public
  `keras.optimizers.MultiOptimizer` (one AdamW per group, each clipping its
  own gradients by global norm), a `LossScaleOptimizer` around it for float16.
* `train_step_function`: the custom loop's compiled step. It and
  `MultitaskBert.train_step` (what `model.fit` runs) compute the same
  gradients (`MultitaskBert.task_gradients`: the losses of
  `kerasbert.losses.TaskLosses`) and apply them with the same optimizer, so
  one step of either is the same update.

The data pipeline is `training.pipelines.TaskBatches`; `model.fit`'s
fixed-length streams (`training.keras_fit`) tokenise through its batch
function.
"""

import re
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasbert.replicas import cross_replica_gradients
from training.fused_adamw import FusedAdamW
from training.train_config import SCHEDULES

# BERT's recipe: no weight decay on LayerNorm scales/offsets and biases.
NO_DECAY = ("gamma", "beta", "bias")


@keras.saving.register_keras_serializable(package="kerasbert")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`.

    Args:
        peak: the learning rate reached at the end of warm-up.
        warmup_steps: number of warm-up steps.
        total_steps: step at which the rate reaches 0.

    Example:
    >>> schedule = WarmupLinearDecay(peak=1e-4, warmup_steps=10, total_steps=110)
    >>> [round(float(schedule(s)), 8) for s in (0, 5, 10, 60, 110)]
    [0.0, 5e-05, 0.0001, 5e-05, 0.0]
    """

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(max(total_steps, 1))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        factor = ops.where(step < self.warmup_steps, warm, decay)
        return self.peak * ops.clip(factor, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def task_schedule(batch_counts, kind="round_robin", seed=0, epoch=0):
    """The epoch's step order: a list of task names, each task `batch_counts[task]` times.

    `round_robin` (the paper's): cycle through the tasks in order, skipping a
    task once its batches for the epoch are used up. `proportional`: a
    seeded shuffle of the same multiset, so each step draws a task with
    probability proportional to its remaining batches.

    Every task's data is seen once per epoch either way; the list depends
    only on `(batch_counts, kind, seed, epoch)`, which is what makes an exact
    resume possible.

    Example:
    >>> task_schedule({"sst": 3, "sts": 1})
    ['sst', 'sts', 'sst', 'sst']
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    tasks = [t for t, n in batch_counts.items() if n > 0]
    if kind == "proportional":
        order = np.repeat(np.array(tasks), [batch_counts[t] for t in tasks])
        rng = np.random.default_rng([seed, epoch, 7])
        return [str(t) for t in rng.permutation(order)]
    remaining = dict(batch_counts)
    order = []
    while any(remaining[t] for t in tasks):
        for t in tasks:
            if remaining[t]:
                order.append(t)
                remaining[t] -= 1
    return order


def _adamw(peak, total_steps, warmup_ratio, weight_decay, clip_norm, lazy_embeddings):
    schedule = (WarmupLinearDecay(peak, int(warmup_ratio * total_steps), total_steps)
                if total_steps else peak)
    optimizer = FusedAdamW(learning_rate=schedule, weight_decay=weight_decay,
                           global_clipnorm=clip_norm, lazy_embeddings=lazy_embeddings)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


def make_optimizer(model, lr, head_lr=None, *, total_steps=None, warmup_ratio=0.1,
                   weight_decay=0.01, clip_norm=1.0, loss_scale=False, variables=None,
                   lazy_embeddings=True):
    """The optimizer of both front-ends, built on `model.trainable_variables`.

    Two AdamWs in a `keras.optimizers.MultiOptimizer`: the pretrained
    encoder (`model.backbone`) moves at `lr`, the freshly initialised heads
    at `head_lr`. Adam moves each weight by about its learning rate per
    step, so at 5e-5 a head bias needs thousands of steps to reach a useful
    offset. Each AdamW has its own warm-up + linear decay (`WarmupLinearDecay`
    over `warmup_ratio * total_steps`), its decoupled weight decay (tied to
    its rate), BERT's decay exclusions, and clips its group's gradients by
    their global norm.

    Args:
        model: a `kerasbert.MultitaskBert` (anything with `.backbone`).
        lr: peak learning rate of the encoder.
        head_lr: peak learning rate of the heads (default `lr`).
        total_steps: steps of the whole run; None: constant rates.
        warmup_ratio, weight_decay, clip_norm: as in `TrainConfig`.
        loss_scale: wrap it in a `keras.optimizers.LossScaleOptimizer` (for
            mixed_float16, whose gradients underflow without; bf16 has
            float32's exponent range and needs none).
        lazy_embeddings: step only the embedding rows each batch used (the
            trainer's `--embedding-update lazy`, the default; see
            `training.fused_adamw`); False: every row, as Keras' AdamW.
        variables: the variables it steps (default `model.trainable_variables`;
            a sub-model's for a single-task fit). It is built on them, and
            `apply` takes a gradient (or None) for each.

    Example:
    >>> from kerasbert import BertBackbone, BertConfig, MultitaskBert
    >>> model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()))
    >>> opt = make_optimizer(model, 5e-5, 1e-3, total_steps=100)
    >>> [round(float(o.learning_rate), 8) for o in opt.optimizers]  # step 0 of the warm-up
    [0.0, 0.0]
    >>> constant = make_optimizer(model, 5e-5, 1e-3)
    >>> [round(float(o.learning_rate), 8) for o in sub_optimizers(constant)]  # encoder, heads
    [5e-05, 0.001]
    """
    settings = dict(total_steps=total_steps, warmup_ratio=warmup_ratio,
                    weight_decay=weight_decay, clip_norm=clip_norm,
                    lazy_embeddings=lazy_embeddings)
    encoder = _adamw(lr, **settings)
    heads = _adamw(lr if head_lr is None else head_lr, **settings)
    variables = model.trainable_variables if variables is None else list(variables)
    encoder_paths = sorted({v.path for v in model.backbone.trainable_variables})
    # Variables are told apart by path: a head named like an encoder weight
    # would silently step at the encoder's rate.
    all_paths = {v.path for v in model.trainable_variables}
    if len(all_paths) != len(model.trainable_variables):
        raise ValueError("a head variable shares its path with an encoder variable")
    # The heads are the default, so the sub-optimizers come as (encoder, heads).
    # (Escaped: OptimizerMap reads its keys as regular expressions.)
    mapping = keras.optimizers.OptimizerMap(heads, {re.escape(p): encoder for p in encoder_paths})
    optimizer = keras.optimizers.MultiOptimizer(mapping)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def sub_optimizers(optimizer):
    """(encoder AdamW, head AdamW) of a `make_optimizer` optimizer."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return tuple(optimizer.optimizers)


def encoder_learning_rate(optimizer):
    """The encoder's current learning rate (a `MultiOptimizer` has no single one)."""
    return sub_optimizers(optimizer)[0].learning_rate


def train_step_function(model, optimizer, task_losses, *, output=None, jit_compile=False,
                        strategy=None):
    """`step(x, y) -> {output: loss}`: one compiled update, as `model.fit`'s.

    `x`, `y` are dicts keyed by output. With `output` given they are that
    output's batch alone and the step returns its loss: the custom loop's
    one task per step. On one device (TensorFlow's default strategy) this
    is `MultitaskBert.task_gradients` then `optimizer.apply`, the same two
    calls as `MultitaskBert.train_step`.

    Under another `strategy` (Mirrored, MultiWorkerMirrored, TPU), `x` and
    `y` are per-replica values, each replica's share of the global batch
    (`strategy.distribute_datasets_from_function`), and the step runs
    `strategy.run` of the same replica step `MultitaskBert.train_step` runs
    under `fit`: gradients of `loss / replicas`, summed over the replicas
    and clipped by their global norm there
    (`kerasbert.replicas.cross_replica_gradients`), InfoNCE's negatives
    gathered from every replica. The loss returned is the mean over the
    replicas, the global batch's loss. The replica step is itself the
    `tf.function` handed to `strategy.run` (with `jit_compile`), which
    Mirrored strategies unwrap on CPU so its collectives may merge.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = model.trainable_variables

    def apply(grads):
        # One task per step leaves the other heads without a gradient, by
        # design: Keras skips them, and need not warn about it at every trace.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Gradients do not exist")
            optimizer.apply(grads, variables)

    def replica_step(x, y, replicas):
        if output is not None:
            x, y = {output: x}, {output: y}
        _, parts, _, grads = model.task_gradients(x, y, task_losses, optimizer,
                                                  replicas=replicas)
        if replicas > 1 or not _is_default(strategy):
            grads = cross_replica_gradients(grads, variables, optimizer)
        apply(grads)
        return parts if output is None else parts[output]

    if _is_default(strategy):
        # One trace with a generic length; XLA still compiles one program
        # per concrete bucket shape, which is the few the buckets allow.
        return tf.function(lambda x, y: replica_step(x, y, 1), jit_compile=jit_compile,
                           reduce_retracing=True)

    replicas = strategy.num_replicas_in_sync
    compiled = tf.function(lambda x, y: replica_step(x, y, replicas), jit_compile=jit_compile,
                           reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def distributed_step(x, y):
        per_replica = strategy.run(compiled, args=(x, y))
        return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), per_replica)

    return distributed_step


def _is_default(strategy):
    return type(strategy).__name__ == "_DefaultDistributionStrategy"
