"""training.keras_fit: model.fit(jit_compile=True) on the tiny config lowers the loss for
every kind of variant, InfoNCE included; the optimizer is the custom loop's two AdamWs;
the Keras STS loss is the custom loop's loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert import BertBackbone, BertConfig, BertTokenizer, MultitaskBert
from training import keras_fit
from kerasbert.losses import ThresholdedSimilarityBCE, thresholded_similarity_bce
from training.calibration import PlattScaling, split_holdout
from training.engine import WarmupLinearDecay, make_optimizer
from training.metrics import StreamingPearson
from training.examples import PairData, SentenceData
from training.variants import get_variant

SENTIMENT = ["awful", "bad", "okay", "good", "great"]  # label = index
TOPICS = ["cat", "dog", "car", "tree", "house", "river", "music", "food", "city", "book"]
FILLERS = ["the", "film", "was", "a", "story", "very"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + SENTIMENT + TOPICS + FILLERS
BATCH, LENGTH = 8, 12
LENGTHS = {"sentiment": LENGTH, "paraphrase": LENGTH, "similarity": LENGTH}


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(VOCAB)


@pytest.fixture(scope="module")
def task_data():
    """Learnable toy data: the sentiment word is the label; pairs share m topic words."""
    rng = np.random.default_rng(0)
    n = 48
    labels = rng.integers(0, 5, n)
    sst = SentenceData([f"s{i}" for i in range(n)],
                       [" ".join(rng.permutation([SENTIMENT[y]] + list(rng.choice(FILLERS, 3))))
                        for y in labels], labels.astype(np.int32), "toy-sst")
    texts_a, texts_b, shared = [], [], []
    for i in range(n):
        m = int(rng.integers(0, 4))
        words = list(rng.choice(TOPICS, size=6 - m, replace=False))
        texts_a.append(" ".join(words[:3]))
        texts_b.append(" ".join(words[:m] + words[3:]))
        shared.append(m)
    shared = np.array(shared)
    ids = [f"p{i}" for i in range(n)]
    quora = PairData(ids, texts_a, texts_b, (shared >= 2).astype(np.float32), "toy-quora")
    sts = PairData(ids, texts_a, texts_b, (shared * 5 / 3).astype(np.float32), "toy-sts")
    return {"sst": sst, "quora": quora, "sts": sts}


def tiny_model(variant):
    keras.utils.set_random_seed(0)
    config = BertConfig.tiny(vocabulary_size=len(VOCAB), dropout=0.0, attention_dropout=0.0)
    return MultitaskBert(BertBackbone.from_bert_config(config), dropout=0.0,
                         **get_variant(variant).model_kwargs())


def total_loss(model, x, y):
    """The variant's summed loss on one batch, in inference mode (no optimizer step)."""
    return float(model.task_loss(x, y, model._task_losses, training=False)[0])


@pytest.mark.parametrize("variant", ["bm", "dps_mse", "infonce"])
def test_fit_with_xla_lowers_the_loss(variant, task_data, tokenizer):
    model = tiny_model(variant)
    # A high rate: the tiny post-LN encoder sits on a plateau for a while first.
    keras_fit.compile_multitask(model, variant, lr=3e-3, head_lr=1e-2)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert model.jit_compile is True  # True, not "auto" (which is off on CPU)
    dataset, steps = keras_fit.make_fit_dataset(task_data, tokenizer, batch_size=BATCH,
                                                lengths=LENGTHS, seed=0)
    assert steps == len(task_data["sst"]) // BATCH
    x, y = next(iter(dataset))
    assert {k: v.shape.as_list() for k, v in x["paraphrase"]["a"].items()} == {
        k: [BATCH, LENGTH] for k in ("token_ids", "segment_ids", "padding_mask")}
    assert sorted(y) == ["paraphrase", "sentiment", "similarity"]
    before = total_loss(model, x, y)
    # Steps are cheap (~40 ms); the one XLA compile is what this test pays for.
    history = model.fit(dataset, steps_per_epoch=steps, epochs=8, verbose=0, shuffle=False)
    after = total_loss(model, x, y)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses
    assert after < 0.85 * before, (before, after)
    for output in ("sentiment", "paraphrase", "similarity"):
        assert f"{output}_loss" in history.history
    # Every element has one static shape per task, so XLA compiles the step once.
    assert all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(dataset.element_spec))


