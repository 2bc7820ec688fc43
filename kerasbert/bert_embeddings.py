"""`BertEmbeddings`: token + position + segment embeddings, LayerNorm, dropout."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasbert")
class BertEmbeddings(keras.layers.Layer):
    """Sums token, learned absolute position and segment embeddings.

    Args:
        vocabulary_size: number of token ids.
        hidden_dim: embedding width.
        max_sequence_length: number of position embeddings.
        num_segments: number of segment (token type) ids.
        dropout: dropout rate applied after the LayerNorm.
        layer_norm_epsilon: LayerNorm epsilon.

    Example:
    >>> import numpy as np
    >>> layer = BertEmbeddings(vocabulary_size=99, hidden_dim=32,
    ...                        max_sequence_length=64)
    >>> ids = np.ones((2, 10), "int32")
    >>> tuple(layer(ids, ids * 0).shape)
    (2, 10, 32)
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        max_sequence_length=512,
        num_segments=2,
        dropout=0.1,
        layer_norm_epsilon=1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, hidden_dim, embeddings_initializer=init,
            name="token_embedding", dtype=self.dtype_policy)
        self.position_embedding = keras.layers.Embedding(
            max_sequence_length, hidden_dim, embeddings_initializer=init,
            name="position_embedding", dtype=self.dtype_policy)
        self.segment_embedding = keras.layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=init,
            name="segment_embedding", dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="layer_norm", dtype=self.dtype_policy)
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=self.dtype_policy)

    def build(self, token_ids_shape, segment_ids_shape=None):
        self.token_embedding.build(token_ids_shape)
        self.position_embedding.build((None,))
        self.segment_embedding.build(token_ids_shape)
        self.layer_norm.build(tuple(token_ids_shape) + (self.hidden_dim,))
        self.built = True

    def call(self, token_ids, segment_ids, training=None):
        seq_len = ops.shape(token_ids)[1]
        # Slicing the table (rather than a gather on arange) keeps the position
        # term a broadcast add, which XLA and TFLite fold cheaply.
        positions = self.position_embedding.embeddings[:seq_len]  # (T, H)
        x = (self.token_embedding(token_ids)
             + ops.cast(positions, self.compute_dtype)[None]
             + self.segment_embedding(segment_ids))
        x = self.layer_norm(x)
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, token_ids_shape, segment_ids_shape=None):
        return tuple(token_ids_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            max_sequence_length=self.max_sequence_length,
            num_segments=self.num_segments,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
