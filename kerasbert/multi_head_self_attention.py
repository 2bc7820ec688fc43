"""`MultiHeadSelfAttention`: BERT's scaled dot-product self-attention."""

import math

import keras
from keras import ops

from kerasbert import fused_ops

# Dimension key used in the shape comments below:
#   B: batch size           T: sequence length (queries and keys)
#   N: number of heads      D: head width (H // N)
#   H: hidden width


@keras.saving.register_keras_serializable(package="kerasbert")
class MultiHeadSelfAttention(keras.layers.Layer):
    """softmax(Q K^T / sqrt(D) + mask) V over `num_heads` heads, then a projection.

    Written out rather than using `keras.layers.MultiHeadAttention` so the
    weight layout matches BERT checkpoints one-to-one (a (H, H) kernel for each
    of query/key/value/output) and any head count that divides H works,
    e.g. MiniLM's 12 heads of 32.

    Args:
        hidden_dim: model width H.
        num_heads: number of heads N; must divide `hidden_dim`.
        dropout: dropout rate on the attention probabilities.

    Call args:
        x: (B, T, H) float tensor.
        padding_mask: optional (B, T) tensor, 1/True for real tokens. Padded
            keys receive an additive -1e9 and so ~0 probability.

    Example:
    >>> import numpy as np
    >>> attn = MultiHeadSelfAttention(hidden_dim=32, num_heads=4)
    >>> x = np.random.rand(2, 5, 32).astype("float32")
    >>> tuple(attn(x, np.ones((2, 5), "int32")).shape)
    (2, 5, 32)
    """

    def __init__(self, hidden_dim, num_heads, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim={hidden_dim} not divisible by num_heads={num_heads}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout

        def dense(name):
            return keras.layers.Dense(
                hidden_dim,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name=name, dtype=self.dtype_policy)

        self.query = dense("query")
        self.key = dense("key")
        self.value = dense("value")
        self.output_dense = dense("output")
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=self.dtype_policy)

    def build(self, x_shape, padding_mask_shape=None):
        for layer in (self.query, self.key, self.value, self.output_dense):
            layer.build(x_shape)
        self.built = True

    def _split_heads(self, x, batch, seq_len):
        x = ops.reshape(x, (batch, seq_len, self.num_heads, self.head_dim))  # (B,T,H)->(B,T,N,D)
        return ops.transpose(x, (0, 2, 1, 3))  # (B,T,N,D)->(B,N,T,D)

    def call(self, x, padding_mask=None, training=None):
        batch, seq_len = ops.shape(x)[0], ops.shape(x)[1]
        q = self._split_heads(self.query(x), batch, seq_len)  # (B,N,T,D)
        k = self._split_heads(self.key(x), batch, seq_len)    # (B,N,T,D)
        v = self._split_heads(self.value(x), batch, seq_len)  # (B,N,T,D)

        # Scale q before the matmul: the same maths, one (B,N,T,D) multiply
        # instead of a (B,N,T,T) one.
        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (B,N,T,T)
        if fused_ops.use_fused(self, training):
            return self._attend(self._fused_probs(scores, padding_mask, training), v, batch,
                                seq_len)
        # Softmax in float32 so bf16/fp16 training stays stable and -1e9 fits.
        scores = ops.cast(scores, "float32")
        if padding_mask is not None:
            scores = scores + _additive_mask(padding_mask)
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        probs = self.dropout_layer(probs, training=training)
        return self._attend(probs, v, batch, seq_len)

    def _fused_probs(self, scores, padding_mask, training):
        # Mask, float32 softmax and dropout as one XLA kernel.
        bias = (ops.zeros((1, 1, 1, 1), "float32") if padding_mask is None
                else _additive_mask(padding_mask))
        rate, seed = fused_ops.dropout_rate_and_seed(self.dropout_layer, training)
        return fused_ops.masked_softmax_dropout(scores, bias, seed=seed, rate=rate)

    def _attend(self, probs, v, batch, seq_len):
        context = ops.matmul(probs, v)  # (B,N,T,D)
        context = ops.transpose(context, (0, 2, 1, 3))  # (B,N,T,D)->(B,T,N,D)
        context = ops.reshape(context, (batch, seq_len, self.hidden_dim))  # (B,T,N,D)->(B,T,H)
        return self.output_dense(context)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                      dropout=self.dropout)
        return config


def _additive_mask(padding_mask):
    """(B,T) 1/0 mask -> (B,1,1,T) float32: 0 for real keys, -1e9 for padding."""
    # expand_dims, not [:, None, None, :]: TFLite cannot lower a new-axis
    # strided slice when both B and T are dynamic (length-trimmed export).
    keep = ops.expand_dims(ops.cast(padding_mask, "float32"), (1, 2))  # (B,T)->(B,1,1,T)
    return (1.0 - keep) * -1e9
