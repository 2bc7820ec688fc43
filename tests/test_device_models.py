"""The MediaPipe-ready files of an export, run by runtimes this project did not write.

MediaPipe's own Python TextEmbedder and TextClassifier (its own C++
WordPiece tokenizer, its own metadata reader) and the stock LiteRT
interpreter without tf-text ops, on the shared two-member export (a cosine
bi-encoder and a cross-encoder; test_export_fixtures.py), against the
members' Keras outputs computed independently of the export code.
"""

import json

import numpy as np
import pytest

from export.device_models import DEVICE_KINDS, SST_LABELS, choose_embedder
from export.mediapipe_metadata import METADATA_NAME, bert_metadata
from kerasbert_lite.tflite_file import packed_files
from export.multitask_ensemble import MultitaskEnsemble
from export.tflite_runtime import custom_op_names, load_interpreter
from test_export_fixtures import MAX_LENGTH, PAIRS, SENTENCES, VOCAB, expected_outputs

mp_text = pytest.importorskip("mediapipe.tasks.python.text")
from mediapipe.tasks.python.core.base_options import BaseOptions  # noqa: E402

FLOAT_TOL = 1e-4


@pytest.fixture(scope="module")
def manifest(export_dir):
    return json.loads((export_dir / "manifest.json").read_text())


def _embedder(path):
    options = mp_text.TextEmbedderOptions(base_options=BaseOptions(model_asset_path=str(path)))
    return mp_text.TextEmbedder.create_from_options(options)


def _classifier(path):
    options = mp_text.TextClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    return mp_text.TextClassifier.create_from_options(options)


def test_manifest_names_the_embedder_member_and_the_input_order(manifest, runs):
    device = manifest["device"]
    # The bi-encoder with the cosine head, not the cross-encoder.
    assert device["embedder"]["written"] and device["embedder"]["member"] == 0
    assert device["embedder"]["run"] == str(runs["bi"])
    assert device["embedder"]["score_from_cosine"] == "5 * max(cosine, 0)"
    assert device["sentiment"]["members"] == [0, 1]
    assert device["sentiment"]["labels"] == list(SST_LABELS)
    for kind in DEVICE_KINDS:
        assert sorted(manifest["files"][kind]["input_order"]) == ["ids", "mask", "segment_ids"]
    report = manifest["verification"]["device"]
    assert report["passed"] and report["worst"] <= FLOAT_TOL
    assert report["mediapipe"]["ran"]
    assert report["mediapipe"]["embedder_float32"]["max_abs_diff"] <= FLOAT_TOL


@pytest.mark.parametrize("kind", list(DEVICE_KINDS))
def test_one_signature_builtin_ops_stable_tensor_names(export_dir, manifest, kind):
    entry = manifest["files"][kind]
    data = (export_dir / entry["path"]).read_bytes()
    assert custom_op_names(data) == []
    interpreter = load_interpreter(export_dir / entry["path"], custom_ops=False)
    assert len(interpreter.get_signature_list()) == 1
    # Position i of the manifest's order is input i of the file, by its tensor name.
    assert [d["name"] for d in interpreter.get_input_details()] == entry["input_order"]
    assert [d["name"] for d in interpreter.get_output_details()] == [entry["output"]]
    assert all(d["dtype"] == np.int32 and d["shape_signature"][-1] == MAX_LENGTH
               for d in interpreter.get_input_details())


