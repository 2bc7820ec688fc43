"""`MultitaskBert`: one shared BERT encoder, three CS224N task heads."""

import keras

from kerasbert.heads import Heads

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
    (the task output plus the compared vectors, one encoder pass). A
    bi-encoder's pair output also comes in two halves, `"{task}_vector"`
    (one sentence -> the vector its head compares) and
    `"{task}_from_vectors"` (`[u, v]` -> the task output), so evaluation
    encodes each distinct sentence once.

    Training goes through `task_loss` / `task_gradients`, the losses of a
    `kerasbert.losses.TaskLosses`: `fit` runs them in `train_step` after
    `compile(task_losses=...)`, and the custom loop
    (`training.engine.train_step_function`) calls the same two methods.

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
        preprocessor: optional `kerasbert.BertPreprocessor` (strings -> token
            ids) saved with the model, vocabulary included; the trainer
            attaches one, so `kerasbert.text_model(load_model("best.keras"))`
            takes raw strings.

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

    Training (`compile(task_losses=...)`: each output by its loss, InfoNCE included):
    >>> from kerasbert.losses import TaskLosses
    >>> model.compile(optimizer="adam", task_losses=TaskLosses(similarity="infonce"))
    >>> y = {"sentiment": np.array([0, 4]), "paraphrase": np.array([1.0, 0.0]),
    ...      "similarity": np.array([5.0, 1.0])}
    >>> x = {"sentiment": s, "paraphrase": {"a": s, "b": s}, "similarity": {"a": s, "b": s}}
    >>> sorted(model.train_on_batch(x, y, return_dict=True))
    ['loss', 'paraphrase_loss', 'sentiment_loss', 'similarity_loss']
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
        preprocessor=None,
        **kwargs,
    ):
        settings = _check_settings(
            pair_encoding=pair_encoding, pooling=pooling, paraphrase_head=paraphrase_head,
            similarity_head=similarity_head, similarity_output=similarity_output,
            projection_dim=projection_dim, shared_projection=shared_projection,
            paraphrase_logit_init=paraphrase_logit_init,
            num_sentiment_classes=num_sentiment_classes, dropout=dropout)
        heads = Heads(backbone, **settings)
        inputs, outputs, vectors = heads.multitask_graph()
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        # keras-hub's pattern: the task model carries its preprocessor, so a
        # saved model (vocabulary inside, as an asset) can take raw strings
        # (`kerasbert.text_model(model)`); the token-id graph does not use it.
        self.preprocessor = preprocessor
        for key, value in settings.items():
            setattr(self, key, value)
        # Sub-models reuse the layers above, hence the weights. Kept out of
        # Keras' attribute tracking so saving sees each weight once.
        object.__setattr__(self, "_submodels", heads.submodels(inputs, outputs, vectors))
        object.__setattr__(self, "_task_losses", None)
        object.__setattr__(self, "_loss_trackers", {})

    def task_model(self, name):
        """The sub-model for `name`: a task, `"embedding"`, `"pair_embeddings"`, ... (see above)."""
        if name not in self._submodels:
            raise KeyError(f"no sub-model {name!r}; have {sorted(self._submodels)}")
        return self._submodels[name]

    def paraphrase_logit_layer(self):
        """The Dense layer (1 unit) whose output is the paraphrase logit.

        A calibration `logit -> a * logit + b` folds into its kernel and
        bias (`training.calibration.PlattScaling.fold`): `paraphrase_dense`
        for a concat head or a cross-encoder, else the scalar
        `paraphrase_score_affine` on the dot/cosine score.
        """
        concat = self.pair_encoding == "cross" or self.paraphrase_head == "concat"
        return self.get_layer("paraphrase_dense" if concat else "paraphrase_score_affine")

    # ------------------------------------------------------------ training
    def compile(self, optimizer="rmsprop", *, task_losses=None, **kwargs):
        """`keras.Model.compile`, plus `task_losses` to train through `train_step`.

        Args:
            optimizer: as for Keras (`training.engine.make_optimizer` builds
                the encoder/head one).
            task_losses: a `kerasbert.losses.TaskLosses`. Given, `fit` trains
                each output of a batch by its loss, read from the sub-model
                the loss needs (InfoNCE included: its in-batch negatives are
                the batch's other rows), and logs `loss` and `{output}_loss`.
                Pass no `loss=` then. None: Keras' own per-output losses.
            **kwargs: `keras.Model.compile` arguments (metrics, jit_compile, ...).
        """
        if task_losses is not None and kwargs.get("loss") is not None:
            raise ValueError("pass task_losses= or loss=, not both")
        object.__setattr__(self, "_task_losses", task_losses)
        super().compile(optimizer=optimizer, **kwargs)
        trackers = {}
        if task_losses is not None:
            trackers = {o: keras.metrics.Mean(name=f"{o}_loss")
                        for o in ("sentiment", "paraphrase", "similarity")}
        object.__setattr__(self, "_loss_trackers", trackers)

    @property
    def metrics(self):
        return super().metrics + list(self._loss_trackers.values())

    def task_loss(self, x, y, task_losses, training=True):
        """`(total, {output: loss}, {output: prediction})` over the outputs `x` holds.

        Args:
            x, y: dicts keyed by output (`"sentiment"`, ...), any subset:
                the custom loop passes one task per step, `fit` all three.
            task_losses: a `kerasbert.losses.TaskLosses`.
            training: dropout on.
        """
        parts, predictions = {}, {}
        for output in x:
            submodel = self.task_model(task_losses.submodel(output))
            out = submodel(x[output], training=training)
            parts[output] = task_losses(output, out, y[output])
            predictions[output] = out[output] if isinstance(out, dict) else out
        return sum(parts.values()), parts, predictions

    def task_gradients(self, x, y, task_losses, optimizer=None, replicas=1):
        """`(loss, {output: loss}, {output: prediction}, gradients)` of one batch.

        The gradients, of `trainable_variables`, are those of `loss /
        replicas` (each replica holds its share of the global batch) times
        `optimizer`'s loss scale, if any; None for a variable the batch's
        tasks do not reach.
        """
        import tensorflow as tf  # the gradient tape: Keras 3 on TensorFlow

        with tf.GradientTape() as tape:
            loss, parts, predictions = self.task_loss(x, y, task_losses, training=True)
            scaled = loss / replicas
            if optimizer is not None:
                scaled = optimizer.scale_loss(scaled)
        return loss, parts, predictions, tape.gradient(scaled, self.trainable_variables)

    def train_step(self, data):
        if self._task_losses is None:
            return super().train_step(data)
        from kerasbert.replicas import cross_replica_gradients, replica_info

        x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
        # Under a multi-replica strategy each replica holds its share of the
        # batch: the gradients are summed and clipped by their global norm
        # over the replicas, as on one device (not per replica, as Keras would).
        _, replicas = replica_info()
        loss, parts, predictions, grads = self.task_gradients(
            x, y, self._task_losses, self.optimizer, replicas=replicas)
        if replicas > 1:
            grads = cross_replica_gradients(grads, self.trainable_variables, self.optimizer)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._logs(x, y, weight, loss, parts, predictions)

    def test_step(self, data):
        if self._task_losses is None:
            return super().test_step(data)
        x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, parts, predictions = self.task_loss(x, y, self._task_losses, training=False)
        return self._logs(x, y, weight, loss, parts, predictions)

    def _logs(self, x, y, weight, loss, parts, predictions):
        self._loss_tracker.update_state(loss)
        for output, value in parts.items():
            self._loss_trackers[output].update_state(value)
        if len(predictions) == len(self.outputs):  # compiled metrics need every output
            # Metrics compare with the gold labels (distillation packs the
            # teacher's outputs beside them).
            gold = {o: self._task_losses.gold_labels(o, v) for o, v in y.items()}
            if self._task_losses.teacher_weight is not None:
                gold, predictions, weight = _skip_unlabeled(gold, predictions, weight)
            return self.compute_metrics(x, gold, predictions, sample_weight=weight)
        logs = {"loss": self._loss_tracker.result()}
        logs.update({f"{o}_loss": self._loss_trackers[o].result() for o in parts})
        return logs

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
            "preprocessor": (None if self.preprocessor is None
                             else keras.layers.serialize(self.preprocessor)),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = config.pop("backbone")
        if isinstance(backbone, dict):
            backbone = keras.layers.deserialize(backbone)
        preprocessor = config.pop("preprocessor", None)
        if isinstance(preprocessor, dict):
            # Its vocabulary comes back from the .keras assets (load_assets).
            preprocessor = keras.layers.deserialize(preprocessor)
        return cls(backbone=backbone, preprocessor=preprocessor, **config)


