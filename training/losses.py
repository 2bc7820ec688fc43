"""Per-task losses. Each is a plain function of model outputs and labels.

Every loss returns a scalar mean over the batch. Optional `weight` (B,)
zeroes out rows (padding) and normalises by the weight sum.
"""

import tensorflow as tf

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
    """
    u = tf.math.l2_normalize(tf.cast(u, tf.float32), axis=-1)
    v = tf.math.l2_normalize(tf.cast(v, tf.float32), axis=-1)
    logits = tf.matmul(u, v, transpose_b=True) / temperature  # (B, B)
    targets = tf.range(tf.shape(logits)[0])
    a_to_b = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    b_to_a = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.transpose(logits))
    weight = tf.cast(positive, tf.float32)
    return tf.reduce_sum(0.5 * (a_to_b + b_to_a) * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


SIMILARITY_LOSSES = {
    "bce_threshold": thresholded_similarity_bce,
    "mse": similarity_mse,
}
