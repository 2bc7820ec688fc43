"""Checkpoint loading against Hugging Face: safetensors, Google TF checkpoints, errors, round trips."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import kerasbert  # noqa: E402
from kerasbert import BertBackbone, BertConfig  # noqa: E402
from kerasbert.from_pretrained import read_checkpoint, save_pretrained  # noqa: E402
from kerasbert.weight_conversion import load_state_dict  # noqa: E402

TOL = 1e-4
HF_CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(94)]
LENGTHS = (12, 7, 3, 9)


def _batch():
    """A (4, 12) batch with padding in three rows and both segments."""
    rng = np.random.default_rng(0)
    t = max(LENGTHS)
    mask = (np.arange(t)[None, :] < np.array(LENGTHS)[:, None]).astype("int32")
    ids = rng.integers(5, 99, size=mask.shape).astype("int32")
    ids[:, 0] = 2
    segments = ((np.arange(t)[None, :] >= np.array([6, 4, 2, 5])[:, None]) * mask).astype("int32")
    return {"token_ids": ids * mask, "segment_ids": segments, "padding_mask": mask}


def _keras_outputs(backbone, batch):
    out = backbone(batch)
    return np.asarray(out["sequence_output"]), np.asarray(out["pooled_output"])


def _hf_outputs(model, batch):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["token_ids"], dtype=torch.long),
                    token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
                    attention_mask=torch.tensor(batch["padding_mask"], dtype=torch.long))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _diffs(got, expected, mask):
    """(sequence max|diff| over real positions, pooled max|diff|)."""
    keep = mask.astype(bool)
    seq = float(np.max(np.abs(got[0][keep] - expected[0][keep])))
    pooled = float(np.max(np.abs(got[1] - expected[1])))
    return seq, pooled


def _assert_parity(got, expected, mask, label, record=None):
    seq, pooled = _diffs(got, expected, mask)
    print(f"\n[parity] {label}: sequence_output max|diff| {seq:.3g}, pooled_output {pooled:.3g}")
    if record is not None:
        record(f"{label}_sequence_max_diff", seq)
        record(f"{label}_pooled_max_diff", pooled)
    assert seq <= TOL and pooled <= TOL, (label, seq, pooled)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A random tiny HF BertModel (every parameter perturbed), its folder and reference outputs."""
    torch.manual_seed(0)
    model = transformers.BertModel(
        transformers.BertConfig(**HF_CONFIG, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            # LayerNorm gammas around 1, everything else (biases included) non-zero,
            # so a gamma/beta or bias mix-up in the table cannot go unnoticed.
            param.copy_(1.0 + 0.2 * noise if "LayerNorm.weight" in name else 0.2 * noise)
    folder = tmp_path_factory.mktemp("hf_tiny")
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    batch = _batch()
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    return {"model": model, "folder": folder, "batch": batch, "state": state,
            "expected": _hf_outputs(model, batch)}


@pytest.fixture(scope="module")
def loaded(hf):
    """`from_pretrained` of the HF safetensors folder."""
    return kerasbert.from_pretrained(hf["folder"])


def _fresh_backbone():
    return BertBackbone.from_bert_config(BertConfig.from_dict(HF_CONFIG))


def test_hf_safetensors_folder_matches_hf(hf, loaded, record_property):
    backbone, tokenizer = loaded
    assert tokenizer.vocabulary_size == 99
    assert backbone.bert_config == BertConfig.from_dict(HF_CONFIG)
    got = _keras_outputs(backbone, hf["batch"])
    _assert_parity(got, hf["expected"], hf["batch"]["padding_mask"], "tiny_hf", record_property)
    # The reference is not trivially matched: a random backbone is far off.
    assert _diffs(_keras_outputs(_fresh_backbone(), hf["batch"]), hf["expected"],
                  hf["batch"]["padding_mask"])[0] > 0.1


def _google_name(hf_key, value):
    """HF key -> Google TF-checkpoint variable name and (in, out) layout, written out independently."""
    parts = hf_key.split(".")
    if parts[0] == "encoder":  # encoder.layer.3.x -> encoder/layer_3/x
        parts = ["encoder", f"layer_{parts[2]}"] + parts[3:]
    leaf = parts[-1]
    if "LayerNorm" in parts:
        parts[-1] = {"weight": "gamma", "bias": "beta"}[leaf]
    elif parts[-2].endswith("_embeddings"):
        parts = parts[:-1]  # bert/embeddings/word_embeddings
    elif leaf == "weight":
        parts[-1], value = "kernel", value.T
    return "bert/" + "/".join(parts), np.ascontiguousarray(value)


def _write_google_checkpoint(folder, variables):
    """Name-exact TF1 checkpoint, as Google's BERT release: Saver over a {name: variable} dict."""
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        var_list = {name: tf.compat.v1.Variable(value, name=f"v{i}")
                    for i, (name, value) in enumerate(sorted(variables.items()))}
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / "bert_model.ckpt"), write_meta_graph=False)
    # Google's zips ship no `checkpoint` state file.
    (folder / "checkpoint").unlink(missing_ok=True)


