"""The task losses, and `TaskLosses`: the one place a recipe's loss choice is made.

Every loss is a plain function of model outputs and labels returning a
scalar mean over the batch; an optional `weight` (B,) zeroes out rows
(padding) and normalises by the weight sum. `TaskLosses` says which of them
trains each `MultitaskBert` output and which sub-model feeds it (InfoNCE
needs the compared sentence vectors, not just the output); the custom loop,
`model.fit` (`MultitaskBert.train_step`) and the Keras losses of the
single-task fit all ask it.

Example:
>>> import numpy as np
>>> spec = TaskLosses(similarity="infonce", temperature=0.05)
>>> spec.submodel("similarity"), spec.submodel("sentiment")
('similarity_with_vectors', 'sentiment')
>>> u = np.eye(2, dtype="float32")
>>> out = {"similarity": np.array([5.0, 0.0]), "a": u, "b": u}
>>> round(float(spec("similarity", out, np.array([5.0, 4.5]))), 6)  # log(1 + e^-20)
0.0
"""

import dataclasses

import keras
import tensorflow as tf

from kerasbert.replicas import gather_rows, replica_info, replica_sum
from kerasbert_lite.tasks import benchmark_task

STS_THRESHOLD = 2.5  # the paper's thresholding: 0-2 -> 0, 3-5 -> 1
_EPS = 1e-7


def _mean(values, weight=None):
    values = tf.cast(values, tf.float32)
    if weight is None:
        return tf.reduce_mean(values)
    weight = tf.cast(weight, tf.float32)
    return tf.reduce_sum(values * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


def sentiment_cross_entropy(logits, labels, weight=None):
    """Softmax cross-entropy over the sentiment classes; labels are int ids."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))
    return _mean(losses, weight)


def binary_cross_entropy_logits(logits, labels, weight=None):
    """BCE of a logit against 0/1 labels (Quora)."""
    losses = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.float32), logits=tf.cast(logits, tf.float32))
    return _mean(losses, weight)


def thresholded_similarity_bce(scores, labels, weight=None):
    """The paper's BM STS loss: BCE of score/5 against (label > 2.5)."""
    p = tf.clip_by_value(tf.cast(scores, tf.float32) / 5.0, _EPS, 1.0 - _EPS)
    y = tf.cast(tf.cast(labels, tf.float32) > STS_THRESHOLD, tf.float32)
    losses = -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))
    return _mean(losses, weight)


def similarity_mse(scores, labels, weight=None):
    """Squared error of the 0-5 score."""
    diff = tf.cast(scores, tf.float32) - tf.cast(labels, tf.float32)
    return _mean(tf.square(diff), weight)


def info_nce(u, v, positive, temperature):
    """Symmetric InfoNCE with in-batch negatives.

    Row i of `u` should match row i of `v` and no other row of `v` (and vice
    versa). Only rows with `positive` (B,) true contribute; the rest still
    serve as negatives. Logits are cosine similarities over `temperature`.
    Returns 0 when the batch has no positive pair.

    Under a `tf.distribute` strategy each replica holds a share of the
    global batch: its rows are compared with every replica's (gathered,
    `kerasbert.replicas.gather_rows`) and the mean is over the global
    batch's positives, so the replicas' losses average to the one-device
    loss of the whole batch and the gradients sum to its gradient.
    """
    u = tf.math.l2_normalize(tf.cast(u, tf.float32), axis=-1)
    v = tf.math.l2_normalize(tf.cast(v, tf.float32), axis=-1)
    weight = tf.cast(positive, tf.float32)
    replica, replicas = replica_info()
    if replicas == 1:
        logits = tf.matmul(u, v, transpose_b=True) / temperature  # (B, B)
        targets = tf.range(tf.shape(logits)[0])
        a_to_b = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        b_to_a = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets, logits=tf.transpose(logits))
        return (tf.reduce_sum(0.5 * (a_to_b + b_to_a) * weight)
                / tf.maximum(tf.reduce_sum(weight), 1.0))
    # This replica's rows against the global batch's: (b, R * b), the
    # positive of local row i at global column replica * b + i.
    rows = tf.shape(u)[0]
    targets = replica * rows + tf.range(rows)
    a_to_b = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.matmul(u, gather_rows(v), transpose_b=True) / temperature)
    b_to_a = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.matmul(v, gather_rows(u), transpose_b=True) / temperature)
    positives = tf.maximum(replica_sum(tf.reduce_sum(weight)), 1.0)
    # Times `replicas`: the mean over replicas of these is the global mean.
    return tf.reduce_sum(0.5 * (a_to_b + b_to_a) * weight) * replicas / positives


