"""`MultitaskTrainer`: the custom, XLA-compiled multitask training loop."""

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import kerasbert
from kerasbert.from_pretrained import DEFAULT_MODEL
from kerasbert_lite.tasks import MULTITASK, get_task
from training.engine import (encoder_learning_rate, make_optimizer, task_schedule,
                             train_step_function)
from training.calibration import PlattScaling, split_holdout
from training.encoder_source import checkpoint_folder
from training.examples import PairData, SentenceData
from training import run_folder as rf
from training.run_folder import atomic_write, atomic_write_text
from training.metrics import (METRIC_NAMES, overall_scores, predicted_labels, selection_score,
                              task_metric)
from training.pipelines import TaskBatches, outputs_in_data_order, replica_slices
from training.precision import resolve_precision, set_precision
from training.predictions import write_predictions
from training.readers import SENTIMENT_CLASSES, load_split, resolve_data_dir, split_path
from training.run_lock import RunLock
from training.extra_pairs import with_extra_pairs
from training.teacher import Teacher, with_teacher_outputs
from training import strategy as strategies
from training.train_config import TrainConfig
from training.variants import get_variant

logger = logging.getLogger(__name__)

CHECKPOINT_DIR, STATE_FILE, PREVIOUS_STATE_FILE = rf.CHECKPOINTS, rf.LATEST_STATE, rf.PREVIOUS_STATE
_STATE_KEYS = ("epoch", "position", "global_step", "history", "best_score", "best_epoch",
               "loss_sums", "arrays")


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or infinite; the run stopped before saving it.

    `MultitaskTrainer.train` raises it naming the task, step and epoch, and where the
    last good checkpoint is; `python -m training.run` prints that message and exits 2.

    Example:
    >>> isinstance(NonFiniteLoss("sst loss is nan at step 12 (epoch 1)"), RuntimeError)
    True
    """


def default_strategy():
    """`--strategy auto`: MultiWorkerMirrored under a multi-worker TF_CONFIG, Mirrored
    on several GPUs, else the default (one device); see `training.strategy`."""
    return strategies.make_strategy("auto")


XLA_BUCKETS = (32, 64, 128)
# Graph mode has no compile per shape (only the fused kernels' small ones),
# so training pads to multiples of 4 up to 64, of 8 above: on the three
# training sets 912k token slots an epoch against 1,037k for
# (16, 24, 32, 40, 48, 64, 96, 128), with each pair side at its own bucket.
GRAPH_BUCKETS = tuple(range(8, 64, 4)) + tuple(range(64, 129, 8))


def resolve_jit(setting):
    """`"auto"` -> XLA on GPU, oneDNN graph mode on CPU (faster there, see TrainConfig)."""
    if setting == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    if isinstance(setting, str):
        return {"on": True, "true": True, "off": False, "false": False}[setting.lower()]
    return bool(setting)


def trained_tasks(config, variant):
    """The tasks a run trains, in order: `--tasks`, else the variant's, with
    `sst` standing for whichever sentiment task the run uses.

    >>> from types import SimpleNamespace
    >>> trained_tasks(SimpleNamespace(tasks=("sst",), sentiment_task="sst"), get_variant("bm"))
    ('sst',)
    """
    if variant.single_task:
        return (config.sentiment_task,)
    tasks = tuple(config.tasks or variant.tasks)
    return tuple(config.sentiment_task if t in SENTIMENT_CLASSES else t for t in tasks)


class MultitaskTrainer:
    """Trains a `kerasbert.MultitaskBert` on SST, Quora and STS with per-task steps.

    Each step trains one task: its sub-model's forward pass, its loss and an
    AdamW update (warm-up + linear decay, global-norm clipping), compiled by
    XLA. Tasks alternate by `config.schedule`. Every `checkpoint_every` steps
    and after each epoch the model, optimizer, schedule step, data position
    and dropout RNG state are written atomically to `out/checkpoints`, so
    `train(resume=True)` continues a run killed at any moment; the result
    is the uninterrupted run's to float noise (bit-identical where the
    kernels are deterministic; see the README's "Resuming"). The checkpoint
    before the latest is kept as a fallback for an unreadable latest one.
    One process at a time may write `out` (`RunLock`). After each epoch the dev sets are scored; the best epoch (by the
    CS224N overall score over the tasks the run trains) is kept as
    `out/best.keras`.

    Under a `tf.distribute` strategy (`config.strategy`), each replica
    trains on its share of every global batch
    (`distribute_datasets_from_function` + `replica_slices`), evaluation
    runs on every replica and gathers the outputs back in data order, and
    of several workers only the chief writes the run folder (and holds its
    lock); the others write their checkpoints to a temporary folder that
    they remove (`tf.distribute`'s rule for multi-worker saving).

    Args:
        config: a `TrainConfig`.
        strategy: a `tf.distribute.Strategy` (default: `config.strategy` by
            `training.strategy.make_strategy`; in a multi-worker run it must
            be made before any other TensorFlow op).

    Example (a smoke run):
    >>> cfg = TrainConfig(variant="dps_mse", data_dir="../shared/data",  # doctest: +SKIP
    ...                   out="runs/smoke", epochs=1, limit=64)
    >>> MultitaskTrainer(cfg).train()["best"]  # doctest: +SKIP
    """

    def __init__(self, config, strategy=None):
        self.config = config
        self.variant = get_variant(config.variant)
        self.strategy = strategy or strategies.make_strategy(
            config.strategy, config.tpu, config.collective_timeout)
        self.replicas = self.strategy.num_replicas_in_sync
        # The default strategy keeps the one-device code path, bit for bit.
        self.distributed = not strategies.is_default(self.strategy)
        self.chief = strategies.is_chief(self.strategy)
        for flag, size in (("--batch-size", config.batch_size),
                           ("--eval-batch-size", config.eval_batch_size)):
            if size % self.replicas:
                raise ValueError(f"{flag} {size} does not split into {self.replicas} equal "
                                 f"replica shares ({strategies.kind(self.strategy)}); use a "
                                 f"multiple of {self.replicas}")
        self.out = Path(config.out)
        self.data_dir = resolve_data_dir(config.data_dir)
        sentiment = config.sentiment_task
        if sentiment not in SENTIMENT_CLASSES:
            raise ValueError(f"sentiment task must be {' or '.join(SENTIMENT_CLASSES)}, "
                             f"got {sentiment!r}")
        self.train_tasks = trained_tasks(config, self.variant)
        benchmark = ((sentiment,) if self.variant.single_task
                     else (sentiment,) + tuple(t for t in MULTITASK
                                               if get_task(t).output != "sentiment"))
        # A trained dataset outside the benchmark (a new table row) is scored too:
        # its dev metric is what picks the best epoch.
        self.eval_tasks = benchmark + tuple(t for t in self.train_tasks if t not in benchmark)
        if config.mode not in ("finetune", "frozen"):
            raise ValueError(f"mode must be finetune or frozen, got {config.mode!r}")
        self.lr = config.lr if config.lr is not None else self.variant.lr
        self.head_lr = config.head_lr
        self._steps, self._predictors, self._eval_inputs_cache = {}, {}, {}
        # The best epoch's weights and dev outputs, kept in memory for the
        # end of the run (every worker has them; none reads the chief's files).
        self._best = None
        # A TPU compiles every step with XLA: take the few XLA buckets.
        self.jit_compile = (True if strategies.kind(self.strategy) == "tpu"
                            and config.jit_compile == "auto" else resolve_jit(config.jit_compile))
        self.buckets = tuple(config.buckets or (XLA_BUCKETS if self.jit_compile else GRAPH_BUCKETS))
        # Evaluation has no gradient and in graph mode no compile per shape:
        # every multiple of 4 is a bucket, so a batch pads at most 3 tokens
        # (on Quora dev 7% fewer token slots than multiples of 8; each new
        # length costs one small compile of the fused kernels, in epoch 1 only).
        self.eval_buckets = (self.buckets if self.jit_compile or config.buckets
                             else tuple(range(4, config.max_length, 4)) + (config.max_length,))
        self.precision = resolve_precision(config.precision)

    # ------------------------------------------------------------------ setup
    def _read(self, task, split):
        data = load_split(task, split, self.data_dir)
        if split == "train" and task == "quora" and self.config.quora_fraction < 1.0:
            rng = np.random.default_rng(self.config.seed)
            keep = max(1, int(round(self.config.quora_fraction * len(data))))
            data = data.subset(np.sort(rng.permutation(len(data))[:keep]))
        return data.take(self.config.limit) if self.config.limit is not None else data

    def setup(self):
        """Reads data, loads the encoder, builds model, batches and optimizer."""
        cfg = self.config
        keras.utils.set_random_seed(cfg.seed)
        # Set every time, float32 included, so no policy leaks in from an
        # earlier model built in this process.
        set_precision(self.precision.policy)
        logger.info("precision: %s (%s)", self.precision.policy, self.precision.reason)
        with self.strategy.scope():
            with tempfile.TemporaryDirectory() as scratch:
                source = checkpoint_folder(cfg.model, scratch)
                backbone, self.tokenizer = kerasbert.from_pretrained(
                    source, max_length=cfg.max_length, layers=student_layers(cfg, source))
            positions = backbone.bert_config.max_sequence_length
            if cfg.max_length > positions:
                raise ValueError(f"--max-length must be at most {positions} for "
                                 f"{cfg.model or DEFAULT_MODEL} (its position "
                                 f"embeddings), got {cfg.max_length}")
            # best.keras then carries the tokenizer (vocabulary inside): a loaded
            # model takes raw strings through kerasbert.text_model(model).
            preprocessor = kerasbert.BertPreprocessor(
                self.tokenizer.vocabulary, lowercase=self.tokenizer.lowercase,
                sequence_length=cfg.max_length)
            self.model = kerasbert.MultitaskBert(
                backbone, num_sentiment_classes=SENTIMENT_CLASSES[cfg.sentiment_task],
                preprocessor=preprocessor, **self.variant.model_kwargs())
            if cfg.mode == "frozen":
                backbone.trainable = False

        def batches(data, batch_size, buckets=self.buckets):
            # Under XLA each bucket is a compile and TPUs want static shapes:
            # a map per bucket; in graph mode one map cuts each batch to its bucket.
            return TaskBatches(data, self.tokenizer, batch_size=batch_size, buckets=buckets,
                               max_length=cfg.max_length, pair_encoding=self.variant.pair_encoding,
                               static_shapes=self.jit_compile)

        def eval_batches(data):
            return batches(data, cfg.eval_batch_size, self.eval_buckets)

        train_data = {t: self._read(t, "train") for t in self.train_tasks}
        self.calibration_batches = None
        if cfg.calibration_holdout:
            train_data["quora"], held_out = self._hold_out(train_data["quora"])
            self.calibration_batches = eval_batches(held_out)
        if self.variant.distill:
            train_data = self._with_teacher_outputs(train_data)
        self.train_batches = {t: batches(data, cfg.batch_size) for t, data in train_data.items()}
        self.dev_batches = {t: eval_batches(self._read(t, "dev")) for t in self.eval_tasks}
        self._eval_batches = eval_batches
        self.batch_counts = {t: b.num_train_batches for t, b in self.train_batches.items()}
        for task, count in self.batch_counts.items():
            if count == 0:
                raise ValueError(f"{task}: {len(self.train_batches[task])} training examples "
                                 f"make no batch of {cfg.batch_size}; lower --batch-size")
        self.steps_per_epoch = sum(self.batch_counts.values())
        total = self.steps_per_epoch * cfg.epochs
        with self.strategy.scope():
            self.optimizer = make_optimizer(
                self.model, self.lr, self.head_lr, total_steps=total,
                warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                clip_norm=cfg.clip_norm, loss_scale=self.precision.policy == "mixed_float16",
                lazy_embeddings=cfg.embedding_update == "lazy")
        return self

    def _hold_out(self, quora):
        """(training pairs, held-out pairs) of quora-train (`--calibration-holdout`)."""
        train, held_out = split_holdout(quora, self.config.calibration_holdout,
                                        what="--calibration-holdout")
        logger.info("calibration: %d of %d quora-train pairs held out of training",
                    len(held_out), len(quora))
        return train, held_out

    def _calibrate(self):
        """Fits Platt scaling on the held-out pairs and folds it into the model.

        Returns (its record for metrics.jsonl, the unfolded weights of the logit
        layer): training goes on from those, so checkpoints hold them.
        """
        layer = self.model.paraphrase_logit_layer()
        logits = self.predict("quora", self.calibration_batches, split="held-out")
        gold = self.calibration_batches.data.labels
        fit = PlattScaling.fit(logits, gold)

        def accuracy(outputs):  # as dev's quora_acc is scored
            return float(task_metric("quora", predicted_labels("quora", outputs), gold))

        record = dict(fit.to_dict(), held_out_acc_before=accuracy(logits),
                      held_out_acc=accuracy(fit(logits)))
        return record, fit.fold(layer)

    def _with_teacher_outputs(self, train_data):
        cfg = self.config
        teacher = Teacher.load(cfg.teacher, batch_size=cfg.eval_batch_size)
        teacher.check_student(self.tokenizer.vocabulary, cfg.max_length,
                              source=f"the student's encoder ({cfg.model or DEFAULT_MODEL})")
        if cfg.extra_pairs:
            train_data = with_extra_pairs(train_data, cfg.extra_pairs, cfg.seed)
            logger.info("extra pairs: %s", ", ".join(
                f"{task} {len(data)} rows ({cfg.extra_pairs} requested unlabeled)"
                for task, data in train_data.items() if isinstance(data, PairData)))
        embedding_teacher = self._embedding_teacher() if cfg.embedding_teacher else None
        # Of several workers only the chief writes the cache (the others compute alike).
        return with_teacher_outputs(train_data, teacher, self.out, write=self.chief,
                                    embedding_teacher=embedding_teacher)

    def _embedding_teacher(self):
        """`--embedding-teacher`, checked against the student: same tokens, same vector width."""
        cfg = self.config
        teacher = Teacher.load([cfg.embedding_teacher], batch_size=cfg.eval_batch_size)
        teacher.check_student(self.tokenizer.vocabulary, cfg.max_length,
                              source=f"the student's encoder ({cfg.model or DEFAULT_MODEL})")
        teacher.check_vectors()
        for output in ("paraphrase", "similarity"):
            try:
                submodel = self.model.task_model(f"{output}_with_vectors")
            except KeyError:
                raise ValueError(f"--embedding-teacher: --variant {cfg.variant}'s {output} head "
                                 "compares no sentence vectors (a concat head or a "
                                 "cross-encoder); use a dot/cosine bi-encoder student") from None
            width = submodel.output["a"].shape[-1]
            if width != teacher.embedding_dim:
                raise ValueError(f"--embedding-teacher {cfg.embedding_teacher}: its sentence "
                                 f"vectors are {teacher.embedding_dim}-d, the student's {output} "
                                 f"vectors {width}-d; they must match")
        return teacher

    # ------------------------------------------------------------------ steps
    def _train_step(self, task):
        """The compiled step of `task`: `(x, y) -> loss`, one update of `self.optimizer`."""
        if task not in self._steps:
            self._steps[task] = train_step_function(
                self.model, self.optimizer,
                self.variant.task_losses(
                    self.config.teacher_weight, self.config.distill_temperature,
                    self.config.embedding_weight if self.config.embedding_teacher else 0.0),
                output=get_task(task).output, jit_compile=self.jit_compile,
                strategy=self.strategy)
        return self._steps[task]

    def _epoch_iterators(self, epoch, order, start):
        """`{task: iterator of (x, y)}` for `epoch` from step `start` of `order`.

        On one device the batches themselves; under a strategy per-replica
        values, each replica's share of the same global batches.
        """
        cfg = self.config
        iterators = {}
        for task, batches in self.train_batches.items():
            skip = order[:start].count(task)
            if not self.distributed:
                iterators[task] = iter(batches.train_dataset(cfg.seed, epoch, skip)[0])
                continue

            def dataset_fn(context, batches=batches, skip=skip):
                return replica_slices(batches.train_dataset(cfg.seed, epoch, skip)[0], context)

            iterators[task] = iter(self.strategy.distribute_datasets_from_function(dataset_fn))
        return iterators

    # -------------------------------------------------------------- evaluate
    def _predictor(self, name):
        """A compiled call of the sub-model `name` (see `MultitaskBert.task_model`)."""
        if name not in self._predictors:
            submodel = self.model.task_model(name)
            if not self.distributed:
                self._predictors[name] = tf.function(
                    lambda x: submodel(x, training=False), jit_compile=self.jit_compile,
                    reduce_retracing=True)
                return self._predictors[name]

            def replica_outputs(x, weight, index):
                # Every replica's rows, gathered in replica order: the global batch.
                # (identity: placed on this replica's device, as a gather needs.)
                return tf.distribute.get_replica_context().all_gather(
                    tuple(tf.identity(t) for t in (submodel(x, training=False), weight, index)),
                    axis=0)

            compiled = tf.function(replica_outputs, jit_compile=self.jit_compile,
                                   reduce_retracing=True)

            @tf.function(reduce_retracing=True)
            def predictor(inputs):
                gathered = self.strategy.run(compiled, args=inputs)
                return self.strategy.experimental_local_results(gathered)[0]

            self._predictors[name] = predictor
        return self._predictors[name]

    def _eval_inputs(self, batches):
        """Each eval batch of `batches` split among the replicas, as `(x, weight, index)`."""
        key = id(batches)
        if key not in self._eval_inputs_cache:
            def dataset_fn(context):
                dataset, _ = batches.eval_dataset()
                return replica_slices(dataset.map(lambda x, _y, w, i: (x, w, i)), context)

            self._eval_inputs_cache[key] = (
                batches, self.strategy.distribute_datasets_from_function(dataset_fn))
        return self._eval_inputs_cache[key][1]

    def _eval_list(self, batches):
        """The eval batches of `batches` as tensors in a list, made once: no
        input pipeline runs beside the model (on 2 cores its threads slowed
        some evaluations by half)."""
        key = ("list", id(batches))
        if key not in self._eval_inputs_cache:
            dataset, _ = batches.eval_dataset()
            self._eval_inputs_cache[key] = (batches, [(x, w, i) for x, _y, w, i in dataset])
        return self._eval_inputs_cache[key][1]

    def predict(self, task, batches, split="dev"):
        """Raw outputs for every example of `batches.data`, in data order.

        Under a strategy every replica scores its share of each batch and
        the outputs are gathered (on every worker) back into data order.
        A bar counts the examples on a terminal (`kerasbert_lite.progress`).
        A bi-encoder's pairs go by their distinct sentences
        (`_predict_pairs_by_sentence`).
        """
        if batches.pair_encoding == "bi":
            return self._predict_pairs_by_sentence(task, batches, split)
        return self._predict_rows(get_task(task).output, batches, f"{task} {split}", "example")

    def _predict_rows(self, name, batches, desc, unit):
        from kerasbert_lite.progress import Progress
        predictor = self._predictor(name)
        bar = Progress(len(batches.data), desc, unit=unit, min_total=2000,
                       enabled=None if self.chief else False)
        if self.distributed:
            steps = ((out, weight, index) for out, weight, index in
                     map(predictor, self._eval_inputs(batches)))
        else:
            steps = ((predictor(x), weight, index) for x, weight, index in self._eval_list(batches))
        outputs = outputs_in_data_order(steps, len(batches.data), bar)
        bar.close()
        return outputs

    def _predict_pairs_by_sentence(self, task, batches, split):
        """A bi-encoder's pair outputs: each distinct sentence encoded once, at
        its own length, then the head on the two vectors of each pair.

        The same numbers as the pair model (the head is the same layers), for
        less work: on Quora dev 6% of the sentences repeat, and padding both
        sides of a pair to the longer one's bucket computed 17% more tokens
        than padding each sentence to its own (before pair plans padded each
        side apart).
        """
        output = get_task(task).output
        key = ("sentences", id(batches))
        if key not in self._eval_inputs_cache:
            data = batches.data
            index = {}
            rows = [[index.setdefault(t, len(index)) for t in texts]
                    for texts in (data.texts_a, data.texts_b)]
            texts = list(index)
            sentences = SentenceData(texts, texts, None, data.source)
            self._eval_inputs_cache[key] = (batches, self._eval_batches(sentences),
                                            *(np.asarray(r, np.int64) for r in rows))
        _, sentences, rows_a, rows_b = self._eval_inputs_cache[key]
        if not len(rows_a):
            return np.zeros(0, np.float32)
        vectors = self._predict_rows(f"{output}_vector", sentences, f"{task} {split}",
                                     "sentence")
        head = self.model.task_model(f"{output}_from_vectors")
        chunk = 8192  # the head is a few small ops: big chunks, eagerly
        return np.concatenate([
            np.asarray(head([vectors[rows_a[i:i + chunk]], vectors[rows_b[i:i + chunk]]]))
            for i in range(0, len(rows_a), chunk)])

    def evaluate(self, batches_by_task=None, raw_outputs=None):
        """Dev metrics (`sst_acc`, `quora_acc`, `sts_pearson`, overall scores) and predictions.

        If `raw_outputs` is a dict, it receives each task's raw model outputs
        (logits, or the 0-5 similarity), which ensembles average later.
        """
        metrics, predictions = {}, {}
        for task, batches in (batches_by_task or self.dev_batches).items():
            outputs = self.predict(task, batches)
            if raw_outputs is not None:
                raw_outputs[task] = outputs
            preds = predicted_labels(task, outputs)
            predictions[task] = preds
            metrics[METRIC_NAMES[task]] = task_metric(task, preds, batches.data.labels)
        metrics.update(overall_scores(metrics))
        return metrics, predictions

    # ------------------------------------------------------------ checkpoints
    def _write_checkpoint(self, state):
        name = f"step-{state['global_step']:08d}.npz"
        # Every worker reads the variables (whatever reading them needs of
        # the others happens on all of them alike) ...
        arrays = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.variables)}
        arrays.update({f"optimizer_{i}": np.asarray(v.numpy())
                       for i, v in enumerate(self.optimizer.variables)})
        if not self.chief:
            # ... and, as tf.distribute has non-chief workers do, writes
            # them to a folder of its own, removed at once: the chief's copy
            # is the run's.
            scratch = self.out / CHECKPOINT_DIR / f".worker-{strategies.worker_index(self.strategy)}.tmp"
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                atomic_write(scratch / name, lambda f: np.savez(f, **arrays))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / name, lambda f: np.savez(f, **arrays))
        # The state file names the arrays file and is replaced last, so a kill
        # at any point leaves a state that points at a complete checkpoint.
        # The one it replaces becomes previous.json, with its arrays kept, so
        # a latest checkpoint damaged later (disk full, a copy cut short)
        # still leaves one to resume from.
        latest = folder / STATE_FILE
        previous = _state_text_and_arrays(latest)
        if previous is not None and previous[1] != name:
            atomic_write_text(folder / PREVIOUS_STATE_FILE, previous[0])
        atomic_write_text(latest, json.dumps(dict(state, arrays=name), indent=1))
        keep = {name} | {found[1] for found in [_state_text_and_arrays(folder / PREVIOUS_STATE_FILE)]
                         if found is not None}
        for old in folder.glob("step-*.npz"):
            if old.name not in keep:
                old.unlink()

    def _read_checkpoint(self):
        """The state of the latest usable checkpoint, its weights loaded; None if none was written.

        An unreadable latest.json or arrays file is reported (file named) and
        the previous checkpoint used instead; if neither is usable, a
        `ValueError` naming the folder.
        """
        folder = self.out / CHECKPOINT_DIR
        candidates = [folder / STATE_FILE, folder / PREVIOUS_STATE_FILE]
        if not any(path.is_file() for path in candidates):
            return None
        problems = []
        for path in candidates:
            if not path.is_file():
                problems.append(f"{path}: missing")
                continue
            try:
                state = self._load_checkpoint(path)
            except ValueError as e:
                problems.append(str(e))
                continue
            if problems and self.chief:
                message = (f"warning: {problems[0]}; resuming from the previous checkpoint "
                           f"{path} (step {state['global_step']})")
                print(message, file=sys.stderr)
                # The fallback becomes the latest, so the next checkpoint
                # keeps it (not the damaged one) as its previous.
                atomic_write(folder / STATE_FILE, lambda f: f.write(path.read_bytes()))
            return state
        raise ValueError(f"{folder}: no usable checkpoint ({'; '.join(problems)}); remove the "
                         "folder to start over, or choose another --out")

    def _load_checkpoint(self, state_path):
        """Reads one state file and its arrays into the model, all or nothing."""
        try:
            state = json.loads(state_path.read_bytes())
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes
            raise ValueError(f"{state_path}: unreadable ({type(e).__name__}: {e})") from e
        if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
            raise ValueError(f"{state_path}: not a checkpoint state (needs keys {list(_STATE_KEYS)})")
        arrays_path = state_path.parent / str(state["arrays"])
        groups = (("model", self.model.variables), ("optimizer", self.optimizer.variables))
        try:
            with np.load(arrays_path) as stored:
                values = {key: stored[key] for key in stored.files}
        except Exception as e:  # noqa: BLE001  missing, truncated zip, bad member: all unusable
            raise ValueError(f"{arrays_path}: unreadable ({type(e).__name__}: {e})") from e
        if "head_optimizer_0" in values:
            raise ValueError(f"{arrays_path}: written by an older version (two optimizers, "
                             "now one MultiOptimizer); it cannot be resumed. Start the run "
                             "again in another --out")
        for prefix, variables in groups:
            count = sum(1 for k in values if k.startswith(prefix + "_"))
            if count != len(variables):
                raise ValueError(f"{arrays_path}: {count} {prefix} arrays for "
                                 f"{len(variables)} variables; was it written by another variant?")
            for i, variable in enumerate(variables):
                shape = np.shape(values.get(f"{prefix}_{i}"))
                if shape != tuple(variable.shape):
                    raise ValueError(f"{arrays_path}: {prefix}_{i} has shape {shape}, "
                                     f"the model's is {tuple(variable.shape)}")
        for prefix, variables in groups:
            for i, variable in enumerate(variables):
                variable.assign(values[f"{prefix}_{i}"])
        return state

    # ------------------------------------------------------------------ train
    def _check_run_folder(self, resume):
        """Refuses a resume with other settings, or a new run over a started one."""
        config_path = self.out / rf.CONFIG
        if config_path.is_file():
            try:
                record = json.loads(config_path.read_bytes())
                saved = TrainConfig.from_dict(record)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{config_path}: unreadable run settings ({e}); choose "
                                 "another --out") from e
            if resume:
                changed = self.config.differences(saved)
                if changed:
                    raise ValueError(
                        f"{self.out} was started with other settings ({', '.join(changed)}); "
                        "resume with the same settings or use another --out")
                # `auto` may resolve differently on another machine: what
                # counts is the policy the run trained under.
                used = record.get("precision_used")
                if used is not None and used != self.precision.policy:
                    raise ValueError(
                        f"{config_path}: the run trained under {used}, this machine resolves "
                        f"--precision {self.config.precision} to {self.precision.policy}; "
                        f"resume with --precision {used}")
            elif any((self.out / CHECKPOINT_DIR / name).is_file()
                     for name in (STATE_FILE, PREVIOUS_STATE_FILE)):
                raise FileExistsError(
                    f"{self.out} already holds a run; pass --resume to continue it or choose "
                    "another --out")

    def _write_run_record(self):
        record = json.loads(self.config.to_json())
        # What export needs to rebuild the text pipeline without the training code.
        record.update(strategy_used=strategies.kind(self.strategy), replicas=self.replicas,
                      workers=strategies.workers(self.strategy),
                      precision_used=self.precision.policy,
                      precision_reason=self.precision.reason,
                      lowercase=self.tokenizer.lowercase,
                      num_sentiment_classes=SENTIMENT_CLASSES[self.config.sentiment_task],
                      lr_used=self.lr, head_lr_used=self.head_lr,
                      variant_definition=self.variant.__dict__)
        rf.write_config(self.out, record)
        atomic_write(self.out / rf.VOCAB, self.tokenizer.save_vocabulary, suffix=".txt")

    def train(self, resume=False, kill_after_steps=None):
        """Runs (or resumes) the whole training; returns the summary dict.

        `kill_after_steps` ends the process abruptly (`os._exit`) after that
        many steps, as a crash would: it exists to test resuming.

        The run folder is locked first (`RunLock`: another process writing
        it is refused, naming it) and checked against `resume` before any
        data is read. A resume of a finished run redoes what follows the
        last epoch (predictions, plot, summary), which a kill may have cut short.
        """
        # Of several workers the chief alone locks (and writes) the folder.
        with RunLock(self.out) if self.chief else contextlib.nullcontext():
            self._check_run_folder(resume)
            if not hasattr(self, "model"):
                self.setup()
            return self._train(resume, kill_after_steps)

    def _train(self, resume, kill_after_steps):
        cfg = self.config
        chief = self.chief
        if chief:
            self._write_run_record()
        state = self._read_checkpoint() if resume else None
        if resume and state is None and chief:
            print(f"no checkpoint in {self.out}; starting from scratch", file=sys.stderr)
        state = state or {"epoch": 0, "position": 0, "global_step": 0, "history": [],
                          "best_score": None, "best_epoch": None, "loss_sums": {}}
        if chief:
            # Epochs finished after the checkpoint are redone: drop their lines.
            rf.write_history(self.out, state["history"])
        writer = (tf.summary.create_file_writer(str(self.out / rf.TENSORBOARD)) if chief
                  else tf.summary.create_noop_writer())
        interactive = sys.stderr.isatty()

        for epoch in range(state["epoch"], cfg.epochs):
            order = task_schedule(self.batch_counts, cfg.schedule, cfg.seed, epoch)
            start = state["position"] if epoch == state["epoch"] else 0
            loss_sums = state["loss_sums"] if start else {}
            iterators = self._epoch_iterators(epoch, order, start)
            # A bar on a terminal; in a log (no terminal) a plain line each tenth
            # of the epoch instead, as redrawn bars would be noise there.
            bar = tqdm(total=len(order), initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
                       disable=not (chief and interactive))
            tenths = {math.ceil(k * len(order) / 10) for k in range(1, 11)}
            epoch_start = time.time()
            # Losses stay on the device until `read_losses`: reading each one
            # as it comes would make the host wait for every step.
            pending = []

            def read_losses():
                values = [(task, float(loss)) for task, loss in pending]
                first_step = state["global_step"] - len(values) + 1
                pending.clear()
                for i, (task, value) in enumerate(values):
                    if not math.isfinite(value):
                        bar.close()
                        raise NonFiniteLoss(
                            f"{task} loss is {value} at step {first_step + i} (epoch {epoch + 1}); "
                            f"stopped without saving it. The last good checkpoint is in "
                            f"{self.out / CHECKPOINT_DIR}; resume with --resume and a lower --lr.")
                    total, count = loss_sums.get(task, (0.0, 0))
                    loss_sums[task] = (total + value, count + 1)
                if values:
                    bar.set_postfix({t: f"{s / n:.3f}" for t, (s, n) in loss_sums.items()},
                                    refresh=False)
                    with writer.as_default(step=state["global_step"]):
                        for task in sorted({t for t, _ in values}):
                            tf.summary.scalar(f"loss/{task}", np.mean(
                                [v for t, v in values if t == task]))
                        tf.summary.scalar("learning_rate",
                                          float(encoder_learning_rate(self.optimizer)))

            for position in range(start, len(order)):
                task = order[position]
                x, y = next(iterators[task])
                pending.append((task, self._train_step(task)(x, y)))
                state["global_step"] += 1
                bar.update(1)
                if state["global_step"] % cfg.log_every == 0:
                    read_losses()
                if chief and not interactive and position + 1 in tenths:
                    done = position + 1 - start
                    print(_progress_line(epoch, cfg.epochs, position + 1, len(order),
                                         done / max(time.time() - epoch_start, 1e-9), loss_sums),
                          file=sys.stderr, flush=True)
                if state["global_step"] % cfg.checkpoint_every == 0:
                    read_losses()  # a checkpoint holds only checked steps
                    self._write_checkpoint(dict(state, epoch=epoch, position=position + 1,
                                                loss_sums=loss_sums))
                if kill_after_steps and state["global_step"] >= kill_after_steps:
                    sys.stderr.flush()
                    os._exit(137)
            read_losses()
            bar.close()
            train_seconds = time.time() - epoch_start
            raw = {}
            # Dev, the best epoch's weights and best.keras are all of the
            # calibrated model; training resumes from the unfolded weights.
            calibration, unfolded = (self._calibrate() if self.calibration_batches is not None
                                     else (None, None))
            metrics, predictions = self.evaluate(raw_outputs=raw)
            record = {"epoch": epoch + 1, "step": state["global_step"],
                      "train_loss": {t: s / n for t, (s, n) in loss_sums.items()},
                      "dev": metrics, "train_seconds": round(train_seconds, 1),
                      "eval_seconds": round(time.time() - epoch_start - train_seconds, 1)}
            if calibration is not None:
                record["calibration"] = calibration
            state["history"].append(record)
            if chief:
                rf.write_history(self.out, state["history"])
            with writer.as_default(step=state["global_step"]):
                for name, value in metrics.items():
                    tf.summary.scalar(f"dev/{name}", value)
            score = selection_score(metrics, self.train_tasks)
            improved = state["best_score"] is None or score > state["best_score"]
            if improved:
                state["best_score"], state["best_epoch"] = score, epoch + 1
                self._best = (self.model.get_weights(), predictions, raw)
                if chief:
                    atomic_write(self.out / rf.BEST_MODEL, self.model.save, suffix=".keras")
                    # The best epoch's dev outputs, written now so the end of the
                    # run need not score dev a second time.
                    self._write_dev_outputs(predictions, raw)
                state["dev_outputs_epoch"] = epoch + 1
            if chief:
                print(_epoch_line(record, improved), file=sys.stderr)
            state.update(epoch=epoch + 1, position=0, loss_sums={})
            if unfolded is not None:
                self.model.paraphrase_logit_layer().set_weights(unfolded)
            self._write_checkpoint(state)
        writer.close()
        return self._finish(state)

    def _write_dev_outputs(self, predictions, raw):
        pred_dir = self.out / rf.PREDICTIONS
        for task, preds in predictions.items():
            write_predictions(pred_dir, task, "dev", self.dev_batches[task].data.ids, preds)
        # Raw outputs keyed by id: ensembles of finished runs are scored (dev)
        # and predict (test) from these files without loading a model
        # (experiments.ensemble).
        rf.write_raw_outputs(pred_dir / rf.DEV_OUTPUTS,
                           {t: (self.dev_batches[t].data.ids, raw[t]) for t in raw})

    def _read_dev_outputs(self, path):
        """{task: raw outputs} from the best epoch's dev-outputs.npz, None if unusable."""
        try:
            with np.load(path) as arrays:
                raw = {t: arrays[f"{t}_outputs"] for t in self.eval_tasks}
                same_ids = all(arrays[f"{t}_ids"].tolist() == list(self.dev_batches[t].data.ids)
                               for t in self.eval_tasks)
        except (OSError, ValueError, KeyError) as e:
            logger.warning("%s: unreadable (%s); scoring dev again", path, e)
            return None
        return raw if same_ids else None

    def _finish(self, state):
        """Restores the best epoch, writes predictions and the learning-curve plot.

        Every worker restores and predicts (the prediction steps are
        collective); the chief alone writes.
        """
        chief = self.chief
        metrics = state["history"][state["best_epoch"] - 1]["dev"]
        pred_dir = self.out / rf.PREDICTIONS
        raw = None
        if self._best is not None:  # the best epoch was trained in this process
            weights, predictions, raw = self._best
            self.model.set_weights(weights)
        else:
            self.model.load_weights(self.out / rf.BEST_MODEL)
            # Workers must take the same branch: only the chief could tell
            # whether its file is usable, so several workers score dev again.
            if (state.get("dev_outputs_epoch") == state["best_epoch"]
                    and strategies.workers(self.strategy) == 1):
                raw = self._read_dev_outputs(pred_dir / rf.DEV_OUTPUTS)
                if raw is not None:
                    predictions = {t: predicted_labels(t, raw[t]) for t in raw}
        if raw is None:
            # A run folder from before the dev outputs were kept per epoch,
            # or a damaged one: score dev again.
            raw = {}
            metrics, predictions = self.evaluate(raw_outputs=raw)
        # Rewritten even when present: a resumed run redoes what a kill may
        # have left half done.
        if chief:
            self._write_dev_outputs(predictions, raw)
        test_raw = {}
        for task in self.eval_tasks:
            if not split_path(task, "test", self.data_dir).is_file():
                logger.warning("no %s test file in %s: no test predictions for it",
                               task, self.data_dir)
                continue
            batches = self._eval_batches(self._read(task, "test"))
            outputs = self.predict(task, batches, split="test")
            test_raw[task] = (batches.data.ids, outputs)
            if chief:
                write_predictions(pred_dir, task, "test", batches.data.ids,
                                  predicted_labels(task, outputs))
        summary = {"variant": self.variant.name, "best_epoch": state["best_epoch"],
                   "best": metrics, "epochs": len(state["history"]),
                   "minutes_per_epoch": round(np.mean(
                       [(h["train_seconds"] + h["eval_seconds"]) / 60 for h in state["history"]]), 2)
                   if state["history"] else None}
        if not chief:
            return summary
        if test_raw:
            rf.write_raw_outputs(pred_dir / rf.TEST_OUTPUTS, test_raw)
        else:  # none left from an earlier scoring against other test files
            (pred_dir / rf.TEST_OUTPUTS).unlink(missing_ok=True)
        atomic_write(self.out / rf.LEARNING_CURVES,
                     lambda path: _plot_learning_curves(
                         state["history"], path,
                         title=f"{self.variant.name}: {self.variant.description}"),
                     suffix=".png")
        rf.write_summary(self.out, summary)
        return summary


def student_layers(config, source=None):
    """Source layer indices `--student-layers N` keeps, or None for all.

    Every k-th layer from the first, k = layers // N (DistilBERT took every
    other layer of BERT-base): 3 of MiniLM's 6 keeps 0, 2 and 4. `source`:
    the checkpoint folder `--model` resolved to (`checkpoint_folder`).
    """
    if config.student_layers is None:
        return None
    from kerasbert.from_pretrained import pretrained_config
    total = pretrained_config(config.model if source is None else source).num_layers
    if config.student_layers > total:
        raise ValueError(f"--student-layers must be at most {total} (the encoder's layers), "
                         f"got {config.student_layers}")
    stride = total // config.student_layers
    return tuple(range(0, stride * config.student_layers, stride))


def _progress_line(epoch, epochs, position, steps, rate, loss_sums):
    """One line of an epoch's progress, for logs (a terminal gets the bar instead).

    Example:
    >>> _progress_line(0, 5, 88, 877, 2.5, {"sst": (2.4, 2), "sts": (3.0, 2)})
    'epoch 1/5: 10% (88/877 steps, 2.5 steps/s, 5.3 min left), mean loss sst 1.200 sts 1.500'
    """
    left = (steps - position) / rate / 60 if rate > 0 else float("nan")
    losses = " ".join(f"{t} {s / n:.3f}" for t, (s, n) in loss_sums.items() if n)
    return (f"epoch {epoch + 1}/{epochs}: {100 * position // steps}% ({position}/{steps} "
            f"steps, {rate:.1f} steps/s, {left:.1f} min left)"
            + (f", mean loss {losses}" if losses else ""))


def _epoch_line(record, improved):
    dev = record["dev"]
    parts = [f"{k}={v:.4f}" for k, v in dev.items()]
    losses_ = ", ".join(f"{t} {v:.4f}" for t, v in record["train_loss"].items())
    mark = " (best so far)" if improved else ""
    cal = record.get("calibration")
    calibrated = (f"; paraphrase logit calibrated to {cal['scale']:.3f} z {cal['bias']:+.3f} on "
                  f"{cal['pairs']} held-out pairs (acc {cal['held_out_acc_before']:.4f} -> "
                  f"{cal['held_out_acc']:.4f})" if cal else "")
    return (f"epoch {record['epoch']}: train loss {losses_}; dev {' '.join(parts)}{mark}; "
            f"{record['train_seconds']:.0f}s train, {record['eval_seconds']:.0f}s eval"
            + calibrated)

def _plot_learning_curves(history, path, title=""):
    """Per-task train loss and dev metrics per epoch, side by side, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    for task in sorted({t for h in history for t in h["train_loss"]}):
        left.plot(epochs, [h["train_loss"].get(task, float("nan")) for h in history],
                  marker="o", label=task)
    left.set(xlabel="epoch", ylabel="mean train loss", title="training loss")
    left.legend()
    for name in sorted({m for h in history for m in h["dev"]}):
        right.plot(epochs, [h["dev"].get(name, float("nan")) for h in history],
                   marker="o", label=name)
    right.set(xlabel="epoch", ylabel="score", title="dev metrics")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path



def _state_text_and_arrays(path):
    """(text, arrays file name) of a state file whose arrays file exists, else None."""
    try:
        text = path.read_text()
        name = json.loads(text)["arrays"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (text, name) if (path.parent / str(name)).is_file() else None


__all__ = ["MultitaskTrainer", "NonFiniteLoss", "default_strategy"]
