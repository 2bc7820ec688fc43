"""SimilarityScorer and `python -m export.score`: values, edge inputs, clear errors.

Uses the export shared with test_export.py (built once per process).
"""

import numpy as np
import pytest
import tensorflow as tf

from kerasbert_lite.model_file_error import ModelFileError
from export.score import main
from export.similarity_scorer import SimilarityScorer
from test_export_fixtures import MAX_LENGTH, PAIRS, expected_outputs, exported

EDGE_A = ["", "😀🎸🔥", "猫在垫子上睡觉", "the cat sat", "\t", "ÀÉÎ café"]
EDGE_B = ["", "", "狗", "😀", "  ", "CAFE"]


@pytest.fixture(scope="module")
def scorer(export_dir):
    return SimilarityScorer(export_dir / "model_int8.tflite")


@pytest.fixture(scope="module")
def float_scorer(export_dir):
    return SimilarityScorer(export_dir / "model_float32.tflite", num_threads=1)


def test_float_scorer_equals_keras(float_scorer):
    a, b = PAIRS
    want = expected_outputs(list(exported()[1].values()), "similarity", a, b)
    with pytest.warns(UserWarning, match="2 pair"):
        got = float_scorer.score_batch(a, b)
    empty = [not x.strip() or not y.strip() for x, y in zip(a, b)]
    assert np.isnan(got[empty]).all()
    np.testing.assert_allclose(got[~np.array(empty)], want[~np.array(empty)], atol=1e-4)
    assert float_scorer.max_length == MAX_LENGTH


def test_int8_scorer_is_close_to_float(scorer, float_scorer):
    a, b = PAIRS
    assert np.nanmax(np.abs(scorer.score_batch(a, b) - float_scorer.score_batch(a, b))) < 0.25


def test_score_and_batch_agree_and_keep_order(scorer):
    a, b = PAIRS
    batch = scorer.score_batch(a, b)
    assert batch.dtype == np.float32 and batch.shape == (len(a),)
    singles = [scorer.score(x, y) if x.strip() and y.strip() else float("nan")
               for x, y in zip(a, b)]
    assert all(isinstance(s, float) for s in singles)
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    # Internal length sorting and small batches must not reorder results.
    small = SimilarityScorer(scorer.model_path, batch_size=3)
    np.testing.assert_allclose(small.score_batch(a, b), batch, atol=1e-5)


def test_calls_without_reallocation_match_the_signature_runner(scorer):
    # The scorer skips the runner's per-call resize + allocate when the batch
    # size repeats; varying string lengths must still give the runner's result.
    assert scorer._fast, "ai-edge-litert changed its SignatureRunner internals"
    slow = SimilarityScorer(scorer.model_path)
    slow._fast = False
    a, b = PAIRS
    for x, y in list(zip(a, b)) + list(zip(b, a)):
        if x.strip() and y.strip():
            assert scorer.score(x, y) == pytest.approx(slow.score(x, y), abs=1e-6)
    pair_batches = [(a[:3], b[:3]), (a[3:6], b[3:6]), (a[:3], b[5:])]
    for part_a, part_b in pair_batches:
        np.testing.assert_allclose(scorer.score_batch(part_a, part_b),
                                   slow.score_batch(part_a, part_b), atol=1e-6)


def test_edge_inputs_score_without_crashing(scorer):
    with pytest.warns(UserWarning, match="3 pair"):
        scores, truncated = scorer.score_batch(EDGE_A, EDGE_B, return_truncated=True)
    # A side with no tokens (empty, whitespace) has no score, not 5.0 for "identical".
    empty = np.array([not a.strip() or not b.strip() for a, b in zip(EDGE_A, EDGE_B)])
    assert empty.tolist() == [True, True, False, False, True, False]
    assert np.isnan(scores[empty]).all()
    assert np.all((scores[~empty] >= 0) & (scores[~empty] <= 5))
    assert not truncated.any()
    for a, b in (("", ""), ("x", "\u200b"), ("\t", "x")):
        with pytest.raises(ValueError, match="no tokens"):
            scorer.score(a, b)
    assert np.isfinite(scorer.score("\ud800 lone surrogate", "x"))
    assert scorer.score_batch([], []).shape == (0,)


def test_over_long_input_is_truncated_and_reported(scorer):
    long_a = "the cat sat on the mat " * 10
    scores, truncated = scorer.score_batch([long_a, long_a + " dog dog dog", "a cat"],
                                           ["a dog", "a dog", "a dog"], return_truncated=True)
    assert truncated.tolist() == [True, True, False]
    # Words past the cut do not change the score.
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_num_threads(export_dir, scorer, threads):
    a, b = PAIRS
    threaded = SimilarityScorer(export_dir / "model_int8.tflite", num_threads=threads)
    np.testing.assert_allclose(threaded.score_batch(a, b), scorer.score_batch(a, b), atol=1e-4)


def test_bad_arguments(scorer):
    with pytest.raises(ValueError, match="texts_a has 2 strings but texts_b has 1"):
        scorer.score_batch(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"texts_b\[1\] is NoneType"):
        scorer.score_batch(["a", "b"], ["c", None])
    with pytest.raises(TypeError, match="not a single string"):
        scorer.score_batch("ab", "cd")


