"""Layer-level tests on the tiny config: serialisation, masking, attention maths, BertConfig."""

import json
import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from kerasbert import (BertBackbone, BertConfig, BertEmbeddings, MultiHeadSelfAttention,
                       TransformerEncoderBlock)

B, T = 3, 10
# Real lengths per row: row 0 full, rows 1 and 2 padded.
LENGTHS = (10, 6, 3)


def _mask():
    return (np.arange(T)[None, :] < np.array(LENGTHS)[:, None]).astype("int32")  # (B, T)


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    mask = _mask()
    token_ids = rng.integers(4, config.vocabulary_size, size=(B, T)).astype("int32")
    token_ids[:, 0] = 2
    segment_ids = (np.arange(T)[None, :] >= 4).astype("int32") * mask
    return {"token_ids": token_ids * mask, "segment_ids": segment_ids, "padding_mask": mask}


def _randomize(layer, seed, scale=0.3):
    """Replaces every weight by random values so no weight is trivially 0 or 1."""
    rng = np.random.default_rng(seed)
    layer.set_weights([
        (1.0 + scale * rng.standard_normal(w.shape) if "gamma" in v.path
         else scale * rng.standard_normal(w.shape)).astype("float32")
        for v, w in zip(layer.weights, layer.get_weights())])


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.fixture(scope="module")
def config():
    # Non-default dropout / epsilon / activation so that a field missing from
    # get_config would change the clone (shape or output).
    return BertConfig.tiny(layer_norm_epsilon=1e-6, activation="gelu_new", dropout=0.2,
                           attention_dropout=0.15)


@pytest.fixture(scope="module")
def backbone(config):
    model = BertBackbone.from_bert_config(config)
    _randomize(model, seed=1)
    return model


def _layer_cases(config):
    """(layer factory, call(layer, rng) -> output) for each layer class."""
    batch = _batch(config)
    x = np.random.default_rng(5).standard_normal((B, T, config.hidden_dim)).astype("float32")
    mask = batch["padding_mask"]
    return {
        "embeddings": (
            lambda: BertEmbeddings(
                vocabulary_size=config.vocabulary_size, hidden_dim=config.hidden_dim,
                max_sequence_length=config.max_sequence_length, num_segments=3,
                dropout=0.2, layer_norm_epsilon=1e-6),
            lambda layer: layer(batch["token_ids"], batch["segment_ids"] + 1)),
        "attention": (
            lambda: MultiHeadSelfAttention(hidden_dim=config.hidden_dim, num_heads=2, dropout=0.3),
            lambda layer: layer(x, padding_mask=mask)),
        "block": (
            lambda: TransformerEncoderBlock(
                hidden_dim=config.hidden_dim, num_heads=8, intermediate_dim=config.intermediate_dim,
                dropout=0.2, attention_dropout=0.1, layer_norm_epsilon=1e-6, activation="relu"),
            lambda layer: layer(x, padding_mask=mask)),
    }


@pytest.mark.parametrize("name", ["embeddings", "attention", "block"])
def test_layer_config_round_trip(config, name):
    make, call = _layer_cases(config)[name]
    layer = make()
    call(layer)
    _randomize(layer, seed=2)
    expected = np.asarray(call(layer))

    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    call(clone)  # builds with fresh random weights
    assert _max_diff(call(clone), expected) > 1e-3, "fresh weights should change the output"
    clone.set_weights(layer.get_weights())
    assert [v.path.split("/", 1)[1] for v in clone.weights] == \
        [v.path.split("/", 1)[1] for v in layer.weights]
    np.testing.assert_array_equal(np.asarray(call(clone)), expected)


def test_backbone_config_round_trip(backbone, config):
    batch = _batch(config)
    expected = backbone(batch)
    cfg = backbone.get_config()
    assert cfg["activation"] == "gelu_new" and cfg["layer_norm_epsilon"] == 1e-6
    clone = BertBackbone.from_config(cfg)
    assert clone.get_config() == cfg
    assert clone.bert_config == config
    assert _max_diff(clone(batch)["sequence_output"], expected["sequence_output"]) > 1e-3
    clone.set_weights(backbone.get_weights())
    out = clone(batch)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(expected[key]))


