"""Mixed precision: the policy choice, what stays float32, the fused kernels, bf16 runs end to end.

The fused kernels (kerasbert.fused_ops) are checked against the plain Keras
ops they replace, forward and gradient, and their dropout against its
expected keep rate; a tiny bf16 run trains, resumes, records its policy and
exports a float32 model with its weights.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.precision import cpu_flags, resolve_precision


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")
    from kerasbert import fused_ops
    fused_ops.set_enabled(True)


@pytest.mark.parametrize("flags, gpus, policy", [
    ({"avx2", "avx512f", "avx512_bf16"}, [], "mixed_bfloat16"),
    ({"avx2", "amx_bf16"}, [], "mixed_bfloat16"),
    ({"avx2", "avx512f"}, [], "float32"),            # the older Intel VM
    (set(), [(8, 0)], "mixed_bfloat16"),             # A100
    (set(), [(9, 0), (7, 0)], "mixed_float16"),      # the oldest GPU decides
    ({"avx512_bf16"}, [(7, 5)], "mixed_float16"),    # a GPU trains, not the CPU
])
def test_auto_chooses_by_hardware(flags, gpus, policy):
    assert resolve_precision("auto", flags=flags, gpus=gpus).policy == policy


def test_explicit_precision_and_bad_names():
    assert resolve_precision("mixed_float16", flags=set(), gpus=[]).policy == "mixed_float16"
    with pytest.raises(ValueError, match="--precision must be one of"):
        resolve_precision("bfloat16")


def test_cpu_flags_reads_proc_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(path) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def _tiny_model(policy, **kwargs):
    import kerasbert
    from kerasbert.bert_backbone import BertBackbone
    from kerasbert.bert_config import BertConfig

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    backbone = BertBackbone.from_bert_config(BertConfig.tiny())
    return kerasbert.MultitaskBert(backbone, **kwargs)


def _batch(batch=4, length=8):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, length), "int32")
    mask[0, 5:] = 0
    return {"token_ids": rng.integers(5, 99, (batch, length)).astype("int32"),
            "segment_ids": np.zeros((batch, length), "int32"), "padding_mask": mask}


def test_bf16_computes_the_encoder_in_bf16_and_the_heads_in_float32():
    model = _tiny_model("mixed_bfloat16", pair_encoding="bi", pooling="mean",
                        similarity_head="cosine", similarity_output="relu", projection_dim=16)
    x = _batch()
    assert model.backbone(x)["sequence_output"].dtype == "bfloat16"
    out = model({"sentiment": x, "paraphrase": {"a": x, "b": x}, "similarity": {"a": x, "b": x}})
    assert {k: v.dtype for k, v in out.items()} == {
        "sentiment": "float32", "paraphrase": "float32", "similarity": "float32"}
    assert all(v.dtype == "float32" for v in model.weights)
    # A pair against itself: cosine 1 -> 5.0, to float32 precision.
    np.testing.assert_allclose(out["similarity"].numpy(), 5.0, atol=1e-5)


def test_bf16_model_reloads_as_float32_for_export(tmp_path):
    from export.run_folder import float32_model

    model = _tiny_model("mixed_bfloat16")
    path = tmp_path / "m.keras"
    model.save(path)
    keras.mixed_precision.set_global_policy("float32")
    loaded = keras.saving.load_model(path)
    assert loaded.backbone.get_layer("embeddings").compute_dtype == "bfloat16"
    exported = float32_model(loaded)
    assert exported.backbone.get_layer("embeddings").compute_dtype == "float32"
    for a, b in zip(exported.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _batch()
    plain = _tiny_model("float32")
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(exported.task_model("sentiment")(x).numpy(),
                               plain.task_model("sentiment")(x).numpy(), atol=1e-6)


# ------------------------------------------------------------- fused kernels

def _block_grads(fused, dtype="float32", seed=0):
    from kerasbert import fused_ops
    from kerasbert.transformer_encoder_block import TransformerEncoderBlock

    fused_ops.set_enabled(fused)
    keras.utils.set_random_seed(seed)
    block = TransformerEncoderBlock(hidden_dim=32, num_heads=4, intermediate_dim=37,
                                    dropout=0.0, attention_dropout=0.0, dtype=dtype)
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 6, 32)), tf.float32)
    mask = tf.constant([[1, 1, 1, 1, 0, 0], [1] * 6])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = block(x, mask, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(tf.cast(y, tf.float32)))
    return y, tape.gradient(loss, [x] + block.trainable_variables)


def test_fused_block_matches_the_plain_keras_ops():
    y_plain, g_plain = _block_grads(fused=False)
    y_fused, g_fused = _block_grads(fused=True)
    np.testing.assert_allclose(y_fused.numpy(), y_plain.numpy(), atol=2e-6)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, rtol=1e-5)


def test_fused_block_in_bf16_stays_close_to_float32():
    y32, _ = _block_grads(fused=False)
    y16, g16 = _block_grads(fused=True, dtype="mixed_bfloat16")
    assert y16.dtype == tf.bfloat16
    # bf16 keeps 8 bits of mantissa: ~1e-2 on LayerNorm outputs of scale 1.
    np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), y32.numpy(), atol=0.06)
    assert all(np.isfinite(g.numpy()).all() for g in g16)


def test_fused_gelu_is_the_exact_erf_gelu_with_its_derivative():
    from kerasbert import fused_ops

    x = tf.constant(np.linspace(-5, 5, 101), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fused_ops.gelu(x)
    # d/dx x*Phi(x) = Phi(x) + x*phi(x), written out by hand.
    from scipy.stats import norm
    xs = x.numpy().astype("float64")
    np.testing.assert_allclose(y.numpy(), xs * norm.cdf(xs), atol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), norm.cdf(xs) + xs * norm.pdf(xs),
                               atol=1e-6)


def test_fused_dropout_keeps_the_rate_and_is_seeded():
    from kerasbert import fused_ops

    h = tf.ones((64, 64, 128))
    zero = tf.zeros((64, 64, 128))
    ones, nothing = tf.ones(128), tf.zeros(128)

    def out(seed):
        # x = 0, gamma 1, beta 0: LayerNorm of the dropped-out ones.
        return fused_ops.dropout_add_layer_norm(zero, h, ones, nothing, seed=tf.constant(seed),
                                                rate=0.25, epsilon=1e-12)

    # Each row is LayerNorm of a 0/(1/0.75) vector: dropped entries sit below the mean.
    dropped = (out([3, 4]).numpy() < 0).mean()
    assert abs(dropped - 0.25) < 0.005  # 524,288 draws: 4 sigma is ~0.0024
    np.testing.assert_array_equal(out([3, 4]).numpy(), out([3, 4]).numpy())
    assert not np.array_equal(out([3, 4]).numpy(), out([5, 6]).numpy())
    probs = fused_ops.masked_softmax_dropout(tf.zeros((8, 4, 16, 16)), tf.zeros((1, 1, 1, 16)),
                                             seed=tf.constant([1, 2]), rate=0.5)
    kept = probs.numpy() > 0
    assert abs(kept.mean() - 0.5) < 0.02
    np.testing.assert_allclose(probs.numpy()[kept], 1 / 16 / 0.5)


def _fused_functions(policy, training):
    model = _tiny_model(policy)
    fn = tf.function(lambda x: model.task_model("sentiment")(x, training=training))
    graph = fn.get_concrete_function({k: tf.TensorSpec((None, 8), tf.int32)
                                      for k in _batch()}).graph
    names = {f.signature.name for f in graph.as_graph_def().library.function}
    return {n for n in names if "gelu_forward" in n or "forward" in n.split("_")}


def test_float32_inference_graphs_have_no_fused_kernels():
    # Export converts the float32 inference graph: it must be the plain Keras ops.
    assert _fused_functions("float32", training=False) == set()
    # The same model's training graph, and bf16 inference, do use them.
    assert len(_fused_functions("float32", training=True)) >= 3
    assert len(_fused_functions("mixed_bfloat16", training=False)) >= 3


# ------------------------------------------------------------- tiny runs

def test_bf16_run_trains_resumes_and_records_its_policy(tiny_model_dir, tiny_data_dir, tmp_path):
    from tiny_setup import tiny_config

    from training.multitask_trainer import MultitaskTrainer

    out = tmp_path / "bf16"
    summary = MultitaskTrainer(tiny_config(tiny_model_dir, tiny_data_dir, out, epochs=1,
                                           precision="mixed_bfloat16")).train()
    config = json.loads((out / "config.json").read_text())
    assert config["precision_used"] == "mixed_bfloat16" and config["precision"] == "mixed_bfloat16"
    assert np.isfinite(summary["best"]["sts_pearson"])
    with np.load(next((out / "checkpoints").glob("step-*.npz"))) as arrays:
        assert {arrays[k].dtype for k in arrays.files if k.startswith("model_")} <= {
            np.dtype("float32"), np.dtype("int64"), np.dtype("uint32"), np.dtype("int32")}
    # The same folder resumed on a machine that resolves to float32 is refused.
    with pytest.raises(ValueError, match="trained under mixed_bfloat16"):
        MultitaskTrainer(tiny_config(tiny_model_dir, tiny_data_dir, out, epochs=1,
                                     precision="float32")).train(resume=True)
    # Under its own policy it resumes (here: a finished run redoes its end).
    again = MultitaskTrainer(tiny_config(tiny_model_dir, tiny_data_dir, out, epochs=1,
                                         precision="mixed_bfloat16")).train(resume=True)
    assert again["best"] == summary["best"]


def test_float16_run_uses_loss_scaling(tiny_model_dir, tiny_data_dir, tmp_path):
    from tiny_setup import tiny_config

    from training.multitask_trainer import MultitaskTrainer

    trainer = MultitaskTrainer(tiny_config(tiny_model_dir, tiny_data_dir, tmp_path / "f16",
                                           epochs=1, precision="mixed_float16")).setup()
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [v.numpy().copy() for v in trainer.model.trainable_variables]
    initial_scale = float(trainer.optimizer.dynamic_scale.numpy())
    step = trainer._train_step("sts")
    # Dynamic loss scaling skips the steps whose float16 gradients overflow
    # and halves the scale, so give it a few batches.
    for x, y in trainer.train_batches["sts"].train_dataset(0, 0)[0].take(6):
        assert np.isfinite(float(step(x, y)))
    assert float(trainer.optimizer.dynamic_scale.numpy()) <= initial_scale
    moved = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, trainer.model.trainable_variables)]
    assert sum(moved) > len(moved) // 2  # encoder and heads both stepped


def test_model_fit_trains_under_bf16(tiny_model_dir, tiny_data_dir):
    import kerasbert
    from training.keras_fit import compile_task, make_task_dataset
    from training.precision import set_precision
    from training.readers import load_split

    assert set_precision("mixed_bfloat16").policy == "mixed_bfloat16"
    backbone, tokenizer = kerasbert.from_pretrained(str(tiny_model_dir), max_length=16)
    model = kerasbert.MultitaskBert(backbone, num_sentiment_classes=5)
    assert backbone.get_layer("embeddings").compute_dtype == "bfloat16"
    compile_task(model, "sentiment", total_steps=4)
    data, _ = make_task_dataset(load_split("sst", "train", tiny_data_dir), tokenizer,
                                batch_size=8, length=16)
    history = model.task_model("sentiment").fit(data, steps_per_epoch=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
