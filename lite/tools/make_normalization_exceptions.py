"""Writes kerasbert_lite/normalization_exceptions.json from tf-text (needs TensorFlow).

Every code point where `WordPieceTokenizer.normalize_char` without the
table disagrees with tf-text's `FastBertNormalizer(lower_case_nfd_strip_accents=True)`,
as ranges [first, last, replacement], and the code points tf-text splits off
as punctuation where Python's `unicodedata` does not (found by tokenising
"ab<c>cd<c>" with the packaged MiniLM vocabulary). Run from the repo root after a
tensorflow-text upgrade: `python lite/tools/make_normalization_exceptions.py`.
"""

import json
import sys
import unicodedata
from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kerasbert_lite import wordpiece  # noqa: E402

OUT = Path(wordpiece.__file__).with_name("normalization_exceptions.json")


def main():
    # The rules alone, whatever table is on disk now.
    wordpiece._EXTRA_PUNCTUATION = frozenset()
    normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=True)
    tok = wordpiece.WordPieceTokenizer(list(wordpiece.SPECIAL_TOKENS))
    tok._starts, tok._ranges = [], []  # the rules alone
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    differ = {}
    for start in range(0, len(code_points), 20000):
        chunk = code_points[start:start + 20000]
        got = normalizer.normalize(tf.constant([chr(c) for c in chunk])).numpy()
        for c, g in zip(chunk, got):
            want = g.decode("utf-8")
            if tok.normalize_char(chr(c)) != want:
                differ[c] = want
    ranges = []
    for c in sorted(differ):
        if ranges and ranges[-1][1] == c - 1 and ranges[-1][2] == differ[c]:
            ranges[-1][1] = c
        else:
            ranges.append([c, c, differ[c]])
    punctuation = extra_punctuation(code_points, ranges)
    OUT.write_text(json.dumps({
        "about": "code points where tf-text's FastBertNormalizer (uncased) differs from "
                 "kerasbert_lite's unicodedata rules; made by "
                 "lite/tools/make_normalization_exceptions.py",
        "tensorflow_text": tf_text.__version__,
        "python_unicodedata": unicodedata.unidata_version,
        "ranges": ranges, "punctuation": punctuation}, ensure_ascii=False, indent=0) + "\n",
        encoding="utf-8")
    print(f"{OUT}: {len(differ)} code points in {len(ranges)} ranges, "
          f"{len(punctuation)} extra punctuation")


def extra_punctuation(code_points, ranges):
    from kerasbert.bert_tokenizer import BertTokenizer
    from kerasbert.from_pretrained import embedded_model_dir
    vocab = str(embedded_model_dir() / "vocab.txt")
    graph = BertTokenizer(vocab)
    lite = wordpiece.WordPieceTokenizer(vocab)
    lite._starts, lite._ranges = [r[0] for r in ranges], ranges
    found = []
    for start in range(0, len(code_points), 20000):
        chunk = code_points[start:start + 20000]
        texts = ["ab" + chr(c) + "cd" + chr(c) for c in chunk]
        for c, text, want in zip(chunk, texts, graph.wordpiece(tf.constant(texts)).to_list()):
            if lite.tokenize(text) != want and len(want) == 4 and not wordpiece._is_punctuation(
                    chr(c)):
                found.append(c)
    return found


if __name__ == "__main__":
    main()
