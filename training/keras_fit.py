"""Train `MultitaskBert` with plain `model.compile` / `model.fit`: the engine's second front-end.

The custom loop in `training.multitask_trainer` trains one task per step;
here `model.fit(jit_compile=True)` trains all three tasks on one batch each
per step (the summed loss, i.e. "multitask" in the gradient sense). Both
go through the same engine (`training.engine`): the same optimizer and
schedule, and the same losses, computed by `MultitaskBert.train_step` from
the variant's `kerasbert.losses.TaskLosses`, so every variant trains here,
InfoNCE (in-batch negatives: the batch's other rows) included.

* `compile_multitask(model, variant)`: the variant's losses, per-output
  metrics, `training.engine.make_optimizer` (encoder at `lr`, heads at
  `head_lr`, no decay on LayerNorm / biases, global-norm clipping), XLA.
* `make_fit_dataset(data, tokenizer)`: SST, Quora and STS zipped into one
  `(x, y)` per step, each task at one fixed length so XLA compiles one program;
  every task is an endless stream of seeded epochs, so smaller tasks repeat.
  Batches are tokenised by the custom loop's `TaskBatches`.
* `compile_task(model, "sentiment")` + `make_task_dataset(sst, tokenizer)`:
  the single-task option (fit only the sentiment sub-model on SST).
* `make_task_eval_dataset(dev, tokenizer)`: every dev example once, as
  `(x, y, weight)` for `Model.evaluate` (padding rows have weight 0).
* `PlattCalibration(held_out, tokenizer)`: a callback that, when `fit`
  ends, refits the paraphrase logit on Quora pairs held out of the fit
  (`training.calibration.split_holdout`) and folds the fit into the model:
  the custom loop's `--calibration-holdout`.
* Precision as in the custom loop (`--precision`): call
  `training.precision.set_precision("auto")` (bf16 where the CPU or GPU has
  it) before building the model; the heads stay float32.

Example (the whole multitask fit)::

    import kerasbert
    from training.keras_fit import compile_multitask, make_fit_dataset
    from training.readers import load_split
    from training.variants import get_variant

    backbone, tokenizer = kerasbert.from_pretrained()
    model = kerasbert.MultitaskBert(backbone, **get_variant("dps_mse").model_kwargs())
    data = {t: load_split(t, "train", "../shared/data") for t in ("sst", "quora", "sts")}
    ds, steps = make_fit_dataset(data, tokenizer, batch_size=32, seed=0)
    compile_multitask(model, "dps_mse", total_steps=3 * steps)  # or "infonce", ...
    history = model.fit(ds, steps_per_epoch=steps, epochs=3)
"""

import keras
import numpy as np
import tensorflow as tf

from kerasbert_lite.tasks import OUTPUTS, TASKS, tasks_of_output
from training.calibration import PlattScaling
from training.engine import make_optimizer
from training.examples import PairData, SentenceData
from training.metrics import StreamingPearson
from training.pipelines import batch_fn, data_tensors, make_eval_dataset, outputs_in_data_order
from training.train_config import TrainConfig
from training.variants import Variant, get_variant

# Fixed sequence length per output. "bi" pads each sentence alone: 64 keeps
# 99.9% of SST, 99.8% of Quora and 99.98% of STS sentences whole (train sets);
# "cross" packs both sentences: 128 keeps 99.96% / 100% of Quora / STS pairs.
DEFAULT_LENGTHS = {"bi": {"sentiment": 64, "paraphrase": 64, "similarity": 64},
                   "cross": {"sentiment": 64, "paraphrase": 128, "similarity": 128}}

# The custom loop's default rate for the freshly initialised heads.
HEAD_LR = TrainConfig.head_lr


def _variant(variant):
    variant = get_variant(variant) if isinstance(variant, str) else variant
    if not isinstance(variant, Variant):
        raise TypeError(f"variant must be a name or a training.variants.Variant, got {variant!r}")
    return variant


def task_metrics():
    """`{output: [metrics]}` by the label kind of the tasks it trains (`kerasbert_lite.tasks`):
    accuracy for classes and binary logits, Pearson r and MAE for scores."""
    by_label = {
        "class": lambda: [keras.metrics.SparseCategoricalAccuracy(name="acc")],
        # The output is a logit: > 0 means p > 0.5.
        "binary": lambda: [keras.metrics.BinaryAccuracy(threshold=0.0, name="acc")],
        "score": lambda: [StreamingPearson(name="pearson"),
                          keras.metrics.MeanAbsoluteError(name="mae")],
    }
    return {output: by_label[tasks_of_output(output)[0].label]() for output in OUTPUTS}


