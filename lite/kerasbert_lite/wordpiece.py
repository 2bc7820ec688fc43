"""`WordPieceTokenizer`: BERT tokenisation in pure Python, id for id with kerasbert's in-graph one.

kerasbert's models tokenise with tf-text's `FastBertTokenizer`; an app or a
TensorFlow-free Python must produce the same ids. The steps, as tf-text
takes them:

1. Normalise (uncased vocabularies): NFKD, full case folding, NFKD again,
   accents (category Mn) dropped; control characters become spaces, other
   format characters (Cf) spaces unless default-ignorable, then dropped.
   Python's `unicodedata` and tf-text's ICU differ on about 4,000 code
   points (default-ignorable ones, and characters newer than Python's
   Unicode tables): `normalization_exceptions.json`, made from tf-text by
   `lite/tools/make_normalization_exceptions.py`, holds them as ranges,
   and the punctuation Python's tables do not know yet.
2. Split on whitespace, then split off each punctuation character (BERT's:
   ASCII symbols and Unicode P*) and each CJK ideograph.
3. WordPiece each word, greedy longest match first; a word with no match,
   or longer than `max_bytes_per_word` UTF-8 bytes, is one `[UNK]`.

Example:
>>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "!"])
>>> tok.tokenize("Héllo, worlds!")
[4, 1, 5, 6, 7]
>>> tok.encode(["hello"], max_length=5)["token_ids"].tolist()
[[2, 4, 3, 0, 0]]
"""

import bisect
import json
import unicodedata
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
_EXCEPTIONS = Path(__file__).with_name("normalization_exceptions.json")


def read_vocabulary(path_or_lines):
    """Tokens of a BERT vocab.txt (a path, or its text / lines), checked for the specials."""
    if isinstance(path_or_lines, (str, Path)) and "\n" not in str(path_or_lines):
        with open(path_or_lines, "rb") as f:
            data = f.read()
        try:
            # Universal newlines, as text mode reads them.
            lines = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ValueError(f"{path_or_lines}:{line}: not valid UTF-8 "
                             f"(byte {data[e.start]:#04x})") from None
        where = str(path_or_lines)
    else:
        lines = path_or_lines.split("\n") if isinstance(path_or_lines, str) else list(
            path_or_lines)
        where = "vocabulary"
    tokens = [line.rstrip("\r") for line in lines]
    if tokens and tokens[-1] == "":
        tokens.pop()
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f"{where}: vocabulary lacks special tokens {missing}")
    return tokens


def _load_exceptions():
    with open(_EXCEPTIONS, encoding="utf-8") as f:
        table = json.load(f)
    ranges = table["ranges"]
    return [r[0] for r in ranges], ranges, frozenset(table.get("punctuation", ()))


_EXTRA_PUNCTUATION = _load_exceptions()[2]


