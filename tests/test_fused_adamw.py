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


def _start_weights(rng):
    """A (50, 8) embedding table, an (8, 4) kernel and a bias, float32."""
    start = {"table": rng.normal(size=(50, 8)), "kernel": rng.normal(size=(8, 4)),
             "bias": rng.normal(size=4)}
    return {k: v.astype(np.float32) for k, v in start.items()}


def test_matches_adamw_by_hand_with_decay_clip_and_sparse_gradients():
    rng = np.random.default_rng(0)
    start = _start_weights(rng)
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


def _reference_lazy_adamw(weights, steps, decayed):
    """LazyAdamW by hand in float64: repeated rows summed, the global norm of
    that gradient, then decay and Adam on the table's rows in the batch only
    (the others keep their weights and moments)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, grads in enumerate(steps, start=1):
        rows, values = grads["table"]
        dense_table = np.zeros_like(w["table"])
        np.add.at(dense_table, rows, values.astype(np.float64))
        used = np.unique(rows)
        dense = {"table": dense_table, **{k: g.astype(np.float64) for k, g in grads.items()
                                          if k != "table"}}
        norm = np.sqrt(sum((g ** 2).sum() for g in dense.values()))
        scale = CLIP / max(norm, CLIP)
        alpha = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        for k, g in dense.items():
            sel = used if k == "table" else slice(None)
            g = g[sel] * scale
            if k in decayed:
                w[k][sel] -= w[k][sel] * WD * LR
            m[k][sel] += (g - m[k][sel]) * (1 - B1)
            v2[k][sel] += (g * g - v2[k][sel]) * (1 - B2)
            w[k][sel] -= alpha * m[k][sel] / (np.sqrt(v2[k][sel]) + EPS)
    return w, m, v2


def test_lazy_embeddings_update_only_the_rows_in_the_batch():
    rng = np.random.default_rng(1)
    start = _start_weights(rng)
    steps = []
    for _ in range(4):
        rows = rng.choice(12, 9)  # rows 12.. never used; repeats within a batch
        steps.append({"table": (rows, rng.normal(size=(9, 8)).astype(np.float32)),
                      "kernel": rng.normal(size=(8, 4)).astype(np.float32),
                      "bias": rng.normal(size=4).astype(np.float32)})
    assert any(len(set(s["table"][0])) < 9 for s in steps)
    expected, exp_m, exp_v = _reference_lazy_adamw(start, steps, decayed={"table", "kernel"})

    variables = {k: keras.Variable(v, name=k) for k, v in start.items()}
    opt = FusedAdamW(learning_rate=LR, weight_decay=WD, global_clipnorm=CLIP, epsilon=EPS,
                     lazy_embeddings=True)
    opt.exclude_from_weight_decay(var_names=["bias"])
    ordered = [variables[k] for k in ("table", "kernel", "bias")]
    opt.build(ordered)

    @tf.function
    def apply(rows, values, kernel, bias):
        opt.apply([tf.IndexedSlices(values, rows, tf.constant([50, 8])), kernel, bias], ordered)

    for s in steps:
        apply(*s["table"], s["kernel"], s["bias"])
    for k, v in variables.items():
        np.testing.assert_allclose(np.asarray(v), expected[k], rtol=0, atol=2e-6, err_msg=k)
    table = 0  # index of the table in `ordered`
    np.testing.assert_allclose(np.asarray(opt._momentums[table]), exp_m["table"], atol=1e-6)
    np.testing.assert_allclose(np.asarray(opt._velocities[table]), exp_v["table"], atol=1e-6)
    # Rows never in a batch: untouched, moments zero. Used rows moved.
    np.testing.assert_array_equal(np.asarray(variables["table"])[12:], start["table"][12:])
    assert not np.asarray(opt._momentums[table])[12:].any()
    assert np.abs(np.asarray(variables["table"])[:12] - start["table"][:12]).max() > 0.02
    # Dense AdamW on the same gradients moves the unused rows (decay, momentum).
    dense = _reference_adamw(start, [{"table": _dense(s["table"]), "kernel": s["kernel"],
                                      "bias": s["bias"]} for s in steps], {"table", "kernel"})
    assert np.abs(dense["table"][12:] - start["table"][12:]).max() > 1e-4
    assert FusedAdamW.from_config(opt.get_config()).lazy_embeddings


def _dense(table_slices):
    rows, values = table_slices
    table = np.zeros((50, 8), np.float32)
    np.add.at(table, rows, values)
    return table


def test_lazy_tiny_model_matches_dense_on_the_dense_weights_first_step():
    """One step on a tiny MultitaskBert: lazy and dense differ only in the
    embedding tables' unused rows, which lazy leaves as they were (step 1:
    Adam's moments start at zero, so the used rows match too)."""
    runs, start = {}, None
    for lazy in (False, True):
        keras.utils.set_random_seed(0)
        model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()), dropout=0.0)
        start = {v.path: v.numpy() for v in model.trainable_variables}
        # No clip: Keras' clip takes the norm of unsummed slices, the lazy one of summed rows.
        opt = FusedAdamW(learning_rate=1e-2, weight_decay=0.05, lazy_embeddings=lazy)
        variables = model.trainable_variables
        opt.build(variables)
        x = {"token_ids": np.array([[2, 5, 5, 7, 3, 0]] * 2, "int32"),
             "segment_ids": np.zeros((2, 6), "int32"),
             "padding_mask": np.array([[1, 1, 1, 1, 1, 0]] * 2, "int32")}

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                logits = model.task_model("sentiment")(x, training=False)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    tf.constant([1, 3]), logits, from_logits=True))
            opt.apply(tape.gradient(loss, variables), variables)

        step()
        runs[lazy] = {v.path: v.numpy() for v in model.trainable_variables}
    # The rows each table's lookup used ([PAD] is looked up too, with a zero gradient).
    used = {"token_embedding": [0, 2, 3, 5, 7], "segment_embedding": [0]}
    tables = {k: rows for k in runs[True] for name, rows in used.items() if name in k}
    assert len(tables) == 2
    for k in runs[True]:
        if k not in tables:
            np.testing.assert_allclose(runs[True][k], runs[False][k], atol=1e-6, err_msg=k)
    for k, rows in tables.items():
        np.testing.assert_allclose(runs[True][k][rows], runs[False][k][rows], atol=1e-6)
        unused = np.setdiff1d(np.arange(len(start[k])), rows)
        np.testing.assert_array_equal(runs[True][k][unused], start[k][unused])
        assert np.abs(runs[False][k][unused] - start[k][unused]).max() > 0  # dense decays them