def _optimizer(model, variant, lr, head_lr, total_steps, variables=None):
    # No loss scale here: under mixed_float16, Model.compile wraps it itself.
    lr = variant.lr if lr is None else lr
    return make_optimizer(model, lr, lr if head_lr is None else head_lr, total_steps=total_steps,
                          variables=variables)


def compile_multitask(model, variant="dps_mse", optimizer=None, lr=None, *, head_lr=HEAD_LR,
                      total_steps=None, jit_compile=True, teacher_weight=0.5,
                      distill_temperature=1.0, embedding_weight=0.0, **compile_kwargs):
    """Compiles a `MultitaskBert` for `model.fit` with the variant's losses and per-output metrics.

    Args:
        model: a `kerasbert.MultitaskBert` built with `variant.model_kwargs()`.
        variant: a `training.variants.Variant` or its name; its
            `task_losses()` are what `MultitaskBert.train_step` minimises
            (the sum over the batch's outputs, InfoNCE included).
        optimizer: a Keras optimizer; default `training.engine.make_optimizer`
            (encoder at `lr`, heads at `head_lr`), as the custom loop's.
        lr: peak learning rate of the encoder (default `variant.lr`).
        head_lr: peak learning rate of the task heads (new weights; default
            `TrainConfig.head_lr`); None trains everything at `lr`.
        total_steps: steps of the whole fit, for warm-up + linear decay
            (default: constant rates).
        jit_compile: XLA-compile the train/eval steps. Pass `True`, not
            `"auto"`: Keras' "auto" turns XLA off on CPU. On an idle CPU a
            MiniLM step takes about as long either way; on an oversubscribed
            one (more runnable threads than cores) XLA's fork-join loops
            measured ~2x slower than graph mode, so `False` is the safer
            choice on a busy shared CPU (see benchmarks/train_throughput.py).
        teacher_weight, distill_temperature: for a distillation variant, as
            `--teacher-weight` / `--distill-temperature`; its training labels
            are (gold, teacher outputs) rows (`training.teacher.with_teacher_outputs`).
        embedding_weight: with pair rows that also carry a teacher's sentence
            vectors (`with_teacher_outputs(..., embedding_teacher=...)`), the
            weight of `--embedding-teacher`'s term.
        **compile_kwargs: passed to `model.compile` (e.g. `steps_per_execution`).

    Side effect on `model`: the unused tanh pooler under mean/[CLS] pooling
    is frozen (before the optimizer is built).

    Returns:
        The model, compiled.

    Example:
    >>> from kerasbert import BertBackbone, BertConfig, MultitaskBert
    >>> v = get_variant("infonce")
    >>> model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()), **v.model_kwargs())
    >>> compile_multitask(model, v).jit_compile
    True
    """
    variant = _variant(variant)
    if all(TASKS[t].output == "sentiment" for t in variant.tasks):
        raise ValueError(f"variant {variant.name!r} trains sentiment only: use "
                         "compile_task(model, 'sentiment', variant) and make_task_dataset")
    _check_layout(model, variant)
    _set_trainable(model)
    if optimizer is None:
        optimizer = _optimizer(model, variant, lr, head_lr, total_steps)
    # weighted_metrics, not metrics: Keras applies sample weights only to
    # those, and the eval datasets mark their padding rows with weight 0.
    model.compile(optimizer=optimizer,
                  task_losses=variant.task_losses(teacher_weight, distill_temperature,
                                                  embedding_weight),
                  weighted_metrics=task_metrics(), jit_compile=jit_compile, **compile_kwargs)
    return model


