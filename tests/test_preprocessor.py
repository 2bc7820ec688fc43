"""`BertPreprocessor` inside `.keras` files, and `text_model` on a saved token-id model.

The preprocessor must give `BertTokenizer`'s ids exactly (singles, pairs,
truncation), carry its vocabulary as an asset of the `.keras` zip, and a
`best.keras`-style MultitaskBert wrapped with it must predict from raw
strings what the token-id model predicts from the tokenizer's batch.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert import BertBackbone, BertConfig, BertPreprocessor, BertTokenizer, MultitaskBert
from kerasbert import text_model
from test_export_fixtures import MAX_LENGTH, MEMBERS, VOCAB, randomize

SENTENCES = ["the cat sat on the mat .", "A dog is VERY happy!", "", "the " * 30, "猫 😀"]
OTHERS = ["a cat sat .", "the film", "two men play music", "dog", "the " * 20]


def _np(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


def test_same_ids_as_the_tokenizer():
    pre = BertPreprocessor(VOCAB, sequence_length=MAX_LENGTH)
    tok = BertTokenizer(VOCAB, max_length=MAX_LENGTH)
    single, expected = _np(pre(tf.constant(SENTENCES))), _np(tok(SENTENCES))
    assert single.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(single[key], expected[key])
    pair = _np(pre((tf.constant(SENTENCES), tf.constant(OTHERS))))
    for key, value in _np(tok(SENTENCES, OTHERS)).items():
        np.testing.assert_array_equal(pair[key], value)
    assert pair["token_ids"].shape == (len(SENTENCES), MAX_LENGTH)


def test_vocabulary_is_an_asset_of_the_keras_file(tmp_path):
    text = keras.Input(shape=(), dtype="string", name="text")
    model = keras.Model(text, BertPreprocessor(VOCAB, sequence_length=12, name="pre")(text))
    path = tmp_path / "pre.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        config = z.read("config.json").decode()
        (asset,) = [n for n in names if n.endswith("vocab.txt")]
        assert z.read(asset).decode().split("\n")[:len(VOCAB)] == VOCAB
    assert "[CLS]" not in config and json.loads(config)  # the vocabulary is not in the JSON
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("pre").vocabulary == VOCAB
    got = loaded.predict(tf.constant(SENTENCES), verbose=0)
    want = BertTokenizer(VOCAB, max_length=12)(SENTENCES)
    for key in want:
        np.testing.assert_array_equal(got[key], np.asarray(want[key]))


def test_without_vocabulary_it_says_so():
    with pytest.raises(ValueError, match="no vocabulary"):
        BertPreprocessor(sequence_length=8)(tf.constant(["a"]))
    with pytest.raises(ValueError, match="sequence_length must be at least 3"):
        BertPreprocessor(VOCAB, sequence_length=2)


@pytest.mark.parametrize("member", ["bi", "cross"])
def test_saved_token_model_wrapped_takes_strings(tmp_path, member):
    # What the lead's flow will be: best.keras (token ids in) + the run's vocab.txt.
    keras.utils.set_random_seed(3)
    bert = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny(
        vocabulary_size=len(VOCAB), max_sequence_length=32)), **MEMBERS[member])
    randomize(bert, 3)
    bert.save(tmp_path / "best.keras")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    loaded = keras.saving.load_model(tmp_path / "best.keras")
    pre = BertPreprocessor(str(tmp_path / "vocab.txt"), sequence_length=MAX_LENGTH)
    tok = BertTokenizer(VOCAB, max_length=MAX_LENGTH)

    sentiment = text_model(loaded, pre)
    got = sentiment.predict(SENTENCES, verbose=0)  # a plain list of strings
    want = np.asarray(bert.task_model("sentiment")(tok(SENTENCES), training=False))
    np.testing.assert_allclose(got, want, atol=1e-5)

    similarity = text_model(loaded, pre, task="similarity")
    pair = ({"pair": tok(SENTENCES, OTHERS)} if member == "cross"
            else {"a": tok(SENTENCES), "b": tok(OTHERS)})
    want = np.asarray(bert.task_model("similarity")(pair, training=False))
    got = similarity.predict({"text_a": SENTENCES, "text_b": OTHERS}, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)

    # The wrapped model is itself a .keras file: strings in after loading, no run folder.
    similarity.save(tmp_path / "text.keras")
    (tmp_path / "vocab.txt").unlink()
    again = keras.saving.load_model(tmp_path / "text.keras")
    np.testing.assert_allclose(again.predict({"text_a": SENTENCES, "text_b": OTHERS}, verbose=0),
                               want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(again({"text_a": ["the cat"], "text_b": ["a cat"]})),
                               similarity.predict({"text_a": ["the cat"], "text_b": ["a cat"]},
                                                  verbose=0), atol=1e-6)


def test_a_model_without_a_preprocessor_names_what_to_pass():
    bert = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny(vocabulary_size=8)))
    with pytest.raises(ValueError, match="no preprocessor attached: pass one"):
        text_model(bert)