def sentiment_distillation(logits, teacher_probabilities, temperature=1.0, weight=None):
    """Hinton's soft-target loss: T^2 * KL(teacher_T || student_T), per row.

    The teacher gives probabilities `p` (an ensemble's mean), so its
    tempered distribution is `p^(1/T)`, renormalised; the student's is
    `softmax(logits / T)`. The T^2 keeps gradient sizes comparable across
    temperatures. 0 when the student's distribution equals the teacher's.
    """
    p = tf.cast(teacher_probabilities, tf.float32)
    log_p = tf.math.log(tf.maximum(p, _EPS)) / temperature
    log_q = log_p - tf.reduce_logsumexp(log_p, axis=-1, keepdims=True)
    log_s = tf.nn.log_softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_q) * (log_q - log_s), axis=-1)
    return (temperature ** 2) * _mean(kl, weight)


def soft_binary_cross_entropy(logits, teacher_probabilities, weight=None):
    """BCE of a logit against the teacher's probability (soft labels), less its entropy.

    Subtracting the target's entropy makes it the KL divergence of two
    Bernoullis: the same gradient as BCE, and 0 at agreement.
    """
    p = tf.clip_by_value(tf.cast(teacher_probabilities, tf.float32), _EPS, 1.0 - _EPS)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=p, logits=tf.cast(logits, tf.float32))
    entropy = -(p * tf.math.log(p) + (1.0 - p) * tf.math.log(1.0 - p))
    return _mean(bce - entropy, weight)


def embedding_distillation(u, v, teacher_vectors):
    """Squared distance of the student's unit sentence vectors to the teacher's, both sentences.

    `|u/|u| - t|^2 = 2 - 2 cos(u, t)`, averaged over rows and the two
    sentences of each pair: 0 when every vector points the teacher's way, 4
    when opposite. The teacher's vectors carry far more than its one score
    per pair (every direction of a sentence, not one cosine), which is
    what a smaller student lacks to rank pairs as its teacher does.

    Args:
        u, v: (B, D) the student's compared vectors of sentences a and b.
        teacher_vectors: (B, 2D): the teacher's unit vectors of a, then of b.

    Example:
    >>> import numpy as np
    >>> u = np.array([[3.0, 0.0]], np.float32); v = np.array([[0.0, 2.0]], np.float32)
    >>> t = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)  # a agrees; b is 90 degrees off
    >>> round(float(embedding_distillation(u, v, t)), 6)     # (0 + 2) / 2
    1.0
    """
    u, v = tf.cast(u, tf.float32), tf.cast(v, tf.float32)
    teacher_vectors = tf.cast(teacher_vectors, tf.float32)
    width = u.shape[-1]
    if width is not None and teacher_vectors.shape[-1] is not None \
            and teacher_vectors.shape[-1] != 2 * width:
        raise ValueError(f"embedding distillation: the student's vectors are {width}-d, the "
                         f"teacher's {teacher_vectors.shape[-1] // 2}-d; they must match")
    width = tf.shape(u)[-1]

    def distance(student, teacher):
        return tf.reduce_sum(tf.square(tf.math.l2_normalize(student, axis=-1) - teacher), -1)

    return 0.5 * tf.reduce_mean(distance(u, teacher_vectors[:, :width])
                                + distance(v, teacher_vectors[:, width:]))


