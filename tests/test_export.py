"""export: the CLI end to end on fake runs, every signature through SavedModel and TFLite.

One export of a two-member ensemble (bi-encoder + cross-encoder, tiny
models with visibly random weights) is built once via `python -m export.run`
in-process and shared with test_scorer.py (see test_export_fixtures.py).
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops the SavedModel uses

from export.multitask_ensemble import SIGNATURES, MultitaskEnsemble
from training.run_folder import training_version
from export.tflite_runtime import custom_op_names, load_interpreter
from test_export_fixtures import (MAX_LENGTH, PAIRS, SENTENCES, VOCAB, expected_outputs,
                                  make_run)

FLOAT_TOL = 1e-4
# Dynamic-range int8 on these tiny random models: loose, but asserted.
INT8_TOL = {"sentiment": 0.05, "paraphrase": 0.05, "similarity": 0.25}
INT8_MIN_EMBED_COSINE = 0.98
PAIR_TASKS = ("paraphrase", "similarity")


@pytest.fixture(scope="module")
def expected(runs):
    """Per task: (inputs, Keras mean-of-members output) on edge-case texts."""
    members = [runs["bi"], runs["cross"]]
    out = {}
    for task in SIGNATURES:
        a, b = (PAIRS if task in PAIR_TASKS else (SENTENCES, None))
        out[task] = (a, b, expected_outputs(members, task, a, b))
    return out


def _feed(task, a, b):
    names = SIGNATURES[task][0]
    feed = {names[0]: np.array(a, dtype=object)}
    if b is not None:
        feed[names[1]] = np.array(b, dtype=object)
    return feed


def _check(task, got, want, int8=False):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape
    if not int8:
        assert np.max(np.abs(got - want)) <= FLOAT_TOL, task
    elif task == "embed":
        cos = np.sum(got * want, -1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
        assert cos.min() >= INT8_MIN_EMBED_COSINE
    else:
        assert np.max(np.abs(got - want)) <= INT8_TOL[task], task


def test_expected_outputs_are_not_trivial(expected):
    # Parity on near-constant outputs would prove little.
    for task, (_, _, want) in expected.items():
        spread = np.ptp(want, axis=0).max()
        assert spread > 0.05, f"{task} outputs barely depend on the input ({spread})"


def test_cli_writes_files_and_manifest(export_dir, runs):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert [m["path"] for m in manifest["members"]] == [str(runs["bi"]), str(runs["cross"])]
    assert [m["variant"] for m in manifest["members"]] == ["bi", "cross"]
    assert [m["pair_encoding"] for m in manifest["members"]] == ["bi", "cross"]
    # Which trainings were exported, in the terms results/em/summary.json uses.
    trainings = [m["training"] for m in manifest["members"]]
    assert trainings == [training_version(runs["bi"]), training_version(runs["cross"])]
    assert trainings[0] != trainings[1]
    assert manifest["max_length"] == MAX_LENGTH
    # Peak RSS in MiB: TensorFlow alone takes hundreds; more than the machine has is a unit slip.
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20
    assert 300 < manifest["peak_rss_mib"] < total_mib
    for kind in ("saved_model", "float32", "int8", "ids_float32", "ids_int8", "vocab"):
        entry = manifest["files"][kind]
        path = export_dir / entry["path"]
        assert path.exists(), kind
        if path.is_file():
            assert entry["bytes"] == path.stat().st_size
    assert (export_dir / "vocab.txt").read_text().split("\n")[:-1] == VOCAB
    # Each weight stored once (tracking the Keras models would store it twice).
    variables = sum(f.stat().st_size for f in (export_dir / "saved_model" / "variables").iterdir())
    assert variables < 1.3 * manifest["files"]["ids_float32"]["bytes"]
    report = manifest["verification"]
    assert report["passed"] and report["parity"]["worst"] <= FLOAT_TOL
    assert set(report["parity"]["max_abs_diff"]) == {"saved_model", "tflite_float32",
                                                     "tflite_ids_float32"}
    assert report["int8"]["embedding_cosine"]["min"] > INT8_MIN_EMBED_COSINE
    assert set(report["sizes"]) >= {"float32", "int8", "ids_float32", "ids_int8"}


@pytest.fixture(scope="module")
def saved_model(export_dir):
    return tf.saved_model.load(str(export_dir / "saved_model"))


@pytest.mark.parametrize("task", list(SIGNATURES))
def test_saved_model_signature_equals_keras_mean_of_members(saved_model, expected, task):
    loaded = saved_model
    a, b, want = expected[task]
    out = loaded.signatures[task](**{k: tf.constant(v.tolist(), tf.string)
                                     for k, v in _feed(task, a, b).items()})
    _check(task, out[SIGNATURES[task][1]].numpy(), want)


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_text_in_tflite_equals_keras(export_dir, expected, kind):
    interpreter = load_interpreter(export_dir / f"model_{kind}.tflite")
    assert set(interpreter.get_signature_list()) == set(SIGNATURES)
    for task, (inputs, output) in SIGNATURES.items():
        a, b, want = expected[task]
        runner = interpreter.get_signature_runner(task)
        assert tuple(interpreter.get_signature_list()[task]["inputs"]) == tuple(sorted(inputs))
        _check(task, runner(**_feed(task, a, b))[output], want, int8=kind == "int8")


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_ids_in_tflite_is_builtin_only_and_equals_keras(export_dir, expected, kind):
    path = export_dir / f"model_ids_{kind}.tflite"
    assert custom_op_names(path.read_bytes()) == []
    # The plain runtime, no tf-text registrar: fails if any custom op remains.
    interpreter = load_interpreter(path, custom_ops=False)
    for task, (_, output) in SIGNATURES.items():
        a, b, want = expected[task]
        feed = _ids_feed(task, a, b)
        # A mixed ensemble takes each sentence alone (bi) and the pair (cross).
        assert sorted(interpreter.get_signature_list()[task]["inputs"]) == sorted(feed)
        got = interpreter.get_signature_runner(task)(**feed)[output]
        _check(task, got, want, int8=kind == "int8")


def _ids_feed(task, a, b):
    """Ids-in inputs built here from the tokenizer, not by the export code."""
    from kerasbert.bert_tokenizer import BertTokenizer
    tok = BertTokenizer(VOCAB, max_length=MAX_LENGTH)
    if task not in PAIR_TASKS:
        return {k: v.numpy() for k, v in tok(a).items()}
    feed = {}
    for group, enc in (("a", tok(a)), ("b", tok(b)), ("pair", tok(a, b))):
        feed.update({f"{group}_{k}": v.numpy() for k, v in enc.items()})
    return feed


def test_int8_is_close_to_float32_but_not_identical(export_dir):
    # Guards against an "int8" file that silently kept float weights.
    sizes = {k: (export_dir / f"model_ids_{k}.tflite").stat().st_size for k in ("float32", "int8")}
    assert sizes["int8"] < sizes["float32"]
    f32 = load_interpreter(export_dir / "model_float32.tflite").get_signature_runner("similarity")
    i8 = load_interpreter(export_dir / "model_int8.tflite").get_signature_runner("similarity")
    feed = _feed("similarity", *PAIRS)
    diff = np.abs(f32(**feed)["score"] - i8(**feed)["score"])
    assert 0 < diff.max() <= INT8_TOL["similarity"]


def test_truncated_output_flags_over_long_inputs(export_dir):
    runner = load_interpreter(export_dir / "model_float32.tflite").get_signature_runner("embed")
    out = runner(text=np.array(["the cat", "the " * (MAX_LENGTH - 2), "the " * (MAX_LENGTH - 1)],
                               dtype=object))
    assert out["truncated"].tolist() == [0, 0, 1]
    pair = load_interpreter(export_dir / "model_float32.tflite").get_signature_runner("similarity")
    # 5 + 5 words fit alone (bi) and together ([CLS] 5 [SEP] 5 [SEP] = 13); 7 + 7 needs 17.
    out = pair(text_a=np.array(["a " * 5, "a " * 7], dtype=object),
               text_b=np.array(["a " * 5, "a " * 7], dtype=object))
    assert out["truncated"].tolist() == [0, 1]


def test_one_member_is_a_valid_ensemble(runs):
    ensemble = MultitaskEnsemble.from_runs([runs["cross"]])
    a, b = PAIRS
    want = expected_outputs([runs["cross"]], "similarity", a, b)
    np.testing.assert_allclose(ensemble.reference("similarity", a, b), want, atol=1e-5)
    endpoint, spec = ensemble.text_endpoints()["similarity"]
    got = tf.function(endpoint, input_signature=spec)(tf.constant(a), tf.constant(b))
    np.testing.assert_allclose(got["score"].numpy(), want, atol=FLOAT_TOL)


@pytest.mark.parametrize("kind", ["bi", "cross"])
def test_members_keep_only_the_positions_the_export_reads(runs, kind):
    """`with_positions`: the table's first MAX_LENGTH rows, every other weight as it was."""
    from export.multitask_ensemble import with_positions
    from kerasbert import BertTokenizer
    from test_export_fixtures import load_member

    member = load_member(runs[kind])
    assert member.backbone.max_sequence_length == 32 > MAX_LENGTH
    trimmed = with_positions(member, MAX_LENGTH)
    assert trimmed.backbone.max_sequence_length == MAX_LENGTH
    table = {w.path: w.numpy() for w in member.weights}
    kept = {w.path: w.numpy() for w in trimmed.weights}
    positions = [p for p in table if "position_embedding" in p]
    assert len(positions) == 1 and kept[positions[0]].shape[0] == MAX_LENGTH
    np.testing.assert_array_equal(kept[positions[0]], table[positions[0]][:MAX_LENGTH])
    for path in table.keys() - set(positions):
        np.testing.assert_array_equal(kept[path], table[path], err_msg=path)
    tok = BertTokenizer(VOCAB, max_length=MAX_LENGTH)
    x = tok(SENTENCES, max_length=MAX_LENGTH)
    np.testing.assert_allclose(trimmed.task_model("sentiment")(x, training=False),
                               member.task_model("sentiment")(x, training=False), atol=1e-6)
    assert with_positions(trimmed, MAX_LENGTH) is trimmed
    # The ensemble loaded for export holds the trimmed members.
    ensemble = MultitaskEnsemble.from_runs([runs[kind]])
    assert ensemble.members[0].backbone.max_sequence_length == MAX_LENGTH


