"""`StreamingPearson`: the CS224N STS metric as a Keras metric."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kerasbert")
class StreamingPearson(keras.metrics.Metric):
    """Pearson r between predictions and labels over every example seen.

    Unlike `keras.metrics.PearsonCorrelation` (a mean of per-batch
    correlations), this accumulates sums over the whole epoch, so it is the
    CS224N STS metric (`np.corrcoef` over the dev set) when `evaluate` sees
    each dev example once. Rows with sample weight 0 (padding) are ignored.

    Example:
    >>> m = StreamingPearson()
    >>> m.update_state([1.0, 2.0], [1.0, 2.5]); m.update_state([3.0], [2.9])
    >>> round(float(m.result()), 4)  # np.corrcoef([1, 2, 3], [1, 2.5, 2.9])[0, 1]
    0.9484
    """

    _SUMS = ("n", "x", "y", "xx", "yy", "xy")

    def __init__(self, name="pearson", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._sums = [self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                        name=f"sum_{k}") for k in self._SUMS]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        x = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        w = (tf.ones_like(x) if sample_weight is None
             else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        for var, value in zip(self._sums, (w, w * x, w * y, w * x * x, w * y * y, w * x * y)):
            var.assign_add(tf.reduce_sum(value))

    def result(self):
        n, sx, sy, sxx, syy, sxy = (tf.maximum(s, 0.0) if k in ("n", "xx", "yy") else s
                                    for k, s in zip(self._SUMS, self._sums))
        n = tf.maximum(n, 1.0)
        cov = sxy / n - (sx / n) * (sy / n)
        var_x = tf.maximum(sxx / n - tf.square(sx / n), 0.0)
        var_y = tf.maximum(syy / n - tf.square(sy / n), 0.0)
        # A constant prediction has no correlation: 0, as training.metrics says.
        return tf.math.divide_no_nan(cov, tf.sqrt(var_x * var_y))

    def reset_state(self):
        for var in self._sums:
            var.assign(0.0)
