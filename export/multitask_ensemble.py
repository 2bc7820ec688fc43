"""`MultitaskEnsemble`: several trained `MultitaskBert`s behind one tokenizer."""

import math

import numpy as np
import tensorflow as tf

from kerasbert.bert_tokenizer import BertTokenizer
from export.run_folder import RunFolder

_ENCODING_KEYS = ("token_ids", "segment_ids", "padding_mask")
# Signature name -> (text input names, output name). The same names are used
# by the SavedModel, the text-in TFLite files and the ids-in TFLite files.
SIGNATURES = {
    "sentiment": (("text",), "probabilities"),
    "paraphrase": (("text_a", "text_b"), "probability"),
    "similarity": (("text_a", "text_b"), "score"),
    "embed": (("text",), "embedding"),
}
_PAIR_TASKS = ("paraphrase", "similarity")


def with_positions(member, length):
    """`member` rebuilt with only its first `length` position embeddings.

    An export never reads a position past its max_length, yet the converter
    keeps the whole table, in float32: the encoder slices it rather than
    multiplying by it, so dynamic-range int8 leaves it alone. For MiniLM
    (512 x 384) at max_length 128 that is 0.56 MiB of each ~23 MiB int8 file
    spent on rows nothing reads. Every other weight is copied as it is, so
    outputs on inputs of up to `length` tokens are the member's own.

    Args:
        member: a `MultitaskBert`.
        length: the positions to keep (the export's max_length).

    Returns:
        `member` itself when it has no more than `length` positions, else a
        new `MultitaskBert` with the same layout and weights.
    """
    import keras

    backbone = member.backbone
    if backbone.max_sequence_length <= length:
        return member
    config = dict(backbone.get_config(), max_sequence_length=int(length))
    trimmed = type(backbone).from_config(config)
    rebuilt = type(member).from_config(dict(member.get_config(), backbone=trimmed,
                                            preprocessor=member.preprocessor))
    old, new = member.weights, rebuilt.weights
    if [w.path.split("/")[-2:] for w in old] != [w.path.split("/")[-2:] for w in new]:
        raise ValueError("with_positions: the rebuilt model's weights do not line up with "
                         f"{member.name}'s")
    for source, target in zip(old, new):
        value = keras.ops.convert_to_numpy(source)
        if tuple(value.shape) != tuple(target.shape):
            if "position_embedding" not in target.path:
                raise ValueError(f"with_positions: {target.path} changed shape "
                                 f"{value.shape} -> {tuple(target.shape)}")
            value = value[:target.shape[0]]  # the position table: its first rows
        target.assign(value)
    return rebuilt


def trim_padding(encoding):
    """Drops trailing columns that are padding in every row of the batch.

    The export pads to a fixed max_length (a fixed interface), then runs the
    encoder only up to the last real token of the batch: a 15-token pair
    costs 15 positions, not max_length. Only all-padding columns go, so
    any padding layout gives the same outputs (masked keys and masked mean
    pooling ignore those columns anyway).
    """
    mask = tf.cast(encoding["padding_mask"], tf.int32)
    positions = tf.range(1, tf.shape(mask)[1] + 1)[None, :]  # (1, T): 1-based
    # At least one column, so an empty batch or an all-padding row still runs.
    length = tf.maximum(tf.reduce_max(mask * positions), 1)
    return {k: tf.slice(v, [0, 0], tf.stack([-1, length])) for k, v in encoding.items()}


