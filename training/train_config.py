"""`TrainConfig`: every setting of a training run, saved as the run's config.json."""

import dataclasses
import json

# Task orders within an epoch (`training.engine.task_schedule`); here, where the
# flags are checked, so that `--help` and a bad flag need no TensorFlow.
SCHEDULES = ("round_robin", "proportional")
EMBEDDING_UPDATES = ("lazy", "dense")
# tf.distribute strategies of `--strategy` (`training.strategy.make_strategy`).
STRATEGIES = ("auto", "one", "mirrored", "multiworker", "tpu")


@dataclasses.dataclass
class TrainConfig:
    """Settings of one run; `None` fields take the variant's defaults.

    Args:
        variant: a key of `training.variants.VARIANTS`.
        data_dir: folder of the CS224N files.
        out: the run folder.
        model: `None` (packaged all-MiniLM-L6-v2), a local HF/Google folder or a hub name.
        tasks: datasets to train on (default: the variant's; eval is always on all).
        sentiment_task: `sst` or `cfimdb` (the classifier variant's `--task`).
        mode: `finetune` or `frozen` (encoder weights fixed, heads only).
        epochs, batch_size, eval_batch_size, max_length: as named.
        lr: peak learning rate of the encoder (default: the variant's).
        head_lr: peak learning rate of the task heads (new weights).
        buckets: padded lengths a batch may take; `None` picks by `jit_compile`:
            few under XLA (each shape is a compile), many in graph mode, where
            shapes are free and finer buckets halve the padding of pair tasks.
        quora_fraction: fraction of quora-train used (seeded subset).
        limit: use only the first N examples of every split (smoke runs).
        schedule: `round_robin` (the paper's) or `proportional`.
        warmup_ratio, weight_decay, clip_norm: optimiser settings.
        embedding_update: `lazy` (AdamW steps only the embedding rows a batch
            used; `training.fused_adamw.FusedAdamW(lazy_embeddings=True)`)
            or `dense` (Keras' AdamW maths: every row, every step). Lazy
            applies on one replica; a strategy of several steps densely.
        checkpoint_every: steps between resumable checkpoints.
        jit_compile: XLA-compile the train and eval steps: True, False, or
            "auto" = on GPUs only. On this project's 2-core CPU machines plain
            graph mode (oneDNN kernels) measured ~1.5x faster than XLA for
            MiniLM training steps (benchmarks/encoder_throughput.py).
        precision: Keras dtype policy: `auto` (bf16 where the CPU or GPU has
            bf16 units, float16 on pre-Ampere GPUs, else float32; see
            `training.precision`), `float32`, `mixed_bfloat16`, `mixed_float16`.
            Weights, losses, softmax, LayerNorm and the heads stay float32.
        log_every: steps between reads of the loss on the host (progress bar,
            TensorBoard, the non-finite check); in between the loop does not
            wait for a step to finish before queueing the next.
        teacher: `--variant distill`: an export folder, or run folders whose
            mean is the teacher (`training.teacher.Teacher`).
        teacher_weight: weight w of the teacher's soft targets in the
            distillation loss, `(1 - w) * gold + w * teacher`.
        distill_temperature: temperature of the sentiment KL term.
        extra_pairs: `--variant distill`: unlabeled pairs of training
            sentences added to each pair task, labelled by the teacher alone
            (`training.extra_pairs`); 0: none.
        calibration_holdout: fraction of quora-train held out of training (by
            id hash) to refit the paraphrase logit's scale and bias after each
            epoch (`training.calibration`); 0: none.
        embedding_teacher: `--variant distill`: one bi-encoder run folder
            (e.g. a larger student) whose unit sentence vectors the student's
            compared vectors learn (`kerasbert.losses.embedding_distillation`),
            computed once and cached like the teacher's outputs.
        embedding_weight: the weight of that term (with `embedding_teacher`).
        student_layers: keep this many encoder layers, every k-th from the
            first (k = layers // N): 3 of 6 keeps 0, 2, 4. None keeps all.
        seed: seeds data order, dropout and head initialisation.
        strategy: the `tf.distribute` strategy (`training.strategy`): `auto`
            (MultiWorkerMirrored when TF_CONFIG names more than one worker,
            Mirrored on two or more GPUs, else one device), `one`,
            `mirrored`, `multiworker` (needs TF_CONFIG) or `tpu`. The global
            batch (`batch_size`) means the same under every strategy, so
            it may change on resume.
        tpu: the TPU address for `strategy="tpu"` (grpc://..., a TPU name,
            or `local`); None: the resolver's default (a Cloud TPU VM).
        collective_timeout: seconds a multi-worker collective (gradient
            all-reduce, InfoNCE all-gather) waits for the other workers before
            the run stops with an error; None: TensorFlow's peer health check
            alone (a lost worker is noticed within about a minute).

    Example:
    >>> config = TrainConfig(variant="cross", epochs=3, seed=1)
    >>> TrainConfig.from_dict(json.loads(config.to_json())) == config
    True
    >>> config.differences(TrainConfig(variant="cross", epochs=3, seed=1, out="elsewhere"))
    []
    >>> config.differences(TrainConfig(variant="cross"))
    ['epochs', 'seed']

    Every setting is checked when the config is made (`validate`), so a bad
    flag stops a run before any data is read:
    >>> TrainConfig(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: --batch-size must be at least 1, got 0
    """

    variant: str = "dps_mse"
    data_dir: str = None
    out: str = None
    model: str = None
    tasks: tuple = None
    sentiment_task: str = "sst"
    mode: str = "finetune"
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = None
    head_lr: float = 1e-3
    max_length: int = 128
    buckets: tuple = None
    quora_fraction: float = 1.0
    limit: int = None
    schedule: str = "round_robin"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    embedding_update: str = "lazy"
    checkpoint_every: int = 200
    jit_compile: object = "auto"
    precision: str = "auto"
    log_every: int = 20
    teacher: tuple = None
    teacher_weight: float = 0.5
    distill_temperature: float = 1.0
    extra_pairs: int = 0
    calibration_holdout: float = 0.0
    embedding_teacher: str = None
    embedding_weight: float = 1.0
    student_layers: int = None
    seed: int = 0
    strategy: str = "auto"
    tpu: str = None
    collective_timeout: float = None

    # Fields that may differ between a run and its resume.
    # (precision: the trainer checks the policy it resolved to instead.
    # strategy, tpu: the checkpoint holds plain arrays of the variables,
    # whatever the replica count, and the global batch is the same.)
    RESUMABLE_CHANGES = ("data_dir", "out", "checkpoint_every", "jit_compile", "log_every",
                         "precision", "eval_batch_size", "strategy", "tpu",
                         "collective_timeout")

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raises `ValueError` naming the flag of the first setting that cannot work.

        Checked: ranges of every number (`limit` must be >= 1: 0 would read
        as "no limit" in some places and "no data" in others), the names
        (variant, tasks, schedule, mode, sentiment task, jit) and bucket
        lengths. What needs the model or the files (the model's position
        count, the folders) is checked by the trainer before it reads data.
        """
        from kerasbert_lite.tasks import TASKS, sentiment_task_names
        from training.variants import VARIANTS

        def need(ok, flag, rule, value):
            if not ok:
                raise ValueError(f"{flag} must be {rule}, got {value!r}")

        def integer(value):
            return isinstance(value, int) and not isinstance(value, bool)

        def number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        need(self.variant in VARIANTS, "--variant", f"one of {', '.join(sorted(VARIANTS))}",
             self.variant)
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--eval-batch-size", self.eval_batch_size),
                            ("--checkpoint-every", self.checkpoint_every)):
            need(integer(value) and value >= 1, flag, "at least 1", value)
        # As the tokenizer and the export require: [CLS], [SEP] and one token.
        need(integer(self.max_length) and self.max_length >= 3, "--max-length",
             "at least 3 ([CLS], one token, [SEP])", self.max_length)
        if self.limit is not None:
            need(integer(self.limit) and self.limit >= 1, "--limit",
                 "at least 1 (leave it out to use all the data)", self.limit)
        need(integer(self.seed) and self.seed >= 0, "--seed", "a non-negative integer",
             self.seed)
        if self.lr is not None:
            need(number(self.lr) and self.lr > 0, "--lr", "positive", self.lr)
        need(number(self.head_lr) and self.head_lr > 0, "--head-lr", "positive", self.head_lr)
        need(number(self.quora_fraction) and 0 < self.quora_fraction <= 1, "--quora-fraction",
             "in (0, 1]", self.quora_fraction)
        need(number(self.warmup_ratio) and 0 <= self.warmup_ratio <= 1, "--warmup-ratio",
             "in [0, 1]", self.warmup_ratio)
        need(number(self.weight_decay) and 0 <= self.weight_decay < float("inf"),
             "--weight-decay", "a non-negative number", self.weight_decay)
        need(number(self.clip_norm) and 0 < self.clip_norm < float("inf"), "--clip-norm",
             "positive", self.clip_norm)
        need(self.embedding_update in EMBEDDING_UPDATES, "--embedding-update",
             " or ".join(EMBEDDING_UPDATES), self.embedding_update)
        need(self.schedule in SCHEDULES, "--schedule", f"one of {', '.join(SCHEDULES)}",
             self.schedule)
        need(self.mode in ("finetune", "frozen"), "--mode", "finetune or frozen", self.mode)
        sentiment = sentiment_task_names()
        need(self.sentiment_task in sentiment, "--task", " or ".join(sentiment),
             self.sentiment_task)
        from training.precision import PRECISIONS
        need(self.precision in PRECISIONS, "--precision", f"one of {', '.join(PRECISIONS)}",
             self.precision)
        need(integer(self.log_every) and self.log_every >= 1, "--log-every", "at least 1",
             self.log_every)
        jit = self.jit_compile
        need(isinstance(jit, bool) or isinstance(jit, str) and jit.lower() in (
            "auto", "on", "off", "true", "false"), "--jit", "auto, on or off", jit)
        if self.tasks is not None:
            known = set(TASKS)
            need(len(self.tasks) > 0 and set(self.tasks) <= known, "--tasks",
                 f"a comma-separated list of {', '.join(sorted(known))}", ",".join(self.tasks))
        if self.buckets is not None:
            need(len(self.buckets) > 0 and all(integer(b) and b >= 3 for b in self.buckets),
                 "--buckets", "'auto' or lengths of at least 3", self.buckets)
        distill = VARIANTS[self.variant].distill
        need((self.teacher is not None) == distill, "--teacher",
             "given with --variant distill, and only then",
             None if self.teacher is None else " ".join(self.teacher))
        need(number(self.teacher_weight) and 0 <= self.teacher_weight <= 1, "--teacher-weight",
             "in [0, 1]", self.teacher_weight)
        need(number(self.distill_temperature) and 0 < self.distill_temperature < float("inf"),
             "--distill-temperature", "positive", self.distill_temperature)
        need(integer(self.extra_pairs) and self.extra_pairs >= 0, "--extra-pairs",
             "a count of at least 0", self.extra_pairs)
        need(not self.extra_pairs or distill, "--extra-pairs",
             "given with --variant distill only (a teacher labels the pairs)", self.extra_pairs)
        need(self.embedding_teacher is None or distill, "--embedding-teacher",
             "given with --variant distill only (beside --teacher)", self.embedding_teacher)
        need(number(self.embedding_weight) and 0 <= self.embedding_weight < float("inf"),
             "--embedding-weight", "a weight of at least 0", self.embedding_weight)
        need(number(self.calibration_holdout) and 0 <= self.calibration_holdout <= 0.5,
             "--calibration-holdout", "in [0, 0.5]", self.calibration_holdout)
        trained = self.tasks or VARIANTS[self.variant].tasks
        need(not self.calibration_holdout or "quora" in trained, "--calibration-holdout",
             "given only when quora is trained (it holds out quora-train pairs)",
             self.calibration_holdout)
        if self.student_layers is not None:
            need(integer(self.student_layers) and self.student_layers >= 1, "--student-layers",
                 "at least 1", self.student_layers)
        need(self.strategy in STRATEGIES, "--strategy", f"one of {', '.join(STRATEGIES)}",
             self.strategy)
        if self.tpu is not None:
            need(self.strategy == "tpu", "--tpu", "given with --strategy tpu only "
                 "(it names the TPU to train on)", self.tpu)
            need(isinstance(self.tpu, str) and self.tpu.strip(), "--tpu", "a TPU address",
                 self.tpu)
        if self.collective_timeout is not None:
            need(number(self.collective_timeout) and 0 < self.collective_timeout < float("inf"),
                 "--collective-timeout", "a positive number of seconds",
                 self.collective_timeout)
        for flag, value in (("--out", self.out), ("--data-dir", self.data_dir)):
            need(value is None or (isinstance(value, str) and value.strip()), flag,
                 "a path", value)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        for key in ("tasks", "buckets", "teacher"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        # Run folders written before the setting existed updated every row.
        values.setdefault("embedding_update", "dense")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def differences(self, other):
        """Names of settings that differ from `other`, ignoring the resumable ones."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return sorted(k for k in mine if k not in self.RESUMABLE_CHANGES
                      and _norm(mine[k]) != _norm(theirs[k]))


def _norm(value):
    return list(value) if isinstance(value, tuple) else value