def distillation_loss(output, out, labels, teacher_weight, temperature=1.0):
    """Gold loss and teacher loss mixed: `(1 - w) * gold + w * teacher`.

    Args:
        output: `sentiment` (logits (B, C)), `paraphrase` (logit (B,)) or
            `similarity` (0-5 score (B,)).
        out: the student's output.
        labels: (B, 1 + K) float: column 0 the gold label (NaN where there
            is none: such rows get the teacher term only), then the
            teacher's soft outputs (K = C probabilities, or 1 value; pair
            rows may carry teacher vectors after it, which this ignores).
        teacher_weight: w in [0, 1].
        temperature: softens the sentiment distributions (KL term only).

    Example:
    >>> import numpy as np
    >>> y = np.array([[1.0, 0.9], [0.0, 0.2]], np.float32)   # gold, teacher p
    >>> logit = np.log(np.array([0.9, 0.2]) / (1 - np.array([0.9, 0.2])))
    >>> round(float(distillation_loss("paraphrase", logit, y, teacher_weight=1.0)), 6)
    0.0
    """
    labels = tf.cast(labels, tf.float32)
    gold, soft = labels[:, 0], labels[:, 1:]
    has_gold = tf.math.logical_not(tf.math.is_nan(gold))
    gold = tf.where(has_gold, gold, tf.zeros_like(gold))
    if output == "sentiment":
        hard = sentiment_cross_entropy(out, gold, weight=has_gold)
        teacher = sentiment_distillation(out, soft, temperature)
    elif output == "paraphrase":
        hard = binary_cross_entropy_logits(out, gold, weight=has_gold)
        teacher = soft_binary_cross_entropy(out, soft[:, 0])
    elif output == "similarity":
        hard = similarity_mse(out, gold, weight=has_gold)
        teacher = similarity_mse(out, soft[:, 0])
    else:
        raise ValueError(f"no distillation loss for output {output!r}")
    return (1.0 - teacher_weight) * hard + teacher_weight * teacher


# The STS losses that are functions of the score; "infonce", the table's third,
# is contrastive, on the sentence vectors (`TaskLosses`).
SIMILARITY_LOSSES = {
    "bce_threshold": thresholded_similarity_bce,
    "mse": similarity_mse,
}
SIMILARITY_LOSS_NAMES = benchmark_task("similarity").losses
assert set(SIMILARITY_LOSS_NAMES) == set(SIMILARITY_LOSSES) | {"infonce"}