def test_single_task_sentiment_fit(task_data, tokenizer):
    model = tiny_model("dps_mse")
    sentiment = keras_fit.compile_task(model, "sentiment", "dps_mse", lr=3e-3, head_lr=1e-2)
    assert sentiment is model.task_model("sentiment") and sentiment.jit_compile is True
    # Mean pooling (dps_mse) leaves the tanh pooler unused: frozen, out of the optimizer.
    assert not model.backbone.get_layer("pooler_dense").trainable
    dataset, steps = keras_fit.make_task_dataset(task_data["sst"], tokenizer, batch_size=BATCH,
                                                 length=LENGTH, seed=0)
    history = sentiment.fit(dataset, steps_per_epoch=steps, epochs=8, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < history.history["loss"][0]
    dev, n = keras_fit.make_task_eval_dataset(task_data["sst"].take(20), tokenizer,
                                              batch_size=BATCH, length=LENGTH)
    assert n == 3  # 20 rows: two full batches and one with 4 weight-0 padding rows
    results = sentiment.evaluate(dev, return_dict=True, verbose=0)
    predicted = np.argmax(sentiment.predict(
        tokenizer(task_data["sst"].take(20).texts, max_length=LENGTH), verbose=0), -1)
    expected = np.mean(predicted == task_data["sst"].labels[:20])
    assert results["acc"] == pytest.approx(expected, abs=1e-6)


def test_platt_calibration_callback_folds_the_held_out_fit(task_data, tokenizer):
    """After fit, the held-out logits are a*z + b, (a, b) the Platt fit of the unfolded logits z."""
    quora, held_out = split_holdout(task_data["quora"], 0.3)
    assert set(held_out.labels.tolist()) == {0.0, 1.0} and not set(held_out.ids) & set(quora.ids)
    model = tiny_model("dps_mse")
    keras_fit.compile_multitask(model, "dps_mse", lr=3e-3, head_lr=1e-2)
    dataset, steps = keras_fit.make_fit_dataset(dict(task_data, quora=quora), tokenizer,
                                                batch_size=BATCH, lengths=LENGTHS, seed=0)
    calibrate = keras_fit.PlattCalibration(held_out, tokenizer, batch_size=BATCH, length=LENGTH)
    model.fit(dataset, steps_per_epoch=steps, epochs=2, verbose=0, shuffle=False,
              callbacks=[calibrate])
    fit = calibrate.calibration
    assert fit.pairs == len(held_out) and fit.scale != pytest.approx(1.0, abs=1e-3)
    # The callback's logits are the sub-model's on the pairs, in their order.
    calibrated = calibrate.held_out_logits()
    direct = model.task_model("paraphrase").predict(
        {"a": tokenizer(held_out.texts_a, max_length=LENGTH),
         "b": tokenizer(held_out.texts_b, max_length=LENGTH)}, verbose=0).reshape(-1)
    np.testing.assert_allclose(calibrated, direct, rtol=1e-5, atol=1e-5)
    # Unfold by hand: the fit is the Platt fit of those logits, folded exactly.
    layer = model.paraphrase_logit_layer()
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / fit.scale, (bias - fit.bias) / fit.scale])
    z = calibrate.held_out_logits()
    expected = PlattScaling.fit(z, held_out.labels)
    assert (fit.scale, fit.bias) == pytest.approx((expected.scale, expected.bias), rel=1e-4)
    np.testing.assert_allclose(calibrated, fit(z), rtol=1e-4, atol=1e-4)


def test_platt_calibration_needs_labeled_pairs(task_data, tokenizer):
    with pytest.raises(ValueError, match="labeled quora pairs held out"):
        keras_fit.PlattCalibration(task_data["sst"], tokenizer)


def test_a_contrastive_task_alone_is_refused_clearly():
    model = tiny_model("infonce")
    with pytest.raises(ValueError, match="contrastive.*MultitaskBert.fit"):
        keras_fit.compile_task(model, "similarity", "infonce")


