"""`MaskedMeanPooling`: the mean of a sentence's real token vectors."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasbert")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the token vectors where `padding_mask` is 1: (B,T,H),(B,T) -> (B,H).

    The sentence vector sentence-transformers models such as all-MiniLM-L6-v2
    were trained to produce (their [CLS] pooler was never trained). A row with
    no real token gives zeros rather than NaN.

    Example:
    >>> import numpy as np
    >>> sequence = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1, 3, 2)
    >>> mask = np.array([[1, 1, 0]])                                  # the last is padding
    >>> np.asarray(MaskedMeanPooling()(sequence, mask)).tolist()
    [[2.0, 3.0]]
    """

    def call(self, sequence, padding_mask):
        # expand_dims, not [:, :, None]: TFLite cannot lower a new-axis strided
        # slice when both B and T are dynamic (length-trimmed export).
        mask = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), -1)  # (B,T) -> (B,T,1)
        total = ops.sum(sequence * mask, axis=1)
        count = ops.maximum(ops.sum(mask, axis=1), 1.0)
        return total / count

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[2])
