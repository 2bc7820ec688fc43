"""`TransformerEncoderBlock`: one post-LayerNorm BERT encoder layer."""

import keras

from kerasbert import fused_ops
from kerasbert.multi_head_self_attention import MultiHeadSelfAttention

_ACTIVATIONS = {
    # BERT's "gelu" is the exact erf form; the tanh forms are HF's gelu_new.
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
}


@keras.saving.register_keras_serializable(package="kerasbert")
class TransformerEncoderBlock(keras.layers.Layer):
    """Self-attention and feed-forward sublayers, each residual then LayerNorm (post-LN).

    Args:
        hidden_dim: model width H.
        num_heads: attention heads.
        intermediate_dim: feed-forward width.
        dropout: dropout on each sublayer output before the residual add.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        activation: feed-forward activation name (`gelu`, `gelu_new`, `relu`).

    Example:
    >>> import numpy as np
    >>> block = TransformerEncoderBlock(hidden_dim=32, num_heads=4,
    ...                                 intermediate_dim=37)
    >>> x = np.random.rand(2, 5, 32).astype("float32")
    >>> tuple(block(x, np.ones((2, 5), "int32")).shape)
    (2, 5, 32)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        intermediate_dim,
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        policy = self.dtype_policy

        self.attention = MultiHeadSelfAttention(
            hidden_dim, num_heads, dropout=attention_dropout,
            name="self_attention", dtype=policy)
        self.attention_dropout_layer = keras.layers.Dropout(
            dropout, name="attention_dropout", dtype=policy)
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="attention_layer_norm", dtype=policy)
        # The activation is applied in `call`, where training can fuse it.
        self.intermediate_dense = keras.layers.Dense(
            intermediate_dim, kernel_initializer=init, name="intermediate_dense", dtype=policy)
        self.output_dense = keras.layers.Dense(
            hidden_dim, kernel_initializer=init, name="output_dense", dtype=policy)
        self.output_dropout_layer = keras.layers.Dropout(
            dropout, name="output_dropout", dtype=policy)
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="output_layer_norm", dtype=policy)

    def build(self, x_shape, padding_mask_shape=None):
        input_shape = tuple(x_shape)
        self.attention.build(input_shape)
        self.attention_layer_norm.build(input_shape)
        self.intermediate_dense.build(input_shape)
        self.output_dense.build(input_shape[:-1] + (self.intermediate_dim,))
        self.output_layer_norm.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        attended = self.attention(x, padding_mask=padding_mask, training=training)
        if fused_ops.use_fused(self, training):
            # The same maths as below, as fused kernels (kerasbert.fused_ops):
            # left unfused, this elementwise work was ~30% of a CPU train step.
            x = self._fused_residual(x, attended, self.attention_dropout_layer,
                                     self.attention_layer_norm, training)
            activation = (fused_ops.gelu if self.activation == "gelu"
                          else _ACTIVATIONS[self.activation])
            ff = self.output_dense(activation(self.intermediate_dense(x)))
            return self._fused_residual(x, ff, self.output_dropout_layer,
                                        self.output_layer_norm, training)
        attended = self.attention_dropout_layer(attended, training=training)
        x = self.attention_layer_norm(x + attended)
        ff = _ACTIVATIONS[self.activation](self.intermediate_dense(x))
        ff = self.output_dense(ff)
        ff = self.output_dropout_layer(ff, training=training)
        return self.output_layer_norm(x + ff)

    def _fused_residual(self, x, h, dropout_layer, layer_norm, training):
        rate, seed = fused_ops.dropout_rate_and_seed(dropout_layer, training)
        return fused_ops.dropout_add_layer_norm(
            x, h, layer_norm.gamma, layer_norm.beta, seed=seed, rate=rate,
            epsilon=layer_norm.epsilon)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            activation=self.activation,
        )
        return config