def test_mixed_precision_backbone_runs_and_keeps_its_policy(backbone, config):
    # Regression: Dropout layers built without the policy upcast to float32 and
    # the residual add failed; get_config dropped the policy.
    model = BertBackbone.from_bert_config(config, dtype="mixed_bfloat16")
    model.set_weights(backbone.get_weights())
    batch = _batch(config)
    for training in (False, True):
        out = model(batch, training=training)
        assert out["sequence_output"].dtype == "bfloat16"
        assert out["pooled_output"].dtype == "bfloat16"
    clone = BertBackbone.from_config(model.get_config())
    policies = {layer.name: layer.dtype_policy.name for layer in clone.layers
                if not isinstance(layer, keras.layers.InputLayer)}
    assert len(policies) == config.num_layers + 2
    assert set(policies.values()) == {"mixed_bfloat16"}, policies
    mask = batch["padding_mask"].astype(bool)
    reference = np.asarray(backbone(batch)["sequence_output"])[mask]
    # bf16 keeps ~3 significant digits; LayerNorm outputs are O(1).
    assert _max_diff(np.asarray(model(batch)["sequence_output"], np.float32)[mask], reference) < 0.25


_LOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import kerasbert  # registers the kerasbert/* serializable classes
    import keras
    model = keras.saving.load_model(sys.argv[1])
    batch = dict(np.load(sys.argv[2]))
    out = model(batch)
    np.save(sys.argv[3], np.asarray(out["sequence_output"]))
    np.save(sys.argv[4], np.asarray(out["pooled_output"]))
    print(type(model).__name__)
