"""`PairScore`: a parameter-free score of two sentence vectors."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasbert")
class PairScore(keras.layers.Layer):
    """Scores two sentence vectors without parameters: `dot` or `cosine`.

    (B,E),(B,E) -> (B,). Computed in float32, so cosine stays stable under
    mixed precision; a zero vector has cosine 0 with anything.

    Args:
        kind: `"dot"` (the DPS heads) or `"cosine"` (DPS-MSE, InfoNCE).

    Example:
    >>> import numpy as np
    >>> a, b = np.array([[3.0, 4.0]]), np.array([[6.0, 8.0]])
    >>> float(PairScore("dot")(a, b)[0]), float(PairScore("cosine")(a, b)[0])
    (50.0, 1.0)
    """

    def __init__(self, kind, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("dot", "cosine"):
            raise ValueError(f"PairScore kind must be 'dot' or 'cosine', got {kind!r}")
        self.kind = kind

    def call(self, a, b):
        a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
        if self.kind == "cosine":
            a = a / ops.maximum(ops.norm(a, axis=-1, keepdims=True), 1e-8)
            b = b / ops.maximum(ops.norm(b, axis=-1, keepdims=True), 1e-8)
        return ops.sum(a * b, axis=-1)

    def compute_output_shape(self, a_shape, b_shape=None):
        return (a_shape[0],)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}
