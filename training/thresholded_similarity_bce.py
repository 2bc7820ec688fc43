"""`ThresholdedSimilarityBCE`: the paper's BM STS loss for `model.fit`."""

import keras
import tensorflow as tf

from training import losses as task_losses


@keras.saving.register_keras_serializable(package="kerasbert")
class ThresholdedSimilarityBCE(keras.losses.Loss):
    """The paper's BM STS loss as a Keras loss: BCE of `score / 5` against `label > 2.5`.

    A thin wrapper: the value *is* `training.losses.thresholded_similarity_bce`
    (so the two training paths share one definition), including its
    weighting: with a sample weight it is `sum(w * loss) / max(sum(w), 1)`,
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
        return task_losses.thresholded_similarity_bce(
            tf.reshape(y_pred, [-1]), tf.reshape(y_true, [-1]), weight)

    def get_config(self):
        return {"name": self.name}
