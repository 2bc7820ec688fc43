"""`BertTokenizer`: WordPiece on tensorflow-text, dense BERT inputs out."""

import tensorflow as tf
import tensorflow_text as tf_text
# One reader of vocab.txt for the in-graph tokenizer and kerasbert-lite's.
from kerasbert_lite.wordpiece import SPECIAL_TOKENS as _SPECIAL_TOKENS
from kerasbert_lite.wordpiece import read_vocabulary  # noqa: F401  (kerasbert's API)


class BertTokenizer:
    """Turns raw strings into `token_ids`, `segment_ids`, `padding_mask` for `BertBackbone`.

    Built on `tf_text.FastBertTokenizer` (BERT basic tokenisation + WordPiece,
    lower-casing and accent stripping for uncased vocabularies). Everything
    after WordPiece is dense TF ops of fixed width (`to_tensor(shape=...)`,
    gathers, `where`), never ragged slicing or concatenation: the same code
    runs in `tf.data`, in a SavedModel and in TFLite (with tf-text custom ops).

    Pairs are laid out as `[CLS] a [SEP] b [SEP]` with segment ids 0/1 and
    truncated longest-first, as Hugging Face does.

    Args:
        vocabulary: a list of tokens, or the path of a `vocab.txt`.
        lowercase: lower-case and strip accents (uncased models).
        max_length: default output length (tokens including specials).

    Example:
    >>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"])
    >>> out = tok(["Hello world"], max_length=6)
    >>> out["token_ids"].numpy().tolist()
    [[2, 4, 5, 3, 0, 0]]
    >>> out["padding_mask"].numpy().tolist()
    [[1, 1, 1, 1, 0, 0]]
    """

    def __init__(self, vocabulary, lowercase=True, max_length=128):
        if isinstance(vocabulary, (str, bytes)) or hasattr(vocabulary, "__fspath__"):
            vocabulary = read_vocabulary(vocabulary)
        self.vocabulary = list(vocabulary)
        self.lowercase = lowercase
        self.max_length = max_length
        index = {token: i for i, token in enumerate(self.vocabulary)}
        missing = [t for t in _SPECIAL_TOKENS if t not in index]
        if missing:
            raise ValueError(f"vocabulary lacks special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (index[t] for t in _SPECIAL_TOKENS)
        self._wordpiece = tf_text.FastBertTokenizer(
            vocab=self.vocabulary,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            lower_case_nfd_strip_accents=lowercase,
        )

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def wordpiece(self, texts):
        """Token ids without special tokens: a ragged (B, (n)) int32 tensor."""
        return self._wordpiece.tokenize(texts)

    def token_lengths(self, texts_a, texts_b=None):
        """Untruncated lengths including specials, for length bucketing."""
        a = self.wordpiece(_as_batch(texts_a)[0]).row_lengths()
        if texts_b is None:
            return tf.cast(a, tf.int32) + 2
        b = self.wordpiece(_as_batch(texts_b)[0]).row_lengths()
        return tf.cast(a + b, tf.int32) + 3

    def __call__(self, texts_a, texts_b=None, max_length=None):
        """Tokenises a batch of strings (or string pairs).

        Args:
            texts_a: a string, a list of strings or a rank-0/1 string tensor.
            texts_b: optional second sentences, same shape as `texts_a`.
            max_length: output length T; defaults to `self.max_length`.

        Returns:
            dict of int32 tensors `token_ids`, `segment_ids`, `padding_mask`,
            each (B, T), or (T,) for a single string.
        """
        max_length = int(max_length or self.max_length)
        texts_a, scalar = _as_batch(texts_a)
        if texts_b is None:
            if max_length < 2:
                raise ValueError("max_length must be at least 2 ([CLS] and [SEP])")
            out = self._single(texts_a, max_length)
        else:
            if max_length < 3:
                raise ValueError("max_length must be at least 3 for pairs")
            texts_b, _ = _as_batch(texts_b)
            out = self._pair(texts_a, texts_b, max_length)
        if scalar:
            out = {k: v[0] for k, v in out.items()}
        return out

    def _single(self, texts, max_length):
        pieces = self.wordpiece(texts)
        body_len = max_length - 2
        lengths = tf.minimum(tf.cast(pieces.row_lengths(), tf.int32), body_len)
        body = pieces.to_tensor(default_value=self.pad_id, shape=[None, body_len])  # (B, T-2)
        batch = tf.shape(body)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        pad = tf.fill([batch, 1], self.pad_id)
        ids = tf.concat([cls, body, pad], axis=1)  # (B, T): dense concat, TFLite-safe
        positions = tf.range(max_length)[None, :]  # (1, T)
        sep_at = lengths[:, None] + 1  # (B, 1)
        ids = tf.where(positions == sep_at, self.sep_id, ids)
        mask = positions <= sep_at
        ids = tf.where(mask, ids, self.pad_id)
        return {
            "token_ids": ids,
            "segment_ids": tf.zeros_like(ids),
            "padding_mask": tf.cast(mask, tf.int32),
        }

    def _pair(self, texts_a, texts_b, max_length):
        a = self.wordpiece(texts_a)
        b = self.wordpiece(texts_b)
        budget = max_length - 3
        len_a, len_b = truncate_longest_first(
            tf.cast(a.row_lengths(), tf.int32), tf.cast(b.row_lengths(), tf.int32), budget)
        # At least one column, so the gathers below have something to read
        # when max_length == 3 leaves no room for either sentence.
        width = max(budget, 1)
        a = a.to_tensor(default_value=self.pad_id, shape=[None, width])  # (B, T-3)
        b = b.to_tensor(default_value=self.pad_id, shape=[None, width])  # (B, T-3)
        batch = tf.shape(a)[0]

        positions = tf.broadcast_to(tf.range(max_length)[None, :], [batch, max_length])  # (B, T)
        len_a, len_b = len_a[:, None], len_b[:, None]  # (B, 1)
        first_sep = len_a + 1
        second_sep = len_a + len_b + 2
        # Read sentence a at position p-1 and sentence b at p-len_a-2, clipped
        # into range; the masks below keep only the valid reads.
        from_a = tf.gather(a, tf.clip_by_value(positions - 1, 0, width - 1), batch_dims=1)
        from_b = tf.gather(b, tf.clip_by_value(positions - len_a - 2, 0, width - 1), batch_dims=1)
        in_a = (positions >= 1) & (positions < first_sep)
        in_b = (positions > first_sep) & (positions < second_sep)
        is_sep = (positions == first_sep) | (positions == second_sep)
        ids = tf.where(in_a, from_a, tf.where(in_b, from_b, self.pad_id))
        ids = tf.where(is_sep, self.sep_id, ids)
        ids = tf.where(positions == 0, self.cls_id, ids)
        mask = positions <= second_sep
        segments = tf.cast((positions > first_sep) & mask, tf.int32)
        return {
            "token_ids": ids,
            "segment_ids": segments,
            "padding_mask": tf.cast(mask, tf.int32),
        }

    def save_vocabulary(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.vocabulary) + "\n")


