"""`BertBackbone`: the BERT encoder as a functional Keras model."""

import dataclasses

import keras

from kerasbert.bert_config import BertConfig
from kerasbert.bert_embeddings import BertEmbeddings
from kerasbert.transformer_encoder_block import TransformerEncoderBlock


@keras.saving.register_keras_serializable(package="kerasbert")
class BertBackbone(keras.Model):
    """BERT encoder: embeddings, `num_layers` post-LN blocks and the tanh pooler.

    Inputs are a dict of dense int32 tensors of shape (B, T): `token_ids`,
    `segment_ids` and `padding_mask` (1 for real tokens), exactly what
    `BertTokenizer` returns. Outputs are a dict: `sequence_output` (B, T, H)
    and `pooled_output` (B, H) = tanh(dense(sequence_output[:, 0])).

    Layer names (`embeddings`, `transformer_layer_{i}`, `pooler_dense`) are
    the weight-conversion table's API: do not rename them.

    Args:
        vocabulary_size, hidden_dim, num_layers, num_heads, intermediate_dim,
        max_sequence_length, num_segments, dropout, attention_dropout,
        layer_norm_epsilon, activation: see `BertConfig`.

    Example:
    >>> import numpy as np
    >>> backbone = BertBackbone.from_bert_config(BertConfig.tiny())
    >>> batch = {"token_ids": np.ones((2, 8), "int32"),
    ...          "segment_ids": np.zeros((2, 8), "int32"),
    ...          "padding_mask": np.ones((2, 8), "int32")}
    >>> out = backbone(batch)
    >>> tuple(out["sequence_output"].shape), tuple(out["pooled_output"].shape)
    ((2, 8, 32), (2, 32))
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        max_sequence_length=512,
        num_segments=2,
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        activation="gelu",
        dtype=None,
        **kwargs,
    ):
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")

        x = BertEmbeddings(
            vocabulary_size=vocabulary_size,
            hidden_dim=hidden_dim,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="embeddings",
        )(token_ids, segment_ids)
        for i in range(num_layers):
            x = TransformerEncoderBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                activation=activation,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )(x, padding_mask=padding_mask)
        cls_vector = x[:, 0, :]  # (B,T,H) -> (B,H): the [CLS] position
        pooled = keras.layers.Dense(
            hidden_dim,
            activation="tanh",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=dtype,
            name="pooler_dense",
        )(cls_vector)

        super().__init__(
            inputs={"token_ids": token_ids, "segment_ids": segment_ids,
                    "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation

    @classmethod
    def from_bert_config(cls, config, **kwargs):
        """Builds a randomly initialised backbone from a `BertConfig`."""
        fields = dataclasses.asdict(config)
        fields.pop("lowercase")  # a tokenizer setting, not an architecture one
        return cls(**fields, **kwargs)

    @property
    def bert_config(self):
        return BertConfig(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            max_sequence_length=self.max_sequence_length,
            num_segments=self.num_segments,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            activation=self.activation,
        )

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "num_segments": self.num_segments,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
            # Without it a mixed-precision backbone reloads as float32. The
            # functional Model drops its own `dtype`, so read the layers' policy.
            "dtype": keras.dtype_policies.serialize(
                self.get_layer("embeddings").dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
