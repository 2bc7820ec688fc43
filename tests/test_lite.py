"""kerasbert_lite: the TensorFlow-free tokenizer, scorer and CLI.

The tokenizer against kerasbert's in-graph tf-text tokenizer (every Unicode
code point, every SST/STS dev text, edge strings); the scorer on the
shared tiny export against the members' Keras outputs; the package in a
fresh process that must never import TensorFlow.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasbert.bert_tokenizer import BertTokenizer
from kerasbert.from_pretrained import embedded_model_dir
from kerasbert_lite import ModelFileError, SimilarityScorer, WordPieceTokenizer
from kerasbert_lite.__main__ import main
from test_export_fixtures import MAX_LENGTH, PAIRS, SENTENCES, expected_outputs

EDGE = ["", "   ", "naïve café résumé", "ÀÉÎ", "日本語のテキスト", "中文测试", "猫在垫子上",
        "I love it 🙂🙂 !", "😀😀😀", "Привет, мир!", "مرحبا بالعالم", "שלום עולם", "हिन्दी",
        "한국어", "İstanbul", "zero\u200bwidth", "soft\u00adhyphen", "tab\there\nnewline",
        "x²", "™", "well…", "ＡＢＣ", "ﬁne", "ß", "ς", "a\x12b", "a\x97b", "\ufeffbom",
        "supercalifragilisticexpialidocious" * 3, "é" * 51, "e" * 100, "e" * 101,
        "a" * 100_000, "don't stop-believing (now)!", "\ud800 lone"]


@pytest.fixture(scope="module")
def vocab_path():
    return str(embedded_model_dir() / "vocab.txt")


@pytest.fixture(scope="module")
def graph_tok(vocab_path):
    return BertTokenizer(vocab_path, lowercase=True)


@pytest.fixture(scope="module")
def lite_tok(vocab_path):
    return WordPieceTokenizer(vocab_path, lowercase=True)


def _graph_ids(tok, texts):
    return tok.wordpiece(tf.constant([t.encode("utf-8", "replace") for t in texts])).to_list()


def test_every_code_point_tokenises_as_in_graph(graph_tok, lite_tok):
    # Each code point between letters and at a word's end: normalisation,
    # punctuation and CJK splitting, and WordPiece all have to agree.
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    differ = []
    for start in range(0, len(code_points), 20000):
        texts = ["ab" + chr(c) + "cd" + chr(c) for c in code_points[start:start + 20000]]
        for text, want in zip(texts, _graph_ids(graph_tok, texts)):
            if lite_tok.tokenize(text) != want:
                differ.append(hex(ord(text[2])))
    assert differ == []


def test_edge_strings_tokenise_as_in_graph(graph_tok, lite_tok):
    texts = [t.encode("utf-8", "replace").decode("utf-8") for t in EDGE]
    assert [lite_tok.tokenize(t) for t in texts] == _graph_ids(graph_tok, texts)
    # One huge "word" is one [UNK] in both, and reported as a loss.
    enc = lite_tok.encode(["a" * 100_000, "e" * 100, "e" * 101], max_length=128)
    assert enc["token_ids"][0, :3].tolist() == [lite_tok.cls_id, lite_tok.unk_id, lite_tok.sep_id]
    assert enc["truncated"].tolist() == [True, False, True]


def test_dev_texts_encode_as_in_graph(graph_tok, lite_tok, sst_dev_sentences, sts_dev_pairs):
    for length in (16, 128):
        want = graph_tok(sst_dev_sentences, max_length=length)
        got = lite_tok.encode(sst_dev_sentences, max_length=length)
        for key in ("token_ids", "segment_ids", "padding_mask"):
            np.testing.assert_array_equal(got[key], want[key].numpy())
        np.testing.assert_array_equal(got["lengths"],
                                      graph_tok.token_lengths(sst_dev_sentences).numpy())
        a, b = [p[0] for p in sts_dev_pairs], [p[1] for p in sts_dev_pairs]
        want = graph_tok(a, b, max_length=length)
        got = lite_tok.encode_pairs(a, b, max_length=length)
        for key in ("token_ids", "segment_ids", "padding_mask"):
            np.testing.assert_array_equal(got[key], want[key].numpy())


NONEMPTY = [i for i, (a, b) in enumerate(zip(*PAIRS)) if a.strip() and b.strip()]


def test_embedder_scores_are_the_bi_members_similarity(export_dir, runs):
    a, b = PAIRS
    want = expected_outputs([runs["bi"]], "similarity", a, b)
    scorer = SimilarityScorer(export_dir / "embedder_float32.tflite")
    with pytest.warns(UserWarning, match="no tokens"):
        got, truncated = scorer.score_batch(a, b, return_truncated=True)
    np.testing.assert_allclose(got[NONEMPTY], want[NONEMPTY], atol=1e-4)
    assert np.isnan(np.delete(got, NONEMPTY)).all()
    # "dog " * 20 is 20 tokens, beyond MAX_LENGTH - 2.
    assert truncated.tolist() == [len(x.split()) > MAX_LENGTH - 2 or len(y.split()) >
                                  MAX_LENGTH - 2 for x, y in zip(a, b)]
    emb = scorer.embed(SENTENCES[:2])
    np.testing.assert_allclose(emb, expected_outputs([runs["bi"]], "embed", SENTENCES[:2]),
                               atol=1e-4)
    assert scorer.score(a[0], b[0]) == pytest.approx(float(want[0]), abs=1e-4)


def test_ids_in_file_scores_the_whole_ensemble(export_dir, runs):
    members = [runs["bi"], runs["cross"]]
    a, b = PAIRS
    scorer = SimilarityScorer(export_dir / "model_ids_float32.tflite", batch_size=3)
    with pytest.warns(UserWarning):
        got = scorer.score_batch(a, b)
    want = expected_outputs(members, "similarity", a, b)
    np.testing.assert_allclose(got[NONEMPTY], want[NONEMPTY], atol=1e-4)
    texts = [s for s in SENTENCES if s.strip()]
    labels, probs = scorer.sentiment(texts)
    want = expected_outputs(members, "sentiment", texts)
    np.testing.assert_allclose(probs, want, atol=1e-4)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    names = manifest["device"]["sentiment"]["labels"]
    assert labels == [names[i] for i in want.argmax(-1)]


def test_sentiment_file_and_export_folder(export_dir, runs):
    texts = ["the film is not good", ""]
    scorer = SimilarityScorer(export_dir)
    assert [m.path.name for m in scorer.models] == ["embedder_int8.tflite",
                                                    "sentiment_int8.tflite"]
    with pytest.warns(UserWarning, match="1 text"):
        labels, probs = SimilarityScorer(export_dir / "sentiment_float32.tflite").sentiment(texts)
    want = expected_outputs([runs["bi"], runs["cross"]], "sentiment", texts[:1])
    np.testing.assert_allclose(probs[:1], want, atol=1e-4)
    assert labels[1] is None and np.isnan(probs[1]).all()
    with pytest.raises(ModelFileError, match="cannot score .* embedder_"):
        SimilarityScorer(export_dir / "sentiment_int8.tflite").score("a", "b")


def test_clear_refusals(export_dir, tmp_path):
    with pytest.raises(ModelFileError, match="tf-text custom ops .* embedder_int8.tflite"):
        SimilarityScorer(export_dir / "model_int8.tflite")
    (tmp_path / "model_ids_int8.tflite").write_bytes(
        (export_dir / "model_ids_int8.tflite").read_bytes())
    with pytest.raises(ModelFileError, match="needs vocab.txt beside it"):
        SimilarityScorer(tmp_path / "model_ids_int8.tflite")
    (tmp_path / "broken.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        SimilarityScorer(tmp_path / "broken.tflite")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(ModelFileError, match="not an export folder"):
        SimilarityScorer(tmp_path / "empty_folder")
    scorer = SimilarityScorer(export_dir / "embedder_int8.tflite")
    for a, b in (("", ""), ("x", "  "), ("\u200b", "x")):
        with pytest.raises(ValueError, match="no tokens"):
            scorer.score(a, b)


def test_bad_text_goes_through_every_file(export_dir):
    texts = [t for t in EDGE if t.strip()]
    for name in ("embedder_int8.tflite", "model_ids_int8.tflite", "sentiment_int8.tflite"):
        scorer = SimilarityScorer(export_dir / name)
        if "sentiment" in name:
            labels, probs = scorer.sentiment(texts)
            assert all(label is not None for label in labels)
            assert np.allclose(probs.sum(-1), 1, atol=1e-4)
        else:
            scores, truncated = scorer.score_batch(texts, texts[::-1], return_truncated=True)
            assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 5)).all()
            assert truncated[texts.index("a" * 100_000)]


def test_cli(export_dir, tmp_path, capsys):
    assert main([str(export_dir / "embedder_int8.tflite"), "the cat sat", "a cat sat"]) == 0
    assert 0 <= float(capsys.readouterr().out) <= 5
    assert main([str(export_dir / "sentiment_int8.tflite"), "the film is good"]) == 0
    label, probs = capsys.readouterr().out.rstrip("\n").split("\t")
    assert label in json.loads((export_dir / "manifest.json").read_text())[
        "device"]["sentiment"]["labels"] and len(probs.split()) == 5
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\nthe cat\ta cat\n\tx\n" + "cat " * 40 + "\tdog\n")
    assert main([str(export_dir), "--pairs", str(pairs), "--out", str(tmp_path / "o.tsv")]) == 0
    err = capsys.readouterr().err
    assert "scored 3 pair(s)" in err and "1 pair(s) with an empty side scored nan" in err
    assert f"1 of 3 pair(s) exceeded {MAX_LENGTH} tokens" in err
    rows = (tmp_path / "o.tsv").read_text().split("\n")[1:-1]
    assert [r.split("\t")[2] for r in rows][1] == "nan"
    pairs.write_text("")
    assert main([str(export_dir), "--pairs", str(pairs)]) == 0
    assert "holds no pairs" in capsys.readouterr().err
    assert main([str(export_dir / "model_float32.tflite"), "a", "b"]) == 2
    assert "LiteRT alone cannot run" in capsys.readouterr().err
    assert main([str(export_dir / "embedder_int8.tflite"), "", "b"]) == 2
    assert "no tokens" in capsys.readouterr().err


def test_export_score_takes_lite_files_too(export_dir, capsys):
    from export.score import main as export_main
    assert export_main([str(export_dir / "embedder_float32.tflite"), "the cat", "a cat"]) == 0
    lite = float(capsys.readouterr().out)
    assert lite == pytest.approx(
        SimilarityScorer(export_dir / "embedder_float32.tflite").score("the cat", "a cat"),
        abs=1e-4)


def test_the_package_never_imports_tensorflow(export_dir):
    code = (
        "import sys\n"
        "from kerasbert_lite import SimilarityScorer\n"
        f"s = SimilarityScorer({str(export_dir)!r})\n"
        "print(s.score('the cat sat', 'a cat sat'))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_text', 'keras')], 'imported TensorFlow'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert 0 <= float(out.stdout.strip().split("\n")[-1]) <= 5