def _tflite_without_similarity(path):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return {"y": 2.0 * x}
    module = Doubler()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.double.get_concrete_function()], module)
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def bad_models(export_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_models")
    good = (export_dir / "model_int8.tflite").read_bytes()
    rng = np.random.default_rng(0)
    files = {
        "missing": folder / "missing.tflite",
        "random": folder / "random.tflite",
        "truncated": folder / "truncated.tflite",
        "garbled": folder / "garbled.tflite",
        "text": folder / "notes.txt",
        "folder": export_dir / "saved_model",
    }
    files["random"].write_bytes(rng.bytes(4096))
    files["truncated"].write_bytes(good[: len(good) // 3])
    # A valid header and identifier, then noise: only the flatbuffer verifier catches it.
    files["garbled"].write_bytes(good[:64] + rng.bytes(len(good) - 64))
    files["text"].write_text("hello\n")
    files["no_signature"] = _tflite_without_similarity(folder / "doubler.tflite")
    return files


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("random", "not a TFLite model"),
    ("truncated", "corrupted or unsupported TFLite model"),
    ("garbled", "corrupted or unsupported TFLite model"),
    ("text", "not a TFLite model"),
    ("folder", "is a folder"),
    ("no_signature", "has no 'similarity' signature"),
])
def test_bad_model_files_give_clear_errors(bad_models, case, message, capsys):
    path = bad_models[case]
    with pytest.raises(ModelFileError, match=message) as info:
        SimilarityScorer(path)
    assert str(info.value).startswith(str(path))
    assert main([str(path), "a", "b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:") and "Traceback" not in err


def test_ids_in_model_is_refused_with_a_hint(export_dir):
    with pytest.raises(ModelFileError, match="ids-in model"):
        SimilarityScorer(export_dir / "model_ids_int8.tflite")


# ---- the command line ----

def test_cli_scores_one_pair(export_dir, scorer, capsys):
    assert main([str(export_dir / "model_int8.tflite"), "the cat sat", "a dog"]) == 0
    out, err = capsys.readouterr()
    assert float(out) == pytest.approx(scorer.score("the cat sat", "a dog"), abs=1e-4)
    assert err == ""


def test_cli_reports_truncation_of_one_pair(export_dir, capsys):
    assert main([str(export_dir / "model_int8.tflite"), "cat " * 40, "dog"]) == 0
    assert f"1 of 1 pair(s) exceeded {MAX_LENGTH} tokens and were truncated" in \
        capsys.readouterr().err


@pytest.mark.parametrize("header", [True, False])
def test_cli_scores_a_pairs_file(export_dir, scorer, tmp_path, capsys, header):
    rows = [("the cat sat", "a dog"), ("", "猫"), ("😀", "the film"), ("cat " * 40, "dog")]
    lines = (["sentence1\tsentence2"] if header else []) + [f"{a}\t{b}" for a, b in rows]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\r\n".join(lines[:2]) + "\r\n\n" + "\n".join(lines[2:]) + "\n",
                     encoding="utf-8")
    out = tmp_path / "scores.tsv"
    assert main([str(export_dir / "model_int8.tflite"), "--pairs", str(pairs),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "scored 4 pair(s)" in err and "1 blank line(s) skipped" in err
    assert ("header skipped" in err) == header
    assert "1 of 4 pair(s) exceeded" in err
    written = out.read_text(encoding="utf-8").split("\n")
    assert written[0] == "text_a\ttext_b\tscore\ttruncated" and written[-1] == ""
    got = [line.split("\t") for line in written[1:-1]]
    assert [(a, b) for a, b, _, _ in got] == rows
    want = scorer.score_batch([a for a, _ in rows], [b for _, b in rows])
    np.testing.assert_allclose([float(s) for _, _, s, _ in got], want, atol=1e-4)
    assert [t for *_, t in got] == ["0", "0", "0", "1"]


@pytest.mark.parametrize("content,message", [
    (b"a\tb\nonly one column\n", r"pairs.tsv:2: expected 2 tab-separated columns .* got 1"),
    (b"a\tb\nx\ty\tz\n", r"pairs.tsv:2: expected 2 tab-separated columns .* got 3"),
    (b"a\tb\nc\td\n\xff\xfe\tbad\n", r"pairs.tsv:3: not valid UTF-8"),
])
def test_cli_names_the_bad_line(export_dir, tmp_path, capsys, content, message):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(content)
    assert main([str(export_dir / "model_int8.tflite"), "--pairs", str(pairs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_cli_missing_pairs_file(export_dir, tmp_path, capsys):
    missing = tmp_path / "nope.tsv"
    assert main([str(export_dir / "model_int8.tflite"), "--pairs", str(missing)]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err


def test_cli_usage_errors(export_dir, capsys):
    # One sentence asks for sentiment, which the text-in scorer does not give.
    assert main([str(export_dir / "model_int8.tflite"), "only one sentence"]) == 2
    assert "scores pairs only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(export_dir / "model_int8.tflite"), "a", "b", "c"])
    with pytest.raises(SystemExit):
        main([str(export_dir / "model_int8.tflite"), "a", "b", "--out", "x.tsv"])


def test_missing_tensorflow_text_says_what_to_install(export_dir, monkeypatch, capsys):
    # Without tf-text the text-in file cannot run: one line saying what to
    # install and which files run without it, not an ImportError traceback.
    import sys
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)  # import raises ImportError
    model = export_dir / "model_int8.tflite"
    assert main([str(model), "the cat sat", "a dog"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {model}: is a text-in model")
    assert "pip install tensorflow-text" in err and "embedder_int8.tflite" in err


def test_cli_write_error_names_the_output(export_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\tb\n")
    target = tmp_path / "a-file"
    target.write_text("")
    assert main([str(export_dir / "model_int8.tflite"), "--pairs", str(pairs),
                 "--out", str(target / "sub.tsv")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {target / 'sub.tsv'}: cannot write (Not a directory)\n"
