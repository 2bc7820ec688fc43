"""`BertPreprocessor`: the WordPiece tokenizer as a Keras layer, saved inside `.keras`."""

import os

import keras

from kerasbert.bert_tokenizer import BertTokenizer, read_vocabulary

_KEYS = ("token_ids", "segment_ids", "padding_mask")
VOCAB_FILE = "vocab.txt"


@keras.saving.register_keras_serializable(package="kerasbert")
class BertPreprocessor(keras.layers.Layer):
    """Strings in, `BertBackbone` inputs out: keras-hub's preprocessor, on `BertTokenizer`.

    Takes a (B,) string tensor, or a pair `(texts_a, texts_b)` laid out as
    `[CLS] a [SEP] b [SEP]`, and returns `token_ids`, `segment_ids`,
    `padding_mask`: int32 (B, sequence_length), right-padded, truncated as in
    training (longest first for pairs). The vocabulary travels with the
    model as the layer's asset (`vocab.txt` in the `.keras` zip), not in
    its JSON config, so `keras.saving.load_model` brings the tokenizer back
    without the run folder. It runs with the TensorFlow backend (tf-text ops).

    Args:
        vocabulary: a list of tokens or the path of a `vocab.txt`; None
            when the layer is being loaded (the asset fills it).
        lowercase: lower-case and strip accents (uncased models).
        sequence_length: output length T, specials included.

    Example:
    >>> import numpy as np
    >>> pre = BertPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"],
    ...                        sequence_length=6)
    >>> np.asarray(pre(np.array(["Hello world"]))["token_ids"]).tolist()
    [[2, 4, 5, 3, 0, 0]]
    >>> pair = pre((np.array(["hello"]), np.array(["world"])))
    >>> np.asarray(pair["token_ids"]).tolist(), np.asarray(pair["segment_ids"]).tolist()
    ([[2, 4, 3, 5, 3, 0]], [[0, 0, 0, 1, 1, 0]])
    """

    def __init__(self, vocabulary=None, lowercase=True, sequence_length=128, **kwargs):
        super().__init__(**kwargs)
        if int(sequence_length) < 3:
            raise ValueError(f"sequence_length must be at least 3 ([CLS], one token, [SEP]), "
                             f"got {sequence_length}")
        self.lowercase = bool(lowercase)
        self.sequence_length = int(sequence_length)
        self.tokenizer = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        # Strings are not differentiable and there is nothing to train.
        self.trainable = False

    def set_vocabulary(self, vocabulary):
        """Builds the tokenizer over `vocabulary` (a list of tokens or a vocab.txt path)."""
        self.tokenizer = BertTokenizer(vocabulary, lowercase=self.lowercase,
                                       max_length=self.sequence_length)

    @property
    def vocabulary(self):
        return None if self.tokenizer is None else self.tokenizer.vocabulary

    def call(self, inputs):
        if self.tokenizer is None:
            raise ValueError(f"{self.name}: no vocabulary (pass vocabulary= or load the "
                             "layer from a .keras file, whose asset holds it)")
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise ValueError(f"{self.name}: a pair is (texts_a, texts_b), got "
                                 f"{len(inputs)} inputs")
            texts_a, texts_b = (_flat(t) for t in inputs)
            return self.tokenizer(texts_a, texts_b, max_length=self.sequence_length)
        return self.tokenizer(_flat(inputs), max_length=self.sequence_length)

    def compute_output_spec(self, inputs):
        first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        shape = (first.shape[0], self.sequence_length)
        return {k: keras.KerasTensor(shape, dtype="int32") for k in _KEYS}

    def save_assets(self, dir_path):
        self.tokenizer.save_vocabulary(os.path.join(dir_path, VOCAB_FILE))

    def load_assets(self, dir_path):
        self.set_vocabulary(read_vocabulary(os.path.join(dir_path, VOCAB_FILE)))

    def get_config(self):
        config = super().get_config()
        config.update(lowercase=self.lowercase, sequence_length=self.sequence_length)
        return config


def _flat(texts):
    """(B,) strings: `keras.Input(shape=(), dtype="string")` gives (B,), and (B, 1) is accepted."""
    import tensorflow as tf

    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    if texts.shape.rank == 2:
        texts = tf.squeeze(texts, axis=1)
    return texts
