"""`MultitaskBert`: one shared BERT encoder, three CS224N task heads."""

import keras
from keras import ops

from kerasbert.bert_backbone import BertBackbone
from kerasbert.masked_mean_pooling import MaskedMeanPooling
from kerasbert.pair_score import PairScore

_INPUT_KEYS = ("token_ids", "segment_ids", "padding_mask")


def sentence_inputs(prefix=None):
    """A dict of three (B, T) int32 `keras.Input`s, as `BertTokenizer` returns.

    Without a prefix the inputs are named like their keys, which is what a
    model taking this dict at its top level wants.
    """
    return {k: keras.Input(shape=(None,), dtype="int32",
                           name=f"{prefix}_{k}" if prefix else k)
            for k in _INPUT_KEYS}


@keras.saving.register_keras_serializable(package="kerasbert")
class MultitaskBert(keras.Model):
    """Functional multitask model over one shared `BertBackbone`.

    Inputs (nested dict of int32 (B, T) tensors, each `{token_ids,
    segment_ids, padding_mask}` as `BertTokenizer` returns them):
      - `sentiment`: one sentence;
      - `paraphrase` / `similarity`: `{"a": ..., "b": ...}` (each sentence
        encoded alone, `pair_encoding="bi"`) or `{"pair": ...}`
        (`[CLS] a [SEP] b [SEP]` encoded together, `pair_encoding="cross"`).

    Outputs: `sentiment` (B, 5) logits, `paraphrase` (B,) logit,
    `similarity` (B,) score on the STS 0-5 scale.

    Per-task sub-models sharing the same weights (so a training step or an
    export only runs the encoder for the task at hand) come from
    `task_model(name)`: the three tasks, `"embedding"` (one sentence ->
    sentence vector) and, for bi-encoders, `"pair_embeddings"`
    (pair -> `{"a", "b"}` vectors the similarity head compares) and, for
    dot/cosine heads, `"paraphrase_with_vectors"` / `"similarity_with_vectors"`
    (the task output plus the compared vectors, one encoder pass).

    Args:
        backbone: a `BertBackbone`.
        pair_encoding: `"bi"` or `"cross"`.
        pooling: sentence vector from the encoder: `"pooled"` (tanh pooler,
            the paper's choice), `"mean"` (masked mean) or `"cls"`.
        paraphrase_head: `"concat"` (linear on [u; v]), `"dot"` (dot product of
            projections) or `"cosine"` (cosine of projections); dot and cosine
            scores pass a learned scalar affine to become the logit. Ignored
            for cross encoding (linear on the pair).
        similarity_head: `"concat"`, `"dot"` (with the affine) or `"cosine"`
            (raw, the paper's DPS-MSE).
        similarity_output: how the raw similarity becomes 0-5: `"sigmoid"`
            (5 * sigmoid), `"linear"` (as is) or `"relu"` (5 * relu, for cosine).
        projection_dim: r, the width of the projections used by dot/cosine
            heads; `None` compares the sentence vectors themselves.
        shared_projection: one projection for both pair tasks, or one each.
        paraphrase_logit_init: `(scale, threshold)`: the paraphrase affine
            starts as `scale * (score - threshold)` instead of the identity.
            The affine is two scalars that Adam moves by about the learning
            rate per step, so from the identity a cosine head (scores in
            [-1, 1]) cannot reach a steep, offset logit within an epoch:
            the ranking is learned but the decision stays at cosine 0.
        num_sentiment_classes: 5 for SST, 2 for CFIMDB.
        dropout: dropout on sentence vectors before the heads.

    Example:
    >>> import numpy as np
    >>> from kerasbert import BertBackbone, BertConfig
    >>> model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()),
    ...                       paraphrase_head="dot", similarity_head="cosine",
    ...                       similarity_output="relu", projection_dim=16)
    >>> s = {k: np.ones((2, 8), "int32") for k in
    ...      ("token_ids", "segment_ids", "padding_mask")}
    >>> out = model({"sentiment": s, "paraphrase": {"a": s, "b": s},
    ...              "similarity": {"a": s, "b": s}})
    >>> tuple(out["sentiment"].shape), tuple(out["similarity"].shape)
    ((2, 5), (2,))
    """

    def __init__(
        self,
        backbone,
        pair_encoding="bi",
        pooling="pooled",
        paraphrase_head="concat",
        similarity_head="concat",
        similarity_output="sigmoid",
        projection_dim=None,
        shared_projection=True,
        paraphrase_logit_init=None,
        num_sentiment_classes=5,
        dropout=0.1,
        **kwargs,
    ):
        if pair_encoding not in ("bi", "cross"):
            raise ValueError(f"pair_encoding must be 'bi' or 'cross', got {pair_encoding!r}")
        if pooling not in ("pooled", "mean", "cls"):
            raise ValueError(f"pooling must be 'pooled', 'mean' or 'cls', got {pooling!r}")
        for head in (paraphrase_head, similarity_head):
            if head not in ("concat", "dot", "cosine"):
                raise ValueError(f"pair head must be concat/dot/cosine, got {head!r}")
        if similarity_output not in ("sigmoid", "linear", "relu"):
            raise ValueError(f"similarity_output must be sigmoid/linear/relu, got {similarity_output!r}")
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        # The heads compute in float32 whatever the global policy: they are
        # tiny, and scores, logits and cosines are where bf16's 8-bit
        # mantissa would show.
        head_dtype = "float32"
        dense = lambda units, name: keras.layers.Dense(  # noqa: E731
            units, kernel_initializer=init, name=name, dtype=head_dtype)

        # --- layers (names are part of the saved-weights API) ---
        pooler = MaskedMeanPooling(name="mean_pooling", dtype=head_dtype) if pooling == "mean" else None
        drop = keras.layers.Dropout(dropout, name="head_dropout", dtype=head_dtype)
        sentiment_dense = dense(num_sentiment_classes, "sentiment_dense")
        uses_projection = projection_dim and pair_encoding == "bi"
        projections = {}
        if uses_projection:
            shared = dense(projection_dim, "projection") if shared_projection else None
            for task in ("paraphrase", "similarity"):
                projections[task] = shared or dense(projection_dim, f"{task}_projection")
        para_dense = dense(1, "paraphrase_dense")
        sim_dense = dense(1, "similarity_dense")
        # Scalar affine on dot/cosine scores; starts as the identity unless
        # the paraphrase logit is given a starting scale and threshold.
        if paraphrase_logit_init is not None:
            paraphrase_logit_init = tuple(float(x) for x in paraphrase_logit_init)
            if len(paraphrase_logit_init) != 2:
                raise ValueError("paraphrase_logit_init must be (scale, threshold), "
                                 f"got {paraphrase_logit_init!r}")
        scale, threshold = paraphrase_logit_init or (1.0, 0.0)
        affine = {
            "paraphrase": keras.layers.Dense(
                1, kernel_initializer=keras.initializers.Constant(scale),
                bias_initializer=keras.initializers.Constant(-scale * threshold),
                name="paraphrase_score_affine", dtype=head_dtype),
            "similarity": keras.layers.Dense(1, kernel_initializer="ones",
                                             name="similarity_score_affine", dtype=head_dtype),
        }

        def embed(inputs):
            out = backbone(inputs)
            if pooling == "pooled":
                return out["pooled_output"]
            if pooling == "cls":
                return out["sequence_output"][:, 0, :]  # (B,T,H) -> (B,H)
            return pooler(out["sequence_output"], inputs["padding_mask"])

        def pair_vectors(task, pair):
            u, v = drop(embed(pair["a"])), drop(embed(pair["b"]))
            if task in projections:
                u, v = projections[task](u), projections[task](v)
            return u, v

        def pair_raw(task, head, pair):
            """(raw score, (u, v) or None): the vectors a dot/cosine head compared."""
            if pair_encoding == "cross":
                dense_layer = para_dense if task == "paraphrase" else sim_dense
                return ops.squeeze(dense_layer(drop(embed(pair["pair"]))), -1), None
            if head == "concat":
                u, v = drop(embed(pair["a"])), drop(embed(pair["b"]))
                dense_layer = para_dense if task == "paraphrase" else sim_dense
                return ops.squeeze(dense_layer(ops.concatenate([u, v], axis=-1)), -1), None
            u, v = pair_vectors(task, pair)
            score = PairScore(head, name=f"{task}_{head}", dtype="float32")(u, v)
            if task == "paraphrase" or head == "dot":
                # A learned scale and offset turn the raw score into a logit:
                # without the offset every topically close pair (most Quora
                # negatives) starts, and stays, "duplicate".
                score = ops.squeeze(affine[task](score[:, None]), -1)
            return score, (u, v)

        def pair_inputs(task):
            if pair_encoding == "cross":
                return {"pair": sentence_inputs(f"{task}_pair")}
            return {"a": sentence_inputs(f"{task}_a"), "b": sentence_inputs(f"{task}_b")}

        sent_in = sentence_inputs()
        para_in = pair_inputs("paraphrase")
        sim_in = pair_inputs("similarity")
        sentiment = keras.layers.Identity(name="sentiment", dtype=head_dtype)(sentiment_dense(drop(embed(sent_in))))
        para_raw, para_vectors = pair_raw("paraphrase", paraphrase_head, para_in)
        paraphrase = keras.layers.Identity(name="paraphrase", dtype=head_dtype)(para_raw)
        raw, sim_vectors = pair_raw("similarity", similarity_head, sim_in)
        if similarity_output == "sigmoid":
            raw = 5.0 * ops.sigmoid(raw)
        elif similarity_output == "relu":
            raw = 5.0 * ops.relu(raw)
        similarity = keras.layers.Identity(name="similarity", dtype=head_dtype)(raw)

        super().__init__(
            inputs={"sentiment": sent_in, "paraphrase": para_in, "similarity": sim_in},
            outputs={"sentiment": sentiment, "paraphrase": paraphrase, "similarity": similarity},
            **kwargs,
        )
        self.backbone = backbone
        self.pair_encoding = pair_encoding
        self.pooling = pooling
        self.paraphrase_head = paraphrase_head
        self.similarity_head = similarity_head
        self.similarity_output = similarity_output
        self.projection_dim = projection_dim
        self.shared_projection = shared_projection
        self.paraphrase_logit_init = paraphrase_logit_init
        self.num_sentiment_classes = num_sentiment_classes
        self.dropout = dropout

        # Sub-models reuse the layers above, hence the weights. Kept out of
        # Keras' attribute tracking so saving sees each weight once.
        submodels = {
            "sentiment": keras.Model(sent_in, sentiment, name="sentiment_model"),
            "paraphrase": keras.Model(para_in, paraphrase, name="paraphrase_model"),
            "similarity": keras.Model(sim_in, similarity, name="similarity_model"),
        }
        # Outputs plus the compared vectors, for contrastive losses on them.
        for task, inputs, out, vectors in (("paraphrase", para_in, paraphrase, para_vectors),
                                           ("similarity", sim_in, similarity, sim_vectors)):
            if vectors is not None:
                submodels[f"{task}_with_vectors"] = keras.Model(
                    inputs, {task: out, "a": vectors[0], "b": vectors[1]},
                    name=f"{task}_with_vectors_model")
        emb_in = sentence_inputs()
        emb = embed(emb_in)
        if "similarity" in projections:
            emb = projections["similarity"](emb)
        submodels["embedding"] = keras.Model(emb_in, emb, name="embedding_model")
        if pair_encoding == "bi":
            pe_in = pair_inputs("pair_embeddings")
            u, v = pair_vectors("similarity", pe_in)
            submodels["pair_embeddings"] = keras.Model(pe_in, {"a": u, "b": v},
                                                       name="pair_embeddings_model")
        object.__setattr__(self, "_submodels", submodels)

    def task_model(self, name):
        """The sub-model for `name`: a task, `"embedding"` or `"pair_embeddings"`."""
        if name not in self._submodels:
            raise KeyError(f"no sub-model {name!r}; have {sorted(self._submodels)}")
        return self._submodels[name]

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "pair_encoding": self.pair_encoding,
            "pooling": self.pooling,
            "paraphrase_head": self.paraphrase_head,
            "similarity_head": self.similarity_head,
            "similarity_output": self.similarity_output,
            "projection_dim": self.projection_dim,
            "shared_projection": self.shared_projection,
            "paraphrase_logit_init": self.paraphrase_logit_init,
            "num_sentiment_classes": self.num_sentiment_classes,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = config.pop("backbone")
        if isinstance(backbone, dict):
            backbone = keras.layers.deserialize(backbone)
        return cls(backbone=backbone, **config)