""")


def test_keras_file_reloads_in_fresh_process(backbone, config, tmp_path):
    batch = _batch(config)
    expected = backbone(batch)
    model_path = tmp_path / "tiny.keras"
    backbone.save(model_path)
    np.savez(tmp_path / "batch.npz", **batch)
    seq_path, pooled_path = tmp_path / "seq.npy", tmp_path / "pooled.npy"
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(model_path), str(tmp_path / "batch.npz"),
         str(seq_path), str(pooled_path)],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "BertBackbone"
    assert _max_diff(np.load(seq_path), expected["sequence_output"]) == 0.0
    assert _max_diff(np.load(pooled_path), expected["pooled_output"]) == 0.0


def test_padded_token_ids_do_not_change_real_positions(backbone, config):
    batch = _batch(config)
    mask = batch["padding_mask"].astype(bool)
    changed = {k: v.copy() for k, v in batch.items()}
    rng = np.random.default_rng(3)
    noise_ids = rng.integers(4, config.vocabulary_size, size=(B, T)).astype("int32")
    changed["token_ids"] = np.where(mask, batch["token_ids"], noise_ids)
    changed["segment_ids"] = np.where(mask, batch["segment_ids"], 1)
    base, out = backbone(batch), backbone(changed)
    seq_base, seq_out = np.asarray(base["sequence_output"]), np.asarray(out["sequence_output"])
    assert _max_diff(seq_out[mask], seq_base[mask]) <= 1e-6
    assert _max_diff(out["pooled_output"], base["pooled_output"]) <= 1e-6
    # The ids did change something: the padded positions' own outputs.
    assert _max_diff(seq_out[~mask], seq_base[~mask]) > 1e-2
    # Control: without the mask the same change leaks into the real positions.
    unmasked = backbone({**changed, "padding_mask": np.ones_like(batch["padding_mask"])})
    assert _max_diff(np.asarray(unmasked["sequence_output"])[mask], seq_base[mask]) > 1e-2


def _numpy_attention(x, weights, num_heads, mask, scale=True):
    """softmax(Q K^T / sqrt(D) + mask) V, then the output projection, in float64."""
    wq, bq, wk, bk, wv, bv, wo, bo = (np.asarray(w, np.float64) for w in weights)
    x = np.asarray(x, np.float64)
    b, t, h = x.shape
    d = h // num_heads

    def heads(y):  # (B,T,H) -> (B,N,T,D)
        return y.reshape(b, t, num_heads, d).transpose(0, 2, 1, 3)

    q, k, v = heads(x @ wq + bq), heads(x @ wk + bk), heads(x @ wv + bv)
    scores = q @ k.transpose(0, 1, 3, 2) / (math.sqrt(d) if scale else 1.0)  # (B,N,T,T)
    scores = np.where(mask[:, None, None, :].astype(bool), scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, h)
    return context @ wo + bo


def test_attention_matches_numpy_reference():
    layer = MultiHeadSelfAttention(hidden_dim=32, num_heads=4)
    x = np.random.default_rng(7).standard_normal((B, T, 32)).astype("float32")
    mask = _mask()
    layer(x, padding_mask=mask)
    _randomize(layer, seed=8)
    weights = layer.get_weights()
    assert [v.path.split("/", 1)[1] for v in layer.weights] == [
        "query/kernel", "query/bias", "key/kernel", "key/bias",
        "value/kernel", "value/bias", "output/kernel", "output/bias"]
    out = np.asarray(layer(x, padding_mask=mask))
    reference = _numpy_attention(x, weights, 4, mask)
    assert _max_diff(out, reference) <= 1e-5
    # The reference is sharp enough to tell a missing 1/sqrt(D) apart.
    assert _max_diff(out, _numpy_attention(x, weights, 4, mask, scale=False)) > 1e-2
    # No mask == all-ones mask.
    ones = np.ones_like(mask)
    np.testing.assert_allclose(np.asarray(layer(x)), _numpy_attention(x, weights, 4, ones),
                               atol=1e-5)


def test_bert_config_dict_round_trip(tmp_path):
    config = BertConfig(vocabulary_size=1000, hidden_dim=48, num_layers=3, num_heads=6,
                        intermediate_dim=96, max_sequence_length=128, num_segments=3,
                        dropout=0.05, attention_dropout=0.0, layer_norm_epsilon=1e-7,
                        activation="relu", lowercase=False)
    hf = config.to_dict()
    assert hf["hidden_size"] == 48 and hf["num_attention_heads"] == 6
    assert hf["type_vocab_size"] == 3 and hf["hidden_act"] == "relu"
    assert hf["model_type"] == "bert" and hf["position_embedding_type"] == "absolute"
    assert BertConfig.from_dict(hf) == config
    assert BertConfig.from_dict({**hf, "initializer_range": 0.02, "architectures": ["X"]}) == config
    config.save(tmp_path)
    assert BertConfig.from_json_file(tmp_path / "config.json") == config
    assert config.head_dim == 8


def test_bert_config_errors(tmp_path):
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig.tiny(num_heads=5)
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig.from_dict({"hidden_size": 30, "num_attention_heads": 4})
    with pytest.raises(ValueError, match="relative_key"):
        BertConfig.from_dict({"hidden_size": 32, "num_attention_heads": 4,
                              "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="swish"):
        BertConfig.from_dict({"hidden_act": "swish"})
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json_file(bad)
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadSelfAttention(hidden_dim=32, num_heads=5)


def test_config_json_is_plain_json(tmp_path):
    BertConfig.tiny().save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["vocab_size"] == 99 and data["num_hidden_layers"] == 2


def test_paraphrase_logit_init_is_scale_times_cosine_minus_threshold(backbone, config):
    from kerasbert import MultitaskBert

    model = MultitaskBert(backbone, pooling="mean", paraphrase_head="cosine",
                          similarity_head="cosine", similarity_output="relu",
                          projection_dim=8, paraphrase_logit_init=(10.0, 0.5))
    a, b = _batch(config, seed=2), _batch(config, seed=3)
    out = model.task_model("paraphrase_with_vectors")({"a": a, "b": b})
    u, v = np.asarray(out["a"], np.float64), np.asarray(out["b"], np.float64)
    cosine = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    np.testing.assert_allclose(np.asarray(out["paraphrase"]), 10.0 * (cosine - 0.5), atol=1e-4)
    # The similarity head is untouched: 5 * relu(cosine).
    sim = model.task_model("similarity")({"a": a, "b": b})
    np.testing.assert_allclose(np.asarray(sim), 5.0 * np.maximum(cosine, 0.0), atol=1e-5)

    clone = MultitaskBert.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.paraphrase_logit_init == (10.0, 0.5)
    default = MultitaskBert(backbone, paraphrase_head="cosine", projection_dim=8)
    assert default.get_layer("paraphrase_score_affine").get_weights()[0].item() == 1.0
    with pytest.raises(ValueError, match="scale, threshold"):
        MultitaskBert(backbone, paraphrase_head="cosine", paraphrase_logit_init=(10.0,))