def test_members_must_share_the_vocabulary(tmp_path, runs, capsys):
    other = make_run(tmp_path / "other", seed=7, vocab=VOCAB[:-1] + ["zebra"], pair_encoding="bi")
    with pytest.raises(ValueError, match=r"other/vocab.txt differs .*line 36"):
        MultitaskEnsemble.from_runs([runs["bi"], other])
    from export.run import main
    assert main(["--runs", str(runs["bi"]), str(other), "--out", str(tmp_path / "x")]) == 2
    assert "must share one vocabulary" in capsys.readouterr().err
    cased = tmp_path / "cased"
    shutil.copytree(runs["cross"], cased)
    config = json.loads((cased / "config.json").read_text())
    (cased / "config.json").write_text(json.dumps({**config, "lowercase": False}))
    with pytest.raises(ValueError, match=r"cased/config.json: lowercase=False but "
                                         r".*/config.json has True"):
        MultitaskEnsemble.from_runs([runs["bi"], cased])


def test_unusable_run_folders_are_named(tmp_path, runs, capsys):
    from export.run import main
    broken = tmp_path / "broken"
    shutil.copytree(runs["bi"], broken)
    (broken / "best.keras").unlink()
    assert main(["--runs", str(broken), "--out", str(tmp_path / "x")]) == 2
    assert f"{broken / 'best.keras'}: missing" in capsys.readouterr().err
    (broken / "best.keras").write_bytes(b"not a zip")
    (broken / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        MultitaskEnsemble.from_runs([broken])
    (broken / "config.json").write_text(json.dumps({"variant": "v", "max_length": 16,
                                                    "lowercase": True}))
    with pytest.raises(ValueError, match="best.keras: cannot load the model"):
        MultitaskEnsemble.from_runs([broken])
    with pytest.raises(ValueError, match="exceeds a member's 32 position embeddings"):
        MultitaskEnsemble.from_runs([runs["bi"]], max_length=33)


def test_verification_fails_on_parity_beyond_tolerance(export_dir, runs):
    from export.verification import verify_export
    manifest = json.loads((export_dir / "manifest.json").read_text())
    ensemble = MultitaskEnsemble.from_runs([runs["bi"], runs["cross"]])
    report = verify_export(ensemble, export_dir, manifest["files"], num_parity=4, num_metric=8,
                           tolerance=0.0, log=lambda *_: None)
    # Exact float equality does not hold across TF and TFLite kernels.
    assert not report["passed"]


def test_cli_exit_status_is_1_when_parity_fails(monkeypatch, tmp_path, capsys):
    import export.exporter
    from export.run import main
    monkeypatch.setattr(export.exporter, "export_ensemble", lambda *a, **k: {
        "verification": {"passed": False, "parity": {"worst": 3e-3}}})
    assert main(["--runs", "r", "--out", str(tmp_path)]) == 1
    assert "float parity FAILED" in capsys.readouterr().err