@dataclasses.dataclass(frozen=True)
class TaskLosses:
    """Which loss trains each `MultitaskBert` output (the recipe's loss choice).

    Args:
        similarity: the STS loss, one of `SIMILARITY_LOSS_NAMES`.
        temperature: InfoNCE's temperature on cosine logits.
        positive_threshold: STS pairs labelled at least this are InfoNCE positives.
        quora_positives: add InfoNCE on Quora duplicates to Quora's BCE.
        mse_weight: weight of an MSE term added to STS InfoNCE (0: none).
        teacher_weight: distillation: labels are (B, 1 + K), the gold label
            then a teacher's soft outputs, and every output is trained by
            `distillation_loss` with this weight on the teacher (plus the
            InfoNCE terms of a contrastive recipe, on the gold positives).
            None: the losses above, on gold labels.
        distill_temperature: the sentiment KL term's temperature.
        embedding_weight: distillation of sentence vectors: pair labels are
            (B, 2 + 2D), the gold label, the teacher's score, then its unit
            vectors of a and b, and `embedding_distillation` of the
            student's compared vectors is added with this weight (0: none).
    """

    similarity: str = "bce_threshold"
    temperature: float = 0.05
    positive_threshold: float = 4.0
    quora_positives: bool = False
    mse_weight: float = 0.0
    teacher_weight: float = None
    distill_temperature: float = 1.0
    embedding_weight: float = 0.0

    def __post_init__(self):
        if self.similarity not in SIMILARITY_LOSS_NAMES:
            raise ValueError(f"unknown similarity loss {self.similarity!r}; choose from "
                             f"{', '.join(SIMILARITY_LOSS_NAMES)}")

    @property
    def contrastive(self):
        """Whether a loss needs in-batch negatives (the sentence vectors, whole batches)."""
        return self.similarity == "infonce" or self.quora_positives

    def submodel(self, output):
        """The `MultitaskBert.task_model` name whose outputs this loss reads."""
        if self._contrastive(output) or (self.embedding_weight and output != "sentiment"):
            return f"{output}_with_vectors"
        return output

    def _contrastive(self, output):
        return ((output == "paraphrase" and self.quora_positives)
                or (output == "similarity" and self.similarity == "infonce"))

    def __call__(self, output, out, labels):
        """The loss of `output` ("sentiment", "paraphrase", "similarity") on the sub-model's `out`.

        Under distillation the output is trained by `distillation_loss`,
        and a contrastive recipe adds its InfoNCE term on the gold positives
        (rows without a gold label are negatives only); the MSE that
        `mse_weight` adds to InfoNCE is then the distillation loss's own.
        With `embedding_weight`, pair outputs add `embedding_distillation`.
        """
        scores = out[output] if isinstance(out, dict) else out
        if self.teacher_weight is not None and len(labels.shape) == 2:
            loss = distillation_loss(output, scores, labels, self.teacher_weight,
                                     self.distill_temperature)
            if self._contrastive(output):
                loss += self._info_nce(output, out, self.gold_labels(output, labels))
            if self.embedding_weight and output != "sentiment":
                if labels.shape[-1] is not None and labels.shape[-1] <= 2:
                    raise ValueError(
                        f"embedding_weight={self.embedding_weight}, but the {output} labels "
                        "carry no teacher vectors (training.teacher.with_teacher_outputs("
                        "..., embedding_teacher=...))")
                loss += self.embedding_weight * embedding_distillation(
                    out["a"], out["b"], tf.cast(labels, tf.float32)[:, 2:])
            return loss
        if output == "sentiment":
            return sentiment_cross_entropy(scores, labels)
        if output == "paraphrase":
            if self.quora_positives:
                return (binary_cross_entropy_logits(scores, labels)
                        + self._info_nce(output, out, labels))
            return binary_cross_entropy_logits(scores, labels)
        if output != "similarity":
            raise ValueError(f"no loss for output {output!r}")
        if self.similarity == "infonce":
            loss = self._info_nce(output, out, labels)
            if self.mse_weight:
                loss += self.mse_weight * similarity_mse(scores, labels)
            return loss
        return SIMILARITY_LOSSES[self.similarity](scores, labels)

    def _info_nce(self, output, out, gold):
        """InfoNCE on the compared vectors; positives: Quora duplicates, STS >= the threshold.

        NaN gold (no label) compares false: such rows are negatives only.
        """
        gold = tf.cast(gold, tf.float32)
        positive = gold > 0.5 if output == "paraphrase" else gold >= self.positive_threshold
        return info_nce(out["a"], out["b"], positive, self.temperature)

    def gold_labels(self, output, labels):
        """The gold labels in `labels`: column 0 of (gold, teacher) distillation labels.

        Plain (B,) labels (a dev set, say) are returned as they are; the
        loss of a distillation recipe on them is the gold loss alone.
        """
        if self.teacher_weight is None or len(labels.shape) != 2:
            return labels
        gold = labels[:, 0]
        return tf.cast(gold, tf.int32) if output == "sentiment" else gold

    def keras_loss(self, output):
        """A Keras loss object for `output`, for compiling a single-task sub-model.

        Raises `ValueError` for a contrastive loss (it needs the vectors,
        which a sub-model's single output does not carry).
        """
        if self.teacher_weight is not None:
            raise ValueError(f"the distillation loss reads (gold, teacher) label pairs; train "
                             f"{output} through MultitaskBert.fit(task_losses=...)")
        if output == "sentiment":
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if self.submodel(output) != output:
            raise ValueError(f"the {output} loss is contrastive (InfoNCE); train it through "
                             "MultitaskBert.fit, which reads the sentence vectors")
        if output == "paraphrase":
            return keras.losses.BinaryCrossentropy(from_logits=True)
        if self.similarity == "mse":
            return keras.losses.MeanSquaredError(name="mse")
        return ThresholdedSimilarityBCE()


@keras.saving.register_keras_serializable(package="kerasbert")
class ThresholdedSimilarityBCE(keras.losses.Loss):
    """The paper's BM STS loss as a Keras loss: BCE of `score / 5` against `label > 2.5`.

    A thin wrapper: the value *is* `thresholded_similarity_bce`, including
    its weighting: with a sample weight it is `sum(w * loss) / max(sum(w), 1)`,
    so weight-0 padding rows do not count. The reduction is therefore always
    that mean.

    (Not `tf.vectorized_map` over the function to get per-example values:
    its batched ops need their inputs as compile-time constants, which made
    XLA recompile the whole train step on every step.)

    Example:
    >>> loss = ThresholdedSimilarityBCE()
    >>> round(float(loss([4.0, 1.0], [2.5, 2.5])), 4)  # p = 0.5 either way: log 2
    0.6931
    """

    def __init__(self, name="thresholded_similarity_bce", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            return self.call(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred, sample_weight=None):
        # Flatten: Keras may hand (B, 1) labels against (B,) scores.
        weight = None if sample_weight is None else tf.reshape(sample_weight, [-1])
        return thresholded_similarity_bce(tf.reshape(y_pred, [-1]), tf.reshape(y_true, [-1]),
                                          weight)

    def get_config(self):
        return {"name": self.name}