def _check_settings(**settings):
    """The layout arguments, checked; `paraphrase_logit_init` as a float pair."""
    for name, allowed in (("pair_encoding", ("bi", "cross")),
                          ("pooling", ("pooled", "mean", "cls")),
                          ("paraphrase_head", ("concat", "dot", "cosine")),
                          ("similarity_head", ("concat", "dot", "cosine")),
                          ("similarity_output", ("sigmoid", "linear", "relu"))):
        if settings[name] not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {settings[name]!r}")
    init = settings["paraphrase_logit_init"]
    if init is not None:
        init = tuple(float(x) for x in init)
        if len(init) != 2:
            raise ValueError(f"paraphrase_logit_init must be (scale, threshold), got {init!r}")
        settings["paraphrase_logit_init"] = init
    return settings


def _skip_unlabeled(gold, predictions, weight):
    """Gold labels, predictions and per-output metric weights with the NaN-gold rows weighted 0.

    Distillation's unlabeled pairs (`--extra-pairs`) have a NaN gold label and
    train by the teacher term alone; left in, one NaN would make the epoch's
    Pearson r NaN and count as a miss in accuracy. Score outputs become
    (B, 1), so that per-example metrics (MAE) see one value per weighted row.
    """
    labels, outputs, weights = {}, dict(predictions), {}
    for output, g in gold.items():
        w = weight.get(output) if isinstance(weight, dict) else weight
        rows = keras.ops.shape(g)[0]
        w = (keras.ops.ones((rows,), "float32") if w is None
             else keras.ops.reshape(keras.ops.cast(w, "float32"), (rows,)))
        if keras.backend.standardize_dtype(g.dtype).startswith("float"):
            g = keras.ops.reshape(g, (rows, -1))  # (B,) or (B,1) -> (B,1)
            outputs[output] = keras.ops.reshape(outputs[output], (rows, -1))
            known = keras.ops.logical_not(keras.ops.isnan(g))
            g = keras.ops.where(known, g, keras.ops.zeros_like(g))
            w = w * keras.ops.cast(keras.ops.all(known, axis=1), "float32")
        labels[output], weights[output] = g, w
    return labels, outputs, weights
