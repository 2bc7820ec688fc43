"""`text_model`: a token-id model wrapped to take raw strings (keras-hub's preprocessor pattern)."""

import keras

from kerasbert.bert_preprocessor import BertPreprocessor  # noqa: F401  (the docstring example uses it)

_PAIR_TASKS = ("paraphrase", "similarity")


@keras.saving.register_keras_serializable(package="kerasbert")
class TextModel(keras.Model):
    """A functional model over string inputs whose `predict` and call take Python lists.

    Keras turns a list of strings into a NumPy unicode array, whose dtype it
    rejects (`Invalid dtype: str352`); string tensors are fine, so lists and
    arrays of strings become `tf.string` tensors first.
    """

    # Functional's own signature: Keras then saves and revives it as a functional model.
    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(_string_tensors(x), *args, **kwargs)

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(_string_tensors(inputs), *args, **kwargs)


def _string_tensors(x):
    import numpy as np
    import tensorflow as tf

    def convert(value):
        if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bytes)) for v in value):
            return tf.constant(list(value), tf.string)
        if isinstance(value, np.ndarray) and value.dtype.kind in "USO":
            return tf.constant(value.astype(object), tf.string)
        return value

    if isinstance(x, dict):
        return {k: convert(v) for k, v in x.items()}
    return convert(x)


def text_model(model, preprocessor=None, task="sentiment"):
    """A `keras.Model` that takes strings: `preprocessor` then `model` (or one of its tasks).

    `model` is what `keras.saving.load_model("runs/NAME/best.keras")` gives
    (a `MultitaskBert`: `task` picks its sub-model), or any model taking
    `{token_ids, segment_ids, padding_mask}` (a `BertBackbone`, a task
    sub-model). Sentence tasks take one (B,) string input; `paraphrase` and
    `similarity` take two, `text_a` and `text_b` (a bi-encoder tokenizes
    each alone, a cross-encoder the pair together). The result saves to
    `.keras` with the vocabulary inside and loads without the run folder.

    Args:
        model: a token-id model.
        preprocessor: a `BertPreprocessor`; None uses `model.preprocessor`
            (where one was attached) or fails naming what to pass.
        task: for a `MultitaskBert`: sentiment, paraphrase, similarity or
            embedding. Ignored for other models.

    Example:
    >>> import numpy as np
    >>> from kerasbert import BertBackbone, BertConfig, MultitaskBert
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "bad", "film"]
    >>> bert = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny(vocabulary_size=8)))
    >>> sentiment = text_model(bert, BertPreprocessor(vocab, sequence_length=8))
    >>> sentiment.predict(["a good film", "a bad film"], verbose=0).shape
    (2, 5)
    >>> similarity = text_model(bert, BertPreprocessor(vocab, sequence_length=8),
    ...                         task="similarity")
    >>> similarity.predict({"text_a": ["a film"], "text_b": ["good"]}, verbose=0).shape
    (1,)
    """
    preprocessor = preprocessor or getattr(model, "preprocessor", None)
    if preprocessor is None:
        raise ValueError(f"{model.name} has no preprocessor attached: pass one, e.g. "
                         "BertPreprocessor('runs/NAME/vocab.txt', sequence_length=128)")
    if hasattr(model, "task_model"):
        encoding = model.pair_encoding
        model = model.task_model(task)
    else:
        encoding, task = None, "sentence"
    if task in _PAIR_TASKS:
        a = keras.Input(shape=(), dtype="string", name="text_a")
        b = keras.Input(shape=(), dtype="string", name="text_b")
        tokens = ({"pair": preprocessor((a, b))} if encoding == "cross"
                  else {"a": preprocessor(a), "b": preprocessor(b)})
        return TextModel({"text_a": a, "text_b": b}, model(tokens), name=f"{task}_text_model")
    text = keras.Input(shape=(), dtype="string", name="text")
    return TextModel(text, model(preprocessor(text)), name=f"{task}_text_model")
