"""The task heads on top of a `BertBackbone`: their layers, and the graphs `MultitaskBert` is made of.

* `MaskedMeanPooling`, `PairScore`: the two parameter-free layers the heads use.
* `Heads`: builds the head layers once and wires them into the three task
  graphs and the sub-models (see `MultitaskBert.task_model`).
"""

import keras
from keras import ops


def sentence_inputs(prefix=None):
    """A dict of three (B, T) int32 `keras.Input`s, as `BertTokenizer` returns.

    Without a prefix the inputs are named like their keys, which is what a
    model taking this dict at its top level wants.
    """
    return {k: keras.Input(shape=(None,), dtype="int32",
                           name=f"{prefix}_{k}" if prefix else k)
            for k in INPUT_KEYS}


INPUT_KEYS = ("token_ids", "segment_ids", "padding_mask")


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


class Heads:
    """The layers on top of the backbone, and the graphs they make.

    Layer names are part of the saved-weights API. The heads compute in
    float32 whatever the global policy: they are tiny, and scores, logits
    and cosines are where bf16's 8-bit mantissa would show.
    """

    DTYPE = "float32"

    def __init__(self, backbone, *, pair_encoding, pooling, paraphrase_head, similarity_head,
                 similarity_output, projection_dim, shared_projection, paraphrase_logit_init,
                 num_sentiment_classes, dropout):
        self.backbone, self.pair_encoding, self.pooling = backbone, pair_encoding, pooling
        self.head = {"paraphrase": paraphrase_head, "similarity": similarity_head}
        self.similarity_output = similarity_output
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        dense = lambda units, name: keras.layers.Dense(  # noqa: E731
            units, kernel_initializer=init, name=name, dtype=self.DTYPE)
        self.pooler = (MaskedMeanPooling(name="mean_pooling", dtype=self.DTYPE)
                       if pooling == "mean" else None)
        self.drop = keras.layers.Dropout(dropout, name="head_dropout", dtype=self.DTYPE)
        self.sentiment_dense = dense(num_sentiment_classes, "sentiment_dense")
        self.projections = {}
        if projection_dim and pair_encoding == "bi":
            shared = dense(projection_dim, "projection") if shared_projection else None
            for task in ("paraphrase", "similarity"):
                self.projections[task] = shared or dense(projection_dim, f"{task}_projection")
        self.pair_dense = {"paraphrase": dense(1, "paraphrase_dense"),
                           "similarity": dense(1, "similarity_dense")}
        # Scalar affine on dot/cosine scores; starts as the identity unless
        # the paraphrase logit is given a starting scale and threshold.
        scale, threshold = paraphrase_logit_init or (1.0, 0.0)
        self.affine = {
            "paraphrase": keras.layers.Dense(
                1, kernel_initializer=keras.initializers.Constant(scale),
                bias_initializer=keras.initializers.Constant(-scale * threshold),
                name="paraphrase_score_affine", dtype=self.DTYPE),
            "similarity": keras.layers.Dense(1, kernel_initializer="ones",
                                             name="similarity_score_affine", dtype=self.DTYPE),
        }

    def embed(self, inputs):
        out = self.backbone(inputs)
        if self.pooling == "pooled":
            return out["pooled_output"]
        if self.pooling == "cls":
            return out["sequence_output"][:, 0, :]  # (B,T,H) -> (B,H)
        return self.pooler(out["sequence_output"], inputs["padding_mask"])

    def pair_vectors(self, task, pair):
        return self.pair_vector(task, pair["a"]), self.pair_vector(task, pair["b"])

    def pair_vector(self, task, sentence):
        """Sentence -> the vector a bi-encoder's `task` head compares: the
        sentence vector, projected for dot/cosine heads that have a projection."""
        u = self.drop(self.embed(sentence))
        if self.head[task] != "concat" and task in self.projections:
            u = self.projections[task](u)
        return u

    def pair_output(self, task, u, v):
        """The task output of two compared vectors: the paraphrase logit, or
        the similarity on the 0-5 scale."""
        head = self.head[task]
        if head == "concat":
            raw = ops.squeeze(self.pair_dense[task](ops.concatenate([u, v], axis=-1)), -1)
        else:
            raw = PairScore(head, name=f"{task}_{head}", dtype="float32")(u, v)
            if task == "paraphrase" or head == "dot":
                # A learned scale and offset turn the raw score into a logit:
                # without the offset every topically close pair (most Quora
                # negatives) starts, and stays, "duplicate".
                raw = ops.squeeze(self.affine[task](raw[:, None]), -1)
        return self.similarity_scale(raw) if task == "similarity" else raw

    def similarity_scale(self, raw):
        if self.similarity_output == "sigmoid":
            return 5.0 * ops.sigmoid(raw)
        if self.similarity_output == "relu":
            return 5.0 * ops.relu(raw)
        return raw

    def pair_task_output(self, task, pair):
        """(output, (u, v) or None): the task output and the vectors a dot/cosine head compared."""
        if self.pair_encoding == "cross":
            raw = ops.squeeze(self.pair_dense[task](self.drop(self.embed(pair["pair"]))), -1)
            return (self.similarity_scale(raw) if task == "similarity" else raw), None
        u, v = self.pair_vectors(task, pair)
        return self.pair_output(task, u, v), (None if self.head[task] == "concat" else (u, v))

    def pair_inputs(self, task):
        if self.pair_encoding == "cross":
            return {"pair": sentence_inputs(f"{task}_pair")}
        return {"a": sentence_inputs(f"{task}_a"), "b": sentence_inputs(f"{task}_b")}

    def multitask_graph(self):
        """(inputs, outputs, {task: compared vectors or None}) of the three tasks."""
        identity = lambda name: keras.layers.Identity(name=name, dtype=self.DTYPE)  # noqa: E731
        inputs = {"sentiment": sentence_inputs(), "paraphrase": self.pair_inputs("paraphrase"),
                  "similarity": self.pair_inputs("similarity")}
        outputs = {"sentiment": identity("sentiment")(
            self.sentiment_dense(self.drop(self.embed(inputs["sentiment"]))))}
        vectors = {}
        for task in ("paraphrase", "similarity"):
            out, vectors[task] = self.pair_task_output(task, inputs[task])
            outputs[task] = identity(task)(out)
        return inputs, outputs, vectors

    def submodels(self, inputs, outputs, vectors):
        """The per-task sub-models (see `MultitaskBert.task_model`)."""
        submodels = {task: keras.Model(inputs[task], outputs[task], name=f"{task}_model")
                     for task in ("sentiment", "paraphrase", "similarity")}
        # Outputs plus the compared vectors, for contrastive losses on them.
        for task in ("paraphrase", "similarity"):
            if vectors[task] is not None:
                submodels[f"{task}_with_vectors"] = keras.Model(
                    inputs[task], {task: outputs[task], "a": vectors[task][0],
                                   "b": vectors[task][1]}, name=f"{task}_with_vectors_model")
        emb_in = sentence_inputs()
        emb = self.embed(emb_in)
        if "similarity" in self.projections:
            emb = self.projections["similarity"](emb)
        submodels["embedding"] = keras.Model(emb_in, emb, name="embedding_model")
        if self.pair_encoding == "bi":
            # A bi-encoder's pair output split in two: each sentence's vector
            # once (unique sentences, each at its own length), then the head.
            for task in ("paraphrase", "similarity"):
                sentence = sentence_inputs()
                submodels[f"{task}_vector"] = keras.Model(
                    sentence, self.pair_vector(task, sentence), name=f"{task}_vector_model")
                width = submodels[f"{task}_vector"].outputs[0].shape[-1]
                u, v = (keras.Input(shape=(width,), dtype=self.DTYPE, name=f"{task}_vector_{k}")
                        for k in ("a", "b"))
                submodels[f"{task}_from_vectors"] = keras.Model(
                    [u, v], self.pair_output(task, u, v), name=f"{task}_from_vectors_model")
            pe_in = self.pair_inputs("pair_embeddings")
            u, v = self.pair_vectors("similarity", pe_in)
            submodels["pair_embeddings"] = keras.Model(pe_in, {"a": u, "b": v},
                                                       name="pair_embeddings_model")
        return submodels