def test_google_tf_checkpoint_matches_hf(hf, tmp_path, record_property):
    variables = dict(_google_name(k, v) for k, v in hf["state"].items() if "position_ids" not in k)
    # Layout spot checks: the names and the (in, out) kernels of Google's release.
    assert variables["bert/encoder/layer_0/attention/self/query/kernel"].shape == (32, 32)
    assert variables["bert/encoder/layer_1/intermediate/dense/kernel"].shape == (32, 37)
    assert "bert/embeddings/LayerNorm/gamma" in variables
    assert variables["bert/embeddings/word_embeddings"].shape == (99, 32)
    rng = np.random.default_rng(2)
    # Optimizer slots, step counter and pre-training heads: present, never loaded.
    extras = {f"{name}/{slot}": rng.standard_normal(v.shape).astype("float32")
              for name, v in variables.items() for slot in ("adam_m", "adam_v")}
    extras.update({
        "global_step": np.int64(1000000),
        "cls/predictions/transform/dense/kernel": rng.standard_normal((32, 32)).astype("float32"),
        "cls/predictions/transform/dense/bias": np.zeros(32, "float32"),
        "cls/predictions/transform/LayerNorm/gamma": np.ones(32, "float32"),
        "cls/predictions/transform/LayerNorm/beta": np.zeros(32, "float32"),
        "cls/predictions/output_bias": np.zeros(99, "float32"),
        "cls/seq_relationship/output_weights": rng.standard_normal((2, 32)).astype("float32"),
        "cls/seq_relationship/output_bias": np.zeros(2, "float32"),
    })
    _write_google_checkpoint(tmp_path, {**variables, **extras})
    assert (tmp_path / "bert_model.ckpt.index").is_file()
    google_config = {**HF_CONFIG, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                     "attention_probs_dropout_prob": 0.1, "type_vocab_size": 2,
                     "initializer_range": 0.02}
    (tmp_path / "bert_config.json").write_text(json.dumps(google_config))
    shutil.copy(hf["folder"] / "vocab.txt", tmp_path / "vocab.txt")

    import tensorflow as tf
    stored = set(tf.train.load_checkpoint(str(tmp_path / "bert_model.ckpt"))
                 .get_variable_to_shape_map())
    assert "bert/encoder/layer_0/attention/self/query/kernel" in stored  # exact, unmangled names
    assert "bert/encoder/layer_0/attention/self/query/kernel/adam_m" in stored

    backbone, tokenizer = kerasbert.from_pretrained(tmp_path)
    assert tokenizer.vocabulary_size == 99
    got = _keras_outputs(backbone, hf["batch"])
    _assert_parity(got, hf["expected"], hf["batch"]["padding_mask"], "google_ckpt", record_property)


def test_missing_extra_and_misshapen_keys_raise_naming_them(hf):
    backbone = _fresh_backbone()
    before = backbone.get_weights()

    missing = dict(hf["state"])
    del missing["encoder.layer.1.output.dense.bias"]
    with pytest.raises(ValueError) as err:
        load_state_dict(backbone, missing)
    assert "encoder.layer.1.output.dense.bias" in str(err.value)
    assert "transformer_layer_1/output_dense/bias" in str(err.value)

    extra = {**hf["state"], "encoder.layer.0.attention.self.rotary.weight": np.zeros((4, 4))}
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.attention\.self\.rotary\.weight"):
        load_state_dict(backbone, extra)

    wrong = {**hf["state"], "encoder.layer.0.intermediate.dense.weight": np.zeros((36, 32))}
    with pytest.raises(ValueError) as err:
        load_state_dict(backbone, wrong)
    assert "encoder.layer.0.intermediate.dense.weight" in str(err.value)
    assert "(32, 36)" in str(err.value) and "(32, 37)" in str(err.value)

    # The same weight under two names (`bert.`-prefixed and bare) is an error too.
    twice = {**hf["state"], "bert.pooler.dense.bias": hf["state"]["pooler.dense.bias"]}
    with pytest.raises(ValueError, match="already written"):
        load_state_dict(backbone, twice)

    # All or nothing: no failed load assigned anything.
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pretraining_prefix_and_legacy_layer_norm_names_load(hf):
    prefixed = {f"bert.{k}": v for k, v in hf["state"].items()}
    prefixed.update({"cls.predictions.bias": np.zeros(99, "float32"),
                     "cls.seq_relationship.weight": np.zeros((2, 32), "float32")})
    legacy = {}
    for k, v in hf["state"].items():
        if "LayerNorm" in k:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                         "LayerNorm.beta")
        legacy[k] = v
    assert "encoder.layer.0.output.LayerNorm.gamma" in legacy
    for label, state in (("bert_prefix", prefixed), ("legacy_gamma_beta", legacy)):
        backbone = load_state_dict(_fresh_backbone(), state)
        _assert_parity(_keras_outputs(backbone, hf["batch"]), hf["expected"],
                       hf["batch"]["padding_mask"], label)


