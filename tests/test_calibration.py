"""`--calibration-holdout`: Platt scaling of the paraphrase logit on held-out quora-train pairs.

* `PlattScaling.fit` against scipy's minimiser of the same loss (Platt's targets).
* `holdout_mask`: by id, so order- and seed-free.
* Folding into each kind of paraphrase head gives `scale * logit + bias`, and undoes exactly.
* A tiny run: held-out pairs never trained on, its record in metrics.jsonl,
  best.keras calibrated and the checkpoint unfolded.
"""

import json

import numpy as np
import pytest

from training.calibration import PlattScaling, holdout_mask


def test_fit_matches_scipy_minimiser_of_platts_loss():
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    z = rng.normal(1.0, 2.0, size=500)
    y = rng.random(500) < 1 / (1 + np.exp(-(0.7 * z - 1.2)))
    positives = y.sum()
    target = np.where(y, (positives + 1) / (positives + 2), 1 / (len(y) - positives + 2))

    def loss(theta):
        s = theta[0] * z + theta[1]
        return np.sum(np.logaddexp(0, s) - target * s)

    reference = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    fit = PlattScaling.fit(z, y.astype(float))
    np.testing.assert_allclose([fit.scale, fit.bias], reference, atol=1e-5)
    assert fit.pairs == 500
    np.testing.assert_allclose(fit(z), reference[0] * z + reference[1], atol=1e-4)


def test_fit_is_finite_on_separable_pairs_and_refuses_one_class():
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = np.array([0, 0, 0, 1, 1, 1], float)
    fit = PlattScaling.fit(z, y)
    # Platt's targets (4/5 and 1/5) stop the scale at a finite value.
    assert 0 < fit.scale < 10 and abs(fit.bias) < 1e-6
    with pytest.raises(ValueError, match="all 3 held-out pairs have label 1"):
        PlattScaling.fit([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])


def test_holdout_mask_is_by_id_alone():
    ids = [f"quora-{i}" for i in range(2000)]
    mask = holdout_mask(ids, 0.2)
    assert 0.17 < mask.mean() < 0.23
    np.testing.assert_array_equal(holdout_mask(ids[::-1], 0.2), mask[::-1])
    # A larger fraction holds out a superset: the same pairs stay held out.
    assert np.all(holdout_mask(ids, 0.3)[mask])


@pytest.mark.parametrize("variant", ["distill_cosine_nce", "bm", "cross", "dps"])
def test_fold_gives_the_affine_of_the_logit_and_undoes(variant):
    import keras

    from kerasbert import BertBackbone, BertConfig, MultitaskBert
    from training.variants import get_variant

    keras.utils.set_random_seed(0)
    model = MultitaskBert(BertBackbone.from_bert_config(BertConfig.tiny()), dropout=0.0,
                          **get_variant(variant).model_kwargs())
    rng = np.random.default_rng(0)

    def sentence():
        return {"token_ids": rng.integers(4, 99, (5, 8)).astype("int32"),
                "segment_ids": np.zeros((5, 8), "int32"), "padding_mask": np.ones((5, 8), "int32")}

    x = {"pair": sentence()} if model.pair_encoding == "cross" else {"a": sentence(), "b": sentence()}
    paraphrase = model.task_model("paraphrase")
    before = np.asarray(paraphrase(x))
    layer = model.paraphrase_logit_layer()
    unfolded = PlattScaling(scale=-1.7, bias=0.4).fold(layer)
    np.testing.assert_allclose(np.asarray(paraphrase(x)), -1.7 * before + 0.4, rtol=1e-5, atol=1e-5)
    layer.set_weights(unfolded)
    np.testing.assert_allclose(np.asarray(paraphrase(x)), before, rtol=0, atol=0)


def test_tiny_run_calibrates_on_held_out_pairs(tiny_model_dir, tiny_data_dir, tmp_path):
    import keras

    import kerasbert  # noqa: F401  (registers the serializable layers)
    from tiny_setup import tiny_config
    from training.multitask_trainer import MultitaskTrainer

    out = tmp_path / "run"
    config = tiny_config(tiny_model_dir, tiny_data_dir, out, variant="dps_mse", epochs=1,
                         lr=2e-3, calibration_holdout=0.25)
    trainer = MultitaskTrainer(config).setup()
    held_ids = list(trainer.calibration_batches.data.ids)
    train_ids = list(trainer.train_batches["quora"].data.ids)
    everything = trainer._read("quora", "train").ids
    assert held_ids and not set(held_ids) & set(train_ids)
    assert sorted(held_ids + train_ids) == sorted(everything)
    np.testing.assert_array_equal(holdout_mask(everything, 0.25),
                                  [i in set(held_ids) for i in everything])

    summary = trainer.train()
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    cal = record["calibration"]
    assert cal["pairs"] == len(held_ids)

    # best.keras is the calibrated model: its held-out logits are the fit
    # applied to the unfolded model's, and its dev accuracy is the row's.
    best = keras.saving.load_model(out / "best.keras")
    calibrated = trainer.predict("quora", trainer.calibration_batches, split="held-out")
    layer = trainer.model.paraphrase_logit_layer()
    folded = layer.get_weights()
    with np.load(out / "checkpoints" / f"step-{record['step']:08d}.npz") as arrays:
        saved = {v.path: arrays[f"model_{i}"] for i, v in enumerate(trainer.model.variables)}
    kernel, bias = saved[layer.kernel.path], saved[layer.bias.path]
    np.testing.assert_allclose(folded[0], cal["scale"] * kernel, rtol=1e-6)
    np.testing.assert_allclose(folded[1], cal["scale"] * bias + cal["bias"], rtol=1e-6, atol=1e-7)
    layer.set_weights([kernel, bias])
    raw = trainer.predict("quora", trainer.calibration_batches, split="held-out")
    np.testing.assert_allclose(calibrated, PlattScaling(cal["scale"], cal["bias"])(raw),
                               rtol=1e-5, atol=1e-5)
    gold = np.asarray(trainer.calibration_batches.data.labels) > 0.5
    assert cal["held_out_acc"] == pytest.approx(np.mean((calibrated > 0) == gold))
    assert cal["held_out_acc_before"] == pytest.approx(np.mean((raw > 0) == gold))
    best_kernel, best_bias = best.paraphrase_logit_layer().get_weights()
    np.testing.assert_allclose(best_kernel, folded[0], rtol=1e-6)
    np.testing.assert_allclose(best_bias, folded[1], rtol=1e-6)
    dev = trainer.dev_batches["quora"]
    layer.set_weights(folded)
    dev_logits = trainer.predict("quora", dev)
    assert summary["best"]["quora_acc"] == pytest.approx(
        np.mean((dev_logits > 0) == (np.asarray(dev.data.labels) > 0.5)))


def test_calibration_holdout_flag_is_checked():
    from training.train_config import TrainConfig

    with pytest.raises(ValueError, match=r"--calibration-holdout must be in \[0, 0.5\]"):
        TrainConfig(calibration_holdout=0.9)
    with pytest.raises(ValueError, match="only when quora is trained"):
        TrainConfig(variant="classifier", calibration_holdout=0.1)