class MultitaskEnsemble:
    """The mean of several `MultitaskBert` members, with one shared tokenizer.

    Members may mix bi-encoders and cross-encoders; one member is a valid
    ensemble. All members must share the vocabulary and casing (one
    tokenizer feeds them all). Outputs, per task:

      - `sentiment`: mean of the members' softmax probabilities, (B, C);
      - `paraphrase`: mean of the members' sigmoid probabilities, (B,);
      - `similarity`: mean of the members' 0-5 scores, (B,);
      - `embed`: the concatenation of the members' L2-normalised sentence
        embeddings, divided by sqrt(M), (B, sum of member dims). It is unit
        length, and the dot product (= cosine) of two such vectors is the
        mean of the members' cosines. Concatenation, not a mean, because
        members may have different widths and unrelated embedding spaces.

    The graph methods (`*_from_ids`, `text_endpoints`, `ids_endpoints`) are
    TF code meant for `keras.export.ExportArchive`; `reference` is the
    eager Keras computation used to check the exports.

    Args:
        members: list of `MultitaskBert`.
        tokenizer: the shared `BertTokenizer`.
        max_length: tokens per encoded sentence (or pair), specials included.
        runs: optional list of `RunFolder`s the members came from (manifest).

    Example:
    >>> ens = MultitaskEnsemble.from_runs(["runs/a", "runs/b"])   # doctest: +SKIP
    >>> ens.reference("similarity", ["A cat."], ["A dog."])        # doctest: +SKIP
    array([2.1], dtype=float32)
    """

    def __init__(self, members, tokenizer, max_length, runs=None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.runs = list(runs) if runs else []
        classes = {m.num_sentiment_classes for m in self.members}
        if len(classes) != 1:
            raise ValueError(f"members disagree on the number of sentiment classes {classes}: "
                             "their probabilities cannot be averaged")
        self.num_sentiment_classes = classes.pop()
        shortest = min(m.backbone.max_sequence_length for m in self.members)
        if self.max_length > shortest:
            raise ValueError(f"max_length {self.max_length} exceeds a member's "
                             f"{shortest} position embeddings")
        if self.max_length < 3:
            raise ValueError(f"max_length must be at least 3, got {self.max_length}")
        self.pair_encodings = sorted({m.pair_encoding for m in self.members})
        self.embedding_dims = [int(m.task_model("embedding").output.shape[-1])
                               for m in self.members]

    @classmethod
    def from_runs(cls, run_dirs, max_length=None):
        """Loads run folders into an ensemble.

        Args:
            run_dirs: paths of run folders (config.json, best.keras, vocab.txt).
            max_length: export length; default the largest of the runs'
                `max_length` (a member handles longer inputs than it was
                trained on, up to its position embeddings).

        Raises:
            ValueError: the runs' vocabularies or casing differ.
        """
        runs = [RunFolder(p) for p in run_dirs]
        if not runs:
            raise ValueError("no run folders given")
        vocab = runs[0].vocabulary()
        for run in runs[1:]:
            other = run.vocabulary()
            if other != vocab:
                where = next((i for i, (x, y) in enumerate(zip(vocab, other)) if x != y),
                             min(len(vocab), len(other)))
                raise ValueError(
                    f"{run.vocab_path} differs from {runs[0].vocab_path} (first difference "
                    f"at line {where + 1}; {len(other)} vs {len(vocab)} tokens): ensemble "
                    "members must share one vocabulary")
            if run.lowercase != runs[0].lowercase:
                raise ValueError(f"{run.config_path}: lowercase={run.lowercase} but "
                                 f"{runs[0].config_path} has {runs[0].lowercase}: "
                                 "members must share one tokenizer")
        max_length = int(max_length or max(r.max_length for r in runs))
        tokenizer = BertTokenizer(vocab, lowercase=runs[0].lowercase, max_length=max_length)
        members = [with_positions(r.load_model(), max_length) for r in runs]
        return cls(members, tokenizer, max_length, runs=runs)

    # ---- graph code (traced into the SavedModel / TFLite) ----

    def _member_pair_inputs(self, member, encodings):
        if member.pair_encoding == "cross":
            return {"pair": encodings["pair"]}
        return {"a": encodings["a"], "b": encodings["b"]}

    def sentiment_from_ids(self, encoding):
        probs = [tf.nn.softmax(tf.cast(m.task_model("sentiment")(encoding, training=False),
                                       tf.float32))
                 for m in self.members]
        return tf.add_n(probs) / len(probs)

    def paraphrase_from_ids(self, encodings):
        probs = [tf.sigmoid(tf.cast(m.task_model("paraphrase")(
            self._member_pair_inputs(m, encodings), training=False), tf.float32))
            for m in self.members]
        return tf.add_n(probs) / len(probs)

    def similarity_from_ids(self, encodings):
        scores = [tf.cast(m.task_model("similarity")(
            self._member_pair_inputs(m, encodings), training=False), tf.float32)
            for m in self.members]
        return tf.add_n(scores) / len(scores)

    def embed_from_ids(self, encoding):
        parts = [tf.math.l2_normalize(tf.cast(m.task_model("embedding")(encoding, training=False),
                                              tf.float32), axis=-1)
                 for m in self.members]
        return tf.concat(parts, axis=-1) * (1.0 / math.sqrt(len(parts)))

    def _from_ids(self, task, encodings):
        return getattr(self, f"{task}_from_ids")(encodings)

    def _encode_text(self, texts):
        encoding = self.tokenizer(texts, max_length=self.max_length)
        truncated = self.tokenizer.token_lengths(texts) > self.max_length
        return trim_padding(encoding), truncated

    def _encode_text_pairs(self, texts_a, texts_b):
        encodings, truncated = {}, []
        if "bi" in self.pair_encodings:
            encodings["a"], trunc_a = self._encode_text(texts_a)
            encodings["b"], trunc_b = self._encode_text(texts_b)
            truncated += [trunc_a, trunc_b]
        if "cross" in self.pair_encodings:
            pair = self.tokenizer(texts_a, texts_b, max_length=self.max_length)
            encodings["pair"] = trim_padding(pair)
            truncated.append(self.tokenizer.token_lengths(texts_a, texts_b) > self.max_length)
        return encodings, tf.reduce_any(tf.stack(truncated), axis=0)

    def text_endpoints(self):
        """{name: (fn, input_signature)} taking raw strings, for `ExportArchive.add_endpoint`.

        Each returns `{<output>: ..., "truncated": int32 (B,)}`; `truncated`
        is 1 where the input did not fit max_length and was cut.
        """
        endpoints = {}
        for task, (inputs, output) in SIGNATURES.items():
            spec = [tf.TensorSpec([None], tf.string, name=n) for n in inputs]
            if task in _PAIR_TASKS:
                def fn(text_a, text_b, task=task, output=output):
                    encodings, truncated = self._encode_text_pairs(text_a, text_b)
                    return {output: self._from_ids(task, encodings),
                            "truncated": tf.cast(truncated, tf.int32)}
            else:
                def fn(text, task=task, output=output):
                    encoding, truncated = self._encode_text(text)
                    return {output: self._from_ids(task, encoding),
                            "truncated": tf.cast(truncated, tf.int32)}
            endpoints[task] = (fn, spec)
        return endpoints

    def ids_input_names(self, task):
        """Flat input names of the ids-in signature `task`, in order.

        One sentence: `token_ids`, `segment_ids`, `padding_mask`. Pairs:
        `a_*` and `b_*` (each sentence alone, for bi-encoder members) and/or
        `pair_*` (`[CLS] a [SEP] b [SEP]`, for cross-encoder members).
        """
        if task not in _PAIR_TASKS:
            return list(_ENCODING_KEYS)
        groups = (["a", "b"] if "bi" in self.pair_encodings else []) + (
            ["pair"] if "cross" in self.pair_encodings else [])
        return [f"{g}_{k}" for g in groups for k in _ENCODING_KEYS]

    def ids_endpoints(self):
        """{name: (fn, input_signature)} on int32 (B, max_length) token inputs, builtin ops only."""
        endpoints = {}
        for task, (_, output) in SIGNATURES.items():
            names = self.ids_input_names(task)
            spec = [tf.TensorSpec([None, self.max_length], tf.int32, name=n) for n in names]

            def fn(*tensors, task=task, output=output, names=tuple(names)):
                if task in _PAIR_TASKS:
                    encodings = {}
                    for name, t in zip(names, tensors):
                        group, key = name.split("_", 1)
                        encodings.setdefault(group, {})[key] = t
                    encodings = {g: trim_padding(e) for g, e in encodings.items()}
                else:
                    encodings = trim_padding(dict(zip(names, tensors)))
                return {output: self._from_ids(task, encodings)}
            endpoints[task] = (fn, spec)
        return endpoints

    def ids_inputs(self, task, texts_a, texts_b=None):
        """Numpy feed for the ids-in signature `task` (tokenised at max_length)."""
        if task in _PAIR_TASKS:
            encodings = {}
            if "bi" in self.pair_encodings:
                encodings["a"] = self.tokenizer(list(texts_a), max_length=self.max_length)
                encodings["b"] = self.tokenizer(list(texts_b), max_length=self.max_length)
            if "cross" in self.pair_encodings:
                encodings["pair"] = self.tokenizer(list(texts_a), list(texts_b),
                                                   max_length=self.max_length)
            return {f"{g}_{k}": v.numpy() for g, e in encodings.items() for k, v in e.items()}
        encoding = self.tokenizer(list(texts_a), max_length=self.max_length)
        return {k: v.numpy() for k, v in encoding.items()}

    # ---- eager reference ----

    def reference(self, task, texts_a, texts_b=None, batch_size=32):
        """The ensemble output computed member by member in Keras, combined in numpy.

        Untrimmed fixed-length inputs and numpy maths: an independent check
        of what the exported graphs compute.

        Args:
            task: "sentiment", "paraphrase", "similarity" or "embed".
            texts_a: list of strings; texts_b: second strings for pair tasks.
            batch_size: examples per Keras call.

        Returns:
            float32 array, (N, C) / (N,) / (N,) / (N, D).
        """
        if task not in SIGNATURES:
            raise ValueError(f"unknown task {task!r}; expected one of {list(SIGNATURES)}")
        texts_a = list(texts_a)
        outs = []
        for start in range(0, len(texts_a), batch_size):
            a = texts_a[start:start + batch_size]
            b = list(texts_b[start:start + batch_size]) if texts_b is not None else None
            outs.append(self._reference_batch(task, a, b))
        return np.concatenate(outs, axis=0) if outs else np.zeros((0,), np.float32)

    def _reference_batch(self, task, a, b):
        tok = lambda *t: {k: v.numpy() for k, v in  # noqa: E731
                          self.tokenizer(*t, max_length=self.max_length).items()}
        per_member = []
        for m in self.members:
            if task in _PAIR_TASKS:
                inputs = ({"pair": tok(a, b)} if m.pair_encoding == "cross"
                          else {"a": tok(a), "b": tok(b)})
            else:
                inputs = tok(a)
            name = "embedding" if task == "embed" else task
            out = np.asarray(m.task_model(name)(inputs, training=False), np.float64)
            if task == "sentiment":
                out = np.exp(out - out.max(-1, keepdims=True))
                out = out / out.sum(-1, keepdims=True)
            elif task == "paraphrase":
                out = 1.0 / (1.0 + np.exp(-out))
            elif task == "embed":
                out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-6)
            per_member.append(out)
        if task == "embed":
            return (np.concatenate(per_member, -1) / math.sqrt(len(per_member))).astype(np.float32)
        return np.mean(per_member, axis=0).astype(np.float32)

    def describe(self):
        """The manifest entry: members and the shared tokenizer settings."""
        members = []
        for i, m in enumerate(self.members):
            entry = self.runs[i].describe() if i < len(self.runs) else {}
            entry.update(pair_encoding=m.pair_encoding, pooling=m.pooling,
                         paraphrase_head=m.paraphrase_head,
                         similarity_head=m.similarity_head,
                         embedding_dim=self.embedding_dims[i],
                         num_layers=m.backbone.num_layers, hidden_dim=m.backbone.hidden_dim)
            members.append(entry)
        return {
            "members": members,
            "max_length": self.max_length,
            "lowercase": self.tokenizer.lowercase,
            "vocabulary_size": self.tokenizer.vocabulary_size,
            "num_sentiment_classes": self.num_sentiment_classes,
            "embedding_dim": int(sum(self.embedding_dims)),
            "embedding": "concatenation of L2-normalised member embeddings / sqrt(members): "
                         "unit length; dot product = mean of member cosines",
        }