def test_pickle_checkpoint_needs_allow_pickle(hf, tmp_path):
    shutil.copy(hf["folder"] / "config.json", tmp_path / "config.json")
    shutil.copy(hf["folder"] / "vocab.txt", tmp_path / "vocab.txt")
    torch.save(hf["model"].state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        kerasbert.from_pretrained(tmp_path)
    backbone, _ = kerasbert.from_pretrained(tmp_path, allow_pickle=True)
    _assert_parity(_keras_outputs(backbone, hf["batch"]), hf["expected"],
                   hf["batch"]["padding_mask"], "pytorch_model_bin")


def test_hub_name_offline_is_a_clear_file_not_found(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time; patch the module too,
    # and point the cache at an empty folder so nothing cached can answer.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        kerasbert.from_pretrained("google-bert/bert-base-uncased")
    message = str(err.value)
    assert "google-bert/bert-base-uncased" in message and "Offline?" in message
    assert "local folder" in message
    # A path-like name that is not a folder says so instead of trying the hub.
    with pytest.raises(FileNotFoundError, match="not a folder"):
        kerasbert.from_pretrained(str(tmp_path / "no" / "such" / "model"))


def test_vocabulary_size_must_match_config(hf, tmp_path):
    shutil.copy(hf["folder"] / "config.json", tmp_path / "config.json")
    shutil.copy(hf["folder"] / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB[:-1]) + "\n")
    with pytest.raises(ValueError, match="98 tokens.*vocab_size=99"):
        kerasbert.from_pretrained(tmp_path)


def test_save_pretrained_round_trip_and_hf_reads_it(hf, loaded, tmp_path):
    backbone, tokenizer = loaded
    out_dir = save_pretrained(backbone, tokenizer, tmp_path / "saved")
    again, tokenizer2 = kerasbert.from_pretrained(out_dir)
    assert tokenizer2.vocabulary == tokenizer.vocabulary
    for a, b in zip(_keras_outputs(again, hf["batch"]), _keras_outputs(backbone, hf["batch"])):
        np.testing.assert_array_equal(a, b)
    _, state = read_checkpoint(out_dir)
    for key, value in hf["state"].items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)

    hf2, info = transformers.BertModel.from_pretrained(out_dir, output_loading_info=True,
                                                       attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf2.eval()
    assert hf2.config.hidden_size == 32 and hf2.config.intermediate_size == 37
    _assert_parity(_keras_outputs(backbone, hf["batch"]), _hf_outputs(hf2, hf["batch"]),
                   hf["batch"]["padding_mask"], "save_pretrained_then_hf")


class _RunsCode:
    """A pickle that would create a file when unpickled (if unpickling ran code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_damaged_weight_files_are_named(hf, tmp_path):
    from kerasbert_lite import ModelFileError

    shutil.copy(hf["folder"] / "config.json", tmp_path / "config.json")
    shutil.copy(hf["folder"] / "vocab.txt", tmp_path / "vocab.txt")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes((hf["folder"] / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(ModelFileError) as info:
        kerasbert.from_pretrained(tmp_path)
    assert str(info.value).startswith(f"{weights}: not a readable safetensors file (")

    # A malicious pickle: refused unrun (weights_only), with the file named.
    weights.unlink()
    marker = tmp_path / "pwned"
    pickled = tmp_path / "pytorch_model.bin"
    torch.save({"x": _RunsCode(str(marker))}, pickled)
    with pytest.raises(ModelFileError) as info:
        kerasbert.from_pretrained(tmp_path, allow_pickle=True)
    assert str(info.value).startswith(
        f"{pickled}: refused or unreadable as PyTorch weights (UnpicklingError: ")
    assert "\n" not in str(info.value) and not marker.exists()

    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        kerasbert.from_pretrained(tmp_path, allow_pickle=True)