def _is_punctuation(ch):
    cp = ord(ch)
    # BERT counts every non-alphanumeric printable ASCII character as punctuation.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    # Punctuation newer than Python's Unicode tables (tf-text's ICU knows it).
    return unicodedata.category(ch).startswith("P") or cp in _EXTRA_PUNCTUATION


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT WordPiece over a vocabulary, giving the ids kerasbert's models were trained on.

    Args:
        vocabulary: a list of tokens, or the path of a vocab.txt.
        lowercase: uncased normalisation (case folding, accents stripped).
        max_bytes_per_word: longer words become one `[UNK]` (tf-text's default 100).
    """

    def __init__(self, vocabulary, lowercase=True, max_bytes_per_word=100):
        if not isinstance(vocabulary, (list, tuple)):
            vocabulary = read_vocabulary(vocabulary)
        self.vocabulary = list(vocabulary)
        self.index = {t: i for i, t in enumerate(self.vocabulary)}
        missing = [t for t in SPECIAL_TOKENS if t not in self.index]
        if missing:
            raise ValueError(f"vocabulary lacks special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (self.index[t] for t in SPECIAL_TOKENS)
        self.lowercase = bool(lowercase)
        self.max_bytes_per_word = int(max_bytes_per_word)
        self._starts, self._ranges, _ = _load_exceptions()
        self._cache = {}

    # ---- text -> words ----

    def _exception(self, cp):
        i = bisect.bisect_right(self._starts, cp) - 1
        if i >= 0 and cp <= self._ranges[i][1]:
            return self._ranges[i][2]
        return None

    def normalize_char(self, ch):
        """What one character becomes before splitting (possibly several, or none)."""
        cp = ord(ch)
        category = unicodedata.category(ch)
        if category == "Cc":
            return " "
        if self.lowercase:
            special = self._exception(cp)
            if special is not None:
                return special
            if category == "Cf":
                return " "
            s = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", ch).casefold())
            return "".join(c for c in s if unicodedata.category(c) != "Mn")
        return " " if category == "Cf" else ch

    def normalize(self, text):
        # Lone surrogates (e.g. from surrogateescape decoding) cannot be UTF-8:
        # "?", as the in-graph tokenizer gets them from the scorers.
        text = text.encode("utf-8", "replace").decode("utf-8")
        return "".join(self.normalize_char(c) for c in text)

    def words(self, text):
        """The normalised text split on whitespace, punctuation and CJK ideographs."""
        out, current = [], []
        for ch in self.normalize(text):
            if ch.isspace() or unicodedata.category(ch) == "Zs":
                if current:
                    out.append("".join(current))
                    current = []
            elif _is_punctuation(ch) or _is_cjk(ord(ch)):
                if current:
                    out.append("".join(current))
                    current = []
                out.append(ch)
            else:
                current.append(ch)
        if current:
            out.append("".join(current))
        return out

    # ---- words -> ids ----

    def word_ids(self, word):
        """WordPiece ids of one word; `[UNK]` alone if it cannot be covered or is too long."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word.encode("utf-8")) > self.max_bytes_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.index:
                    ids.append(self.index[piece])
                    break
                end -= 1
            else:
                ids = [self.unk_id]
                break
            start = end
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def tokenize(self, text):
        """Token ids of `text`, without [CLS]/[SEP]."""
        return [i for w in self.words(text) for i in self.word_ids(w)]

    def overlong_words(self, text):
        """How many words of `text` exceed max_bytes_per_word (each became one [UNK])."""
        return sum(len(w.encode("utf-8")) > self.max_bytes_per_word for w in self.words(text))

    # ---- batches -> model inputs ----

    def encode(self, texts, max_length):
        """`[CLS] text [SEP]` per text, right-padded to `max_length`.

        Returns:
            dict of int32 (B, max_length) `token_ids`, `segment_ids`,
            `padding_mask`, plus `lengths` (untruncated, specials included)
            and bool `truncated` (cut to fit, or a word over the byte limit).
        """
        if max_length < 2:
            raise ValueError("max_length must be at least 2 ([CLS] and [SEP])")
        ids = np.full((len(texts), max_length), self.pad_id, np.int32)
        mask = np.zeros_like(ids)
        lengths = np.zeros(len(texts), np.int64)
        truncated = np.zeros(len(texts), bool)
        for row, text in enumerate(texts):
            body = self.tokenize(text)
            lengths[row] = len(body) + 2
            truncated[row] = len(body) > max_length - 2 or self.overlong_words(text) > 0
            body = body[:max_length - 2]
            n = len(body) + 2
            ids[row, :n] = [self.cls_id] + body + [self.sep_id]
            mask[row, :n] = 1
        return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask,
                "lengths": lengths, "truncated": truncated}

    def encode_pairs(self, texts_a, texts_b, max_length):
        """`[CLS] a [SEP] b [SEP]` with segment ids 0/1, truncated longest first (as HF)."""
        if max_length < 3:
            raise ValueError("max_length must be at least 3 for pairs")
        n = len(texts_a)
        ids = np.full((n, max_length), self.pad_id, np.int32)
        segments, mask = np.zeros_like(ids), np.zeros_like(ids)
        truncated = np.zeros(n, bool)
        for row, (a, b) in enumerate(zip(texts_a, texts_b)):
            ta, tb = self.tokenize(a), self.tokenize(b)
            la, lb = truncate_longest_first(len(ta), len(tb), max_length - 3)
            truncated[row] = (la, lb) != (len(ta), len(tb)) or bool(
                self.overlong_words(a) or self.overlong_words(b))
            row_ids = [self.cls_id] + ta[:la] + [self.sep_id] + tb[:lb] + [self.sep_id]
            ids[row, :len(row_ids)] = row_ids
            segments[row, la + 2:len(row_ids)] = 1
            mask[row, :len(row_ids)] = 1
        return {"token_ids": ids, "segment_ids": segments, "padding_mask": mask,
                "truncated": truncated}


def truncate_longest_first(len_a, len_b, budget):
    """Lengths after Hugging Face's `longest_first` truncation to `budget` tokens.

    The shorter sequence is kept whole when it fits in half the budget and
    the longer one gets the rest; otherwise both get half, the odd token going
    to the originally longer one (to the second on ties), as HF's tokenizers
    and kerasbert's in-graph tokenizer do.
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    half_lo = budget // 2
    half_hi = budget - half_lo
    if min(len_a, len_b) <= half_lo:
        return (len_a, budget - len_a) if len_a <= len_b else (budget - len_b, len_b)
    return (half_hi, half_lo) if len_a > len_b else (half_lo, half_hi)