def test_metadata_read_by_mediapipes_schema(export_dir, manifest):
    # MediaPipe's generated reader, not ours: the field slots must agree.
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from tensorflow.lite.python import schema_py_generated as schema
    data = (export_dir / "sentiment_int8.tflite").read_bytes()
    model = schema.Model.GetRootAsModel(bytearray(data), 0)
    (entry,) = [model.Metadata(i) for i in range(model.MetadataLength())
                if model.Metadata(i).Name().decode() == METADATA_NAME]
    buf = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert meta.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)
    root = meta.ModelMetadata.GetRootAsModelMetadata(buf, 0)
    graph = root.SubgraphMetadata(0)
    names = [graph.InputTensorMetadata(i).Name().decode()
             for i in range(graph.InputTensorMetadataLength())]
    assert names == manifest["files"]["sentiment_int8"]["input_order"]
    unit = graph.InputProcessUnits(0)
    assert unit.OptionsType() == meta.ProcessUnitOptions.BertTokenizerOptions
    options = meta.BertTokenizerOptions()
    options.Init(unit.Options().Bytes, unit.Options().Pos)
    assert options.VocabFile(0).Name().decode() == "vocab.txt"
    assert options.VocabFile(0).Type() == meta.AssociatedFileType.VOCABULARY
    label = graph.OutputTensorMetadata(0).AssociatedFiles(0)
    assert (label.Name().decode(), label.Type()) == (
        "labels.txt", meta.AssociatedFileType.TENSOR_AXIS_LABELS)
    packed = packed_files(data)
    assert packed["vocab.txt"].decode().split("\n")[:-1] == VOCAB
    assert packed["labels.txt"].decode().split("\n")[:-1] == list(SST_LABELS)


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_mediapipe_text_embedder_gives_the_members_embedding_and_score(export_dir, runs, kind):
    want = expected_outputs([runs["bi"]], "embed", SENTENCES)
    with _embedder(export_dir / f"embedder_{kind}.tflite") as embedder:
        got = np.stack([embedder.embed(s).embeddings[0].embedding for s in SENTENCES])
        a, b = PAIRS
        cosines = np.array([mp_text.TextEmbedder.cosine_similarity(
            embedder.embed(x).embeddings[0], embedder.embed(y).embeddings[0])
            for x, y in zip(a, b)])
    scores = expected_outputs([runs["bi"]], "similarity", a, b)
    if kind == "float32":
        np.testing.assert_allclose(got, want, atol=FLOAT_TOL)
        # The app's score from MediaPipe's own cosine is the member's similarity.
        np.testing.assert_allclose(5 * np.maximum(cosines, 0), scores, atol=1e-3)
    else:
        cos = np.sum(got * want, -1) / np.linalg.norm(got, axis=-1)
        assert cos.min() > 0.98
        assert 0 < np.max(np.abs(5 * np.maximum(cosines, 0) - scores)) < 0.3


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_mediapipe_text_classifier_gives_the_ensembles_probabilities(export_dir, runs, kind):
    want = expected_outputs([runs["bi"], runs["cross"]], "sentiment", SENTENCES)
    with _classifier(export_dir / f"sentiment_{kind}.tflite") as classifier:
        results = [classifier.classify(s).classifications[0].categories for s in SENTENCES]
    got = np.zeros_like(want)
    for row, categories in enumerate(results):
        assert sorted(c.category_name for c in categories) == sorted(SST_LABELS)
        for c in categories:
            assert c.category_name == SST_LABELS[c.index]
            got[row, c.index] = c.score
    np.testing.assert_allclose(got, want, atol=FLOAT_TOL if kind == "float32" else 0.05)


def test_mediapipe_needs_the_normalisation_an_app_applies(export_dir, runs):
    # MediaPipe's tokenizer keeps accents and compatibility forms: "thé" is [UNK]
    # to it but "the" to the model's tokenizer. Normalised first, they agree.
    from export.device_verification import bert_normalize
    texts = ["thé cät sät ön thé mät .", "ＴＨＥ ﬁlm"]
    want = expected_outputs([runs["bi"]], "embed", texts)
    with _embedder(export_dir / "embedder_float32.tflite") as embedder:
        raw = np.stack([embedder.embed(t).embeddings[0].embedding for t in texts])
        normalised = np.stack([embedder.embed(bert_normalize(t)).embeddings[0].embedding
                               for t in texts])
    assert bert_normalize(texts[0]) == "the cat sat on the mat ."
    assert np.abs(raw - want).max(-1).min() > 1e-2
    np.testing.assert_allclose(normalised, want, atol=FLOAT_TOL)


def test_no_embedder_without_a_cosine_bi_encoder(runs):
    ensemble = MultitaskEnsemble.from_runs([runs["cross"]])
    member, why = choose_embedder(ensemble)
    assert member is None and "cross/concat" in why and "not the cosine" in why
    assert choose_embedder(MultitaskEnsemble.from_runs([runs["cross"], runs["bi"]]))[0] == 1


def test_ids_in_files_record_their_real_input_order(export_dir, manifest):
    interpreter = load_interpreter(export_dir / "model_ids_float32.tflite", custom_ops=False)
    for task, entry in manifest["files"]["ids_float32"]["signatures"].items():
        runner = interpreter.get_signature_runner(task)
        inputs = runner.get_input_details()
        by_index = sorted(inputs, key=lambda n: inputs[n]["index"])
        assert by_index == entry["inputs"] == manifest["signatures"][task]["ids_inputs"]
    names = [d["name"] for d in interpreter.get_input_details()]
    assert not any("serving_default" in n or "StatefulPartitionedCall" in n for n in names)


def test_bert_metadata_refuses_other_inputs():
    with pytest.raises(ValueError, match="needs inputs"):
        bert_metadata(["token_ids", "mask", "segment_ids"], [("embedding", "", None)])
