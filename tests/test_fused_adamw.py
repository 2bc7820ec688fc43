"""FusedAdamW makes Keras AdamW's update (one ResourceApplyAdam kernel per variable)."""

import keras
import numpy as np
import tensorflow as tf

from kerasbert import BertBackbone, BertConfig, MultitaskBert
from training.engine import make_optimizer, sub_optimizers
from training.fused_adamw import FusedAdamW

LR, WD, CLIP, B1, B2, EPS = 1e-2, 0.05, 0.5, 0.9, 0.999, 1e-7


def _reference_adamw(weights, steps, decayed):
    """AdamW by hand in float64, as Keras orders it: clip by the global norm,
    decoupled decay `w -= w * wd * lr`, then Adam with bias correction."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, grads in enumerate(steps, start=1):
        norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values()))
        scale = CLIP / max(norm, CLIP)
        for k, g in grads.items():
            g = g.astype(np.float64) * scale
            if k in decayed:
                w[k] -= w[k] * WD * LR
            m[k] += (g - m[k]) * (1 - B1)
            v2[k] += (g * g - v2[k]) * (1 - B2)
            alpha = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
            w[k] -= alpha * m[k] / (np.sqrt(v2[k]) + EPS)
    return w


def test_matches_adamw_by_hand_with_decay_clip_and_sparse_gradients():
    rng = np.random.default_rng(0)
    start = {"table": rng.normal(size=(50, 8)), "kernel": rng.normal(size=(8, 4)),
             "bias": rng.normal(size=4)}
    start = {k: v.astype(np.float32) for k, v in start.items()}
    steps = []
    for _ in range(4):
        # Distinct rows: with a repeated row, Keras' clip takes the norm of
        # the slices before they are summed, which this reference does not
        # model (both optimizers share that clip code).
        rows = rng.choice(50, 6, replace=False)
        table = np.zeros((50, 8), np.float32)
        values = rng.normal(size=(6, 8)).astype(np.float32)
        table[rows] = values
        steps.append({"table": (table, rows, values),
                      "kernel": rng.normal(size=(8, 4)).astype(np.float32),
                      "bias": rng.normal(size=4).astype(np.float32)})
    expected = _reference_adamw(start, [{k: (g[0] if k == "table" else g) for k, g in s.items()}
                                        for s in steps], decayed={"table", "kernel"})
    for cls in (keras.optimizers.AdamW, FusedAdamW):
        variables = {k: keras.Variable(v, name=k) for k, v in start.items()}
        opt = cls(learning_rate=LR, weight_decay=WD, global_clipnorm=CLIP, epsilon=EPS)
        opt.exclude_from_weight_decay(var_names=["bias"])
        ordered = [variables[k] for k in ("table", "kernel", "bias")]
        opt.build(ordered)
        for s in steps:
            _, rows, values = s["table"]
            table = tf.IndexedSlices(tf.constant(values), tf.constant(rows), tf.constant([50, 8]))
            opt.apply([table, s["kernel"], s["bias"]], ordered)
        for k, v in variables.items():
            moved = np.abs(expected[k] - start[k]).max()
            assert moved > 0.02, (cls.__name__, k)
            np.testing.assert_allclose(np.asarray(v), expected[k], rtol=0, atol=2e-6,
                                       err_msg=f"{cls.__name__} {k}")


def test_tiny_model_trains_as_with_keras_adamw():
    """Four steps on a tiny MultitaskBert (real gradients, the token table's
    sparse): the same weights as Keras' AdamW to float noise. Adam divides
    by sqrt(v), so a near-zero gradient element amplifies rounding; the
    weights moved by up to 4e-2 and agree to 2e-5."""
    runs = {}
    for cls in (keras.optimizers.AdamW, FusedAdamW):
        keras.utils.set_random_seed(0)
        model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()), dropout=0.0)
        opt = cls(learning_rate=1e-2, weight_decay=0.05, global_clipnorm=0.5)
        variables = model.trainable_variables
        opt.build(variables)
        rng = np.random.default_rng(0)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                logits = model.task_model("sentiment")(x, training=False)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True))
            grads = tape.gradient(loss, variables)
            opt.apply(grads, variables)

        for _ in range(4):
            x = {"token_ids": rng.integers(1, 99, (4, 6)).astype("int32"),
                 "segment_ids": np.zeros((4, 6), "int32"),
                 "padding_mask": np.ones((4, 6), "int32")}
            step(x, rng.integers(0, 5, 4))
        runs[cls] = [v.numpy() for v in model.weights]
    ref, got = runs[keras.optimizers.AdamW], runs[FusedAdamW]
    assert max(np.abs(a - b).max() for a, b in zip(ref, got)) < 2e-5


def test_make_optimizer_uses_it_for_both_groups():
    keras.utils.set_random_seed(0)
    model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()))
    assert all(isinstance(o, FusedAdamW)
               for o in sub_optimizers(make_optimizer(model, 5e-5, 1e-3, total_steps=10)))