def test_model_must_match_the_variant():
    with pytest.raises(ValueError, match="similarity_head"):
        keras_fit.compile_multitask(tiny_model("bm"), "dps_mse")


def test_needs_all_three_tasks(task_data, tokenizer):
    with pytest.raises(ValueError, match="missing"):
        keras_fit.make_fit_dataset({"sst": task_data["sst"]}, tokenizer, batch_size=BATCH)


def test_make_optimizer_is_two_adamws():
    """Encoder at lr, heads at head_lr, each group clipped by its own norm: one
    MultiOptimizer (both front-ends) == two AdamWs stepped by hand, under XLA."""
    def adamw(peak):
        opt = keras.optimizers.AdamW(learning_rate=WarmupLinearDecay(peak, 1, 10),
                                     weight_decay=0.1, global_clipnorm=0.5)
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return opt

    rng = np.random.default_rng(0)
    ref, one = tiny_model("dps_mse"), tiny_model("dps_mse")
    encoder = {id(v) for v in ref.backbone.trainable_variables}
    groups = [[i for i, v in enumerate(ref.trainable_variables) if (id(v) in encoder) == e]
              for e in (True, False)]
    fused = make_optimizer(one, 1e-2, 1e-1, total_steps=10, warmup_ratio=0.1, weight_decay=0.1,
                           clip_norm=0.5)
    step = tf.function(lambda g: fused.apply(g, one.trainable_variables), jit_compile=True)
    pair = adamw(1e-2), adamw(1e-1)
    for _ in range(4):
        grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32))
                 for v in ref.trainable_variables]
        for opt, group in zip(pair, groups):
            opt.apply([grads[i] for i in group], [ref.trainable_variables[i] for i in group])
        step(grads)
    for a, b in zip(ref.trainable_variables, one.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    # The heads did move at their own (10x) rate: one head weight moved more than any encoder one.
    start = tiny_model("dps_mse")
    moved = [float(np.max(np.abs(a.numpy() - b.numpy())))
             for a, b in zip(start.trainable_variables, one.trainable_variables)]
    assert max(moved[i] for i in groups[1]) > 2 * max(moved[i] for i in groups[0])


def test_thresholded_loss_equals_the_custom_loops():
    rng = np.random.default_rng(0)
    scores = tf.constant(rng.uniform(0, 5, 64).astype(np.float32))
    labels = tf.constant(rng.choice([0.0, 1.2, 2.5, 2.6, 4.0, 5.0], 64).astype(np.float32))
    weight = tf.constant((rng.uniform(size=64) > 0.3).astype(np.float32))
    loss = ThresholdedSimilarityBCE()
    np.testing.assert_allclose(float(loss(labels, scores)),
                               float(thresholded_similarity_bce(scores, labels)), rtol=1e-6)
    np.testing.assert_allclose(float(loss(labels, scores, sample_weight=weight)),
                               float(thresholded_similarity_bce(scores, labels, weight)),
                               rtol=1e-6)
    # The same under XLA, and as a (2-D) batch of column labels.
    compiled = tf.function(lambda y, s: loss(y[:, None], s), jit_compile=True)
    np.testing.assert_allclose(float(compiled(labels, scores)),
                               float(thresholded_similarity_bce(scores, labels)), rtol=1e-6)
    # It survives a config round trip (registered).
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, ThresholdedSimilarityBCE)


def test_streaming_pearson_is_the_dev_set_pearson():
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 50).astype(np.float32)
    scores = (labels + rng.normal(0, 1.5, 50)).astype(np.float32)
    metric = StreamingPearson()
    for i in range(0, 50, 16):  # uneven batches; padding rows with weight 0
        pad = 16 - len(labels[i:i + 16])
        metric.update_state(np.pad(labels[i:i + 16], (0, pad)), np.pad(scores[i:i + 16], (0, pad)),
                            sample_weight=np.pad(np.ones(16 - pad), (0, pad)))
    assert float(metric.result()) == pytest.approx(np.corrcoef(labels, scores)[0, 1], abs=1e-5)