def compile_task(model, task="sentiment", variant="dps_mse", optimizer=None, lr=None, *,
                 head_lr=HEAD_LR, total_steps=None, jit_compile=True, **compile_kwargs):
    """Compiles one task's sub-model (`model.task_model(task)`) for fit/evaluate.

    The sub-model shares its weights with `model`, so fitting it trains the
    shared encoder and that task's head (the single-task option, e.g. the
    sentiment classifier on SST). It gets its own optimizer. Its loss is the
    variant's (`TaskLosses.keras_loss`); a contrastive one (InfoNCE) needs
    the vectors, so train that task with `compile_multitask`.

    Args:
        model: a `kerasbert.MultitaskBert`.
        task: `"sentiment"`, `"paraphrase"` or `"similarity"`.
        variant, optimizer, lr, head_lr, total_steps, jit_compile,
        **compile_kwargs: as in `compile_multitask`.

    Returns:
        The compiled sub-model; feed it `make_task_dataset(...)` batches.

    Example:
    >>> from kerasbert import BertBackbone, BertConfig, MultitaskBert
    >>> model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()))
    >>> compile_task(model, "sentiment", "bm").name
    'sentiment_model'
    """
    if task not in OUTPUTS:
        raise ValueError(f"task must be one of {OUTPUTS}, got {task!r}")
    variant = _variant(variant)
    loss = variant.task_losses().keras_loss(task)
    _set_trainable(model)
    submodel = model.task_model(task)
    if optimizer is None:
        optimizer = _optimizer(model, variant, lr, head_lr, total_steps,
                               submodel.trainable_variables)
    submodel.compile(optimizer=optimizer, loss=loss, weighted_metrics=task_metrics()[task],
                     jit_compile=jit_compile, **compile_kwargs)
    return submodel


def _set_trainable(model):
    if getattr(model, "pooling", "pooled") != "pooled":
        # Under mean/[CLS] pooling no output uses the tanh pooler: freezing it
        # keeps it out of the optimizer (no slots, no "gradients do not exist"
        # warning every fit). It stays as loaded, for save_pretrained.
        model.backbone.get_layer("pooler_dense").trainable = False


def _check_layout(model, variant):
    built = {k: getattr(model, k, None) for k in variant.model_kwargs()}
    wanted = variant.model_kwargs()
    differ = sorted(k for k in wanted if k in built and built[k] != wanted[k])
    if differ:
        raise ValueError(
            f"the model was not built for variant {variant.name!r} ({', '.join(differ)} differ); "
            f"build it as MultitaskBert(backbone, **get_variant({variant.name!r}).model_kwargs())")


# ------------------------------------------------------------------ data
def _output_of(key):
    if key in OUTPUTS:
        return key
    if key in TASKS:
        return TASKS[key].output
    raise ValueError(f"unknown task {key!r}; use {OUTPUTS} or {tuple(TASKS)}")


def epoch_batches(num_examples, batch_size, seed, epoch, stream=0):
    """Row indices of one shuffled epoch, int32 `(num_batches, batch_size)`; the remainder sits out.

    A stateless shuffle seeded by `(seed, 3 * epoch + stream)`, so it is
    deterministic, runs inside `tf.data` without Python, and `stream` keeps
    the tasks' shuffles independent.

    >>> rows = epoch_batches(5, 2, seed=0, epoch=0)
    >>> tuple(rows.shape), len(set(rows.numpy().ravel()))
    ((2, 2), 4)
    """
    full = num_examples // batch_size * batch_size
    key = tf.stack([tf.cast(seed, tf.int64),
                    tf.cast(epoch, tf.int64) * len(OUTPUTS) + tf.cast(stream, tf.int64)])
    order = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int32), key)
    return tf.reshape(order[:full], (-1, batch_size))


def _index_stream(num_examples, batch_size, seed, stream):
    """Endless `(batch_size,)` index rows: epoch 0, 1, 2, ... each freshly shuffled."""
    return tf.data.Dataset.counter().flat_map(
        lambda epoch: tf.data.Dataset.from_tensor_slices(
            epoch_batches(num_examples, batch_size, seed, epoch, stream)))