def truncate_longest_first(len_a, len_b, budget):
    """Lengths after Hugging Face's `longest_first` truncation, in closed form.

    The shorter sequence is kept whole when it fits in half the budget and
    the longer one gets the rest; otherwise both get half, the odd token going
    to the originally longer one (to the second on ties), as HF's tokenizers do.
    """
    half_lo = budget // 2
    half_hi = budget - half_lo
    over = len_a + len_b > budget
    short = tf.minimum(len_a, len_b)
    a_is_short = len_a <= len_b
    # Short one fits in half: keep it, give the rest to the long one.
    keep_a = tf.where(a_is_short, len_a, budget - len_b)
    keep_b = tf.where(a_is_short, budget - len_a, len_b)
    fits_half = short <= half_lo
    a_gets_odd = len_a > len_b
    trunc_a = tf.where(fits_half, keep_a, tf.where(a_gets_odd, half_hi, half_lo))
    trunc_b = tf.where(fits_half, keep_b, tf.where(a_gets_odd, half_lo, half_hi))
    return tf.where(over, trunc_a, len_a), tf.where(over, trunc_b, len_b)


def _as_batch(texts):
    """Returns (rank-1 string tensor, was_scalar)."""
    if isinstance(texts, (str, bytes)):
        return tf.constant([texts]), True
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    if texts.shape.rank == 0:
        return texts[None], True
    if texts.shape.rank != 1:
        raise ValueError(f"expected a string or a 1-D batch of strings, got shape {texts.shape}")
    return texts, False