def _task_stream(data, tokenizer, batch_size, length, seed, stream, pair_encoding):
    if not data.labeled:
        raise ValueError(f"{data.source}: cannot train on unlabeled data")
    if len(data) < batch_size:
        raise ValueError(f"{data.source}: {len(data)} examples make no batch of {batch_size}")
    # The custom loop's batch function, at one fixed length (static shapes).
    texts, labels = data_tensors(data)
    fn = batch_fn(texts, labels, tokenizer, batch_size, length,
                  pair_encoding if isinstance(data, PairData) else None)
    return (_index_stream(len(data), batch_size, seed, stream)
            .map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def make_fit_dataset(data, tokenizer, *, batch_size=32, lengths=None, seed=0,
                     pair_encoding="bi", steps_per_epoch="max"):
    """The three tasks zipped into one `(x, y)` per step, for `compile_multitask` models.

    Each task is an endless stream of epochs, each reshuffled from
    `(seed, epoch, task)`; every batch is full (an epoch's remainder sits
    out). A step takes the next batch of every task, so smaller tasks repeat
    within a Keras epoch. Each task has one fixed length, longer examples
    are truncated: one shape per task, so XLA compiles the step once.

    Args:
        data: `{task: data}` for the three tasks, keyed by dataset
            (`"sst"`, `"quora"`, `"sts"`) or output name (`"sentiment"`,
            ...); values are `training.readers` `SentenceData` / `PairData`.
        tokenizer: a `kerasbert.BertTokenizer`.
        batch_size: rows per task per step.
        lengths: `{output: length}` overriding `DEFAULT_LENGTHS[pair_encoding]`.
        seed: fixes every task's shuffles.
        pair_encoding: `"bi"` or `"cross"`, as the model was built.
        steps_per_epoch: `"max"` (the largest task is seen once per Keras
            epoch), `"min"` (the smallest is) or an int.

    Returns:
        `(dataset, steps_per_epoch)`: pass both to `model.fit(dataset,
        steps_per_epoch=steps_per_epoch, epochs=...)`. The dataset is
        infinite; Keras keeps iterating it across epochs. `x` is
        `{"sentiment": {...}, "paraphrase": {"a", "b"} or {"pair"},
        "similarity": ...}` of int32 (B, L) tensors, `y` is `{"sentiment":
        int32 (B,), "paraphrase": float32 (B,), "similarity": float32 (B,)}`.

    Example::

        ds, steps = make_fit_dataset({"sst": sst, "quora": quora, "sts": sts}, tokenizer)
        model.fit(ds, steps_per_epoch=steps, epochs=3)
    """
    if pair_encoding not in ("bi", "cross"):
        raise ValueError(f"pair_encoding must be 'bi' or 'cross', got {pair_encoding!r}")
    by_output = {}
    for key, value in data.items():
        output = _output_of(key)
        if output in by_output:
            raise ValueError(f"two datasets for output {output!r}")
        by_output[output] = value
    missing = [o for o in OUTPUTS if o not in by_output]
    if missing:
        raise ValueError(f"make_fit_dataset needs all three tasks; missing {missing}. For one "
                         "task use compile_task + make_task_dataset")
    lengths = {**DEFAULT_LENGTHS[pair_encoding], **(lengths or {})}
    streams, counts = {}, {}
    for stream, output in enumerate(OUTPUTS):
        task_data = by_output[output]
        counts[output] = len(task_data) // batch_size
        streams[output] = _task_stream(task_data, tokenizer, batch_size, lengths[output], seed,
                                       stream, pair_encoding)
    dataset = tf.data.Dataset.zip(streams).map(
        lambda parts: ({o: parts[o][0] for o in OUTPUTS}, {o: parts[o][1] for o in OUTPUTS}))
    return dataset.prefetch(tf.data.AUTOTUNE), _steps(steps_per_epoch, counts)


def make_task_dataset(data, tokenizer, *, batch_size=32, length=None, seed=0,
                      pair_encoding="bi", steps_per_epoch=None):
    """One task's training batches for a `compile_task` sub-model.

    Args:
        data: `SentenceData` (sentiment) or `PairData` (paraphrase/similarity).
        tokenizer: a `kerasbert.BertTokenizer`.
        batch_size: rows per step.
        length: the fixed sequence length (default from `DEFAULT_LENGTHS`).
        seed: fixes the shuffles (epoch e is shuffled from `(seed, e)`).
        pair_encoding: for pairs, `"bi"` or `"cross"`.
        steps_per_epoch: default: one pass over `data` per Keras epoch.

    Returns:
        `(endless dataset of (x, y), steps_per_epoch)`.

    Example::

        ds, steps = make_task_dataset(sst_train.take(320), tokenizer, seed=0)
        compile_task(model, "sentiment").fit(ds, steps_per_epoch=steps, epochs=2)
    """
    output = "sentiment" if isinstance(data, SentenceData) else None
    if length is None:
        if output is None:
            raise ValueError("pass length= for pair data (e.g. 64 bi-encoded, 128 cross)")
        length = DEFAULT_LENGTHS[pair_encoding][output]
    dataset = _task_stream(data, tokenizer, batch_size, length, seed, 0, pair_encoding)
    return dataset.prefetch(tf.data.AUTOTUNE), int(steps_per_epoch or len(data) // batch_size)


def make_task_eval_dataset(data, tokenizer, *, batch_size=64, length=64, pair_encoding="bi"):
    """Every example of `data` once, as `(x, y, weight)` for `Model.evaluate`.

    One fixed `length` (one XLA program); the last batch is filled with
    weight-0 rows, so weighted metrics count each example exactly once.

    Returns:
        `(dataset, number of batches)`.

    Example::

        dev, _ = make_task_eval_dataset(sst_dev, tokenizer)
        compile_task(model, "sentiment").evaluate(dev, return_dict=True)  # {"acc": ...}
    """
    dataset, steps = make_eval_dataset(data, tokenizer, batch_size=batch_size, buckets=(length,),
                                       max_length=length, pair_encoding=pair_encoding)
    return dataset.map(lambda x, y, weight, index: (x, y, weight)), steps


class PlattCalibration(keras.callbacks.Callback):
    """When `fit` ends, Platt-scales the paraphrase logit on held-out Quora pairs, folded in.

    `model.fit`'s form of the custom loop's `--calibration-holdout`
    (`training.calibration`): a bi-encoder's paraphrase logit is fitted on
    training pairs it has memorised, so on new pairs its threshold is off.
    This fits `sigmoid(a * logit + b)` to the gold labels of pairs the fit
    never saw and folds `a`, `b` into `model.paraphrase_logit_layer()`, so
    the model saved after `fit` and its exports carry it. Dev is not used.
    It runs once, at the end of training: a `ModelCheckpoint` written
    during `fit` holds the uncalibrated head.

    Args:
        held_out: `PairData` of quora-train pairs kept out of the fit's data
            (`split_holdout(quora, 0.1)`), with gold labels.
        tokenizer: the model's `BertTokenizer`.
        batch_size: pairs per prediction batch.
        length: tokens per sentence ("bi") or pair ("cross"); default: the
            paraphrase length `make_fit_dataset` trains at.

    Attributes:
        calibration: the `PlattScaling` folded in (None until `fit` ends).

    Example::

        from training.calibration import split_holdout
        data["quora"], held_out = split_holdout(data["quora"], 0.1)
        ds, steps = make_fit_dataset(data, tokenizer)
        compile_multitask(model, "distill_cosine_nce", total_steps=3 * steps)
        calibrate = PlattCalibration(held_out, tokenizer)
        model.fit(ds, steps_per_epoch=steps, epochs=3, callbacks=[calibrate])
        calibrate.calibration  # PlattScaling(scale=..., bias=..., pairs=...)
    """

    def __init__(self, held_out, tokenizer, *, batch_size=64, length=None):
        super().__init__()
        if not isinstance(held_out, PairData) or not held_out.labeled or not len(held_out):
            raise ValueError("PlattCalibration needs labeled quora pairs held out of the fit "
                             "(training.calibration.split_holdout)")
        self.held_out, self.tokenizer = held_out, tokenizer
        self.batch_size, self.length = batch_size, length
        self.calibration = None

    def held_out_logits(self):
        """The model's paraphrase logits on the held-out pairs, in their order."""
        encoding = self.model.pair_encoding
        length = self.length or DEFAULT_LENGTHS[encoding]["paraphrase"]
        dataset, _ = make_eval_dataset(self.held_out, self.tokenizer, batch_size=self.batch_size,
                                       buckets=(length,), max_length=length,
                                       pair_encoding=encoding)
        paraphrase = self.model.task_model("paraphrase")
        steps = ((paraphrase(x, training=False), weight, index)
                 for x, _, weight, index in dataset)
        return outputs_in_data_order(steps, len(self.held_out)).reshape(-1)

    def on_train_end(self, logs=None):
        self.calibration = PlattScaling.fit(self.held_out_logits(), self.held_out.labels)
        self.calibration.fold(self.model.paraphrase_logit_layer())


def _steps(steps_per_epoch, counts):
    if steps_per_epoch == "max":
        return max(counts.values())
    if steps_per_epoch == "min":
        return min(counts.values())
    if isinstance(steps_per_epoch, (int, np.integer)) and steps_per_epoch > 0:
        return int(steps_per_epoch)
    raise ValueError(f"steps_per_epoch must be 'max', 'min' or a positive int, "
                     f"got {steps_per_epoch!r}")


__all__ = ["DEFAULT_LENGTHS", "HEAD_LR", "PlattCalibration", "compile_multitask", "compile_task",
           "epoch_batches", "make_fit_dataset", "make_task_dataset", "make_task_eval_dataset",
           "task_metrics"]
