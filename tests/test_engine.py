"""One engine, two front-ends: the custom loop's step and `model.fit` make the same update.

On the tiny config (vocab 99, hidden 32, 2 layers, 4 heads), dropout off,
both front-ends start from the same weights, see the same three batches
and must end at the same weights, for a regression variant (dps_mse) and
an InfoNCE one. The first step's losses are checked by hand (NumPy).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert import BertBackbone, BertConfig, BertTokenizer, MultitaskBert
from tiny_setup import VOCAB, make_data_folder
from training import keras_fit
from training.engine import make_optimizer, sub_optimizers, train_step_function
from training.readers import load_split
from training.variants import get_variant

STEPS, BATCH, LENGTH = 3, 8, 16
LR, HEAD_LR, TOTAL = 1e-3, 1e-2, 10  # warm-up: 1 step at rate 0, then decay


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Three (x, y) steps of all three tasks, keyed by output, as `make_fit_dataset` makes them."""
    folder = make_data_folder(tmp_path_factory.mktemp("engine_data"))
    data = {t: load_split(t, "train", folder) for t in ("sst", "quora", "sts")}
    dataset, _ = keras_fit.make_fit_dataset(
        data, BertTokenizer(VOCAB), batch_size=BATCH, seed=0,
        lengths=dict.fromkeys(("sentiment", "paraphrase", "similarity"), LENGTH))
    return list(dataset.take(STEPS))


def tiny_model(variant):
    keras.utils.set_random_seed(0)
    config = BertConfig.tiny(dropout=0.0, attention_dropout=0.0)
    model = MultitaskBert(BertBackbone.from_bert_config(config), dropout=0.0,
                          **get_variant(variant).model_kwargs())
    keras_fit._set_trainable(model)  # as compile_multitask does, before the optimizer
    return model


def custom_loop(variant, steps):
    """The trainer's step (`train_step_function`) on each (x, y); returns (model, losses)."""
    model = tiny_model(variant)
    optimizer = make_optimizer(model, LR, HEAD_LR, total_steps=TOTAL)
    step = train_step_function(model, optimizer, get_variant(variant).task_losses())
    return model, [{k: float(v) for k, v in step(x, y).items()} for x, y in steps]


def with_fit(variant, steps):
    model = tiny_model(variant)
    keras_fit.compile_multitask(model, variant, lr=LR, head_lr=HEAD_LR, total_steps=TOTAL,
                                jit_compile=False)
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(steps), output_signature=tf.nest.map_structure(
            tf.TensorSpec.from_tensor, steps[0]))
    history = model.fit(dataset, epochs=1, steps_per_epoch=len(steps), verbose=0, shuffle=False)
    return model, history.history


def max_weight_diff(a, b):
    return max(float(np.max(np.abs(u.numpy() - v.numpy())))
               for u, v in zip(a.weights, b.weights))


@pytest.mark.parametrize("variant", ["dps_mse", "infonce_plus"])
def test_custom_loop_and_fit_reach_the_same_weights(variant, batches):
    start = tiny_model(variant)
    looped, losses = custom_loop(variant, batches)
    fitted, history = with_fit(variant, batches)
    moved = max_weight_diff(start, looped)
    diff = max_weight_diff(looped, fitted)
    print(f"{variant}: weights moved up to {moved:.3g}; loop vs fit max |diff| {diff:.3g}")
    assert moved > 1e-3  # the steps did something
    assert diff < 1e-5
    # fit logs the mean over its steps of each task's loss; the loop returned each step's.
    for output in ("sentiment", "paraphrase", "similarity"):
        mean = np.mean([step[output] for step in losses])
        assert history[f"{output}_loss"][-1] == pytest.approx(mean, rel=1e-5)
    assert sub_optimizers(fitted.optimizer)[0].iterations.numpy() == STEPS


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_first_step_losses_by_hand(batches):
    """infonce_plus, step 1: Quora BCE + InfoNCE on duplicates; STS InfoNCE (>= 4) + MSE."""
    variant = get_variant("infonce_plus")
    model = tiny_model("infonce_plus")
    x, y = batches[0]
    expected = {}
    for output, positive in (("paraphrase", y["paraphrase"].numpy() > 0.5),
                             ("similarity", y["similarity"].numpy() >= 4.0)):
        out = model.task_model(f"{output}_with_vectors")(x[output])
        u, v = (out[k].numpy() / np.linalg.norm(out[k].numpy(), axis=-1, keepdims=True)
                for k in ("a", "b"))
        logits = u @ v.T / variant.infonce_temperature
        rows = -np.diag(_log_softmax(logits)) / 2 - np.diag(_log_softmax(logits.T)) / 2
        assert positive.any()
        nce = (rows * positive).sum() / positive.sum()
        score, label = out[output].numpy(), y[output].numpy()
        if output == "paraphrase":  # BCE on the logit
            extra = np.mean(np.maximum(score, 0) - score * label + np.log1p(np.exp(-np.abs(score))))
        else:
            extra = variant.infonce_mse_weight * np.mean((score - label) ** 2)
        expected[output] = nce + extra
    logits = model.task_model("sentiment")(x["sentiment"]).numpy()
    expected["sentiment"] = -np.mean(
        _log_softmax(logits)[np.arange(BATCH), y["sentiment"].numpy()])
    _, losses = custom_loop("infonce_plus", batches[:1])
    for output, value in expected.items():
        assert losses[0][output] == pytest.approx(value, rel=1e-4), output


def test_a_checkpoint_of_the_two_optimizer_format_is_refused_clearly(tiny_model_dir,
                                                                      tiny_data_dir, tmp_path):
    """Before the one MultiOptimizer, checkpoints held `optimizer_*` and `head_optimizer_*`."""
    import json

    from tiny_setup import tiny_config
    from training.multitask_trainer import MultitaskTrainer

    trainer = MultitaskTrainer(tiny_config(tiny_model_dir, tiny_data_dir, tmp_path / "o")).setup()
    folder = tmp_path / "o" / "checkpoints"
    folder.mkdir(parents=True)
    arrays = {f"model_{i}": v.numpy() for i, v in enumerate(trainer.model.variables)}
    arrays.update({f"optimizer_{i}": np.zeros(1) for i in range(3)})
    arrays.update({f"head_optimizer_{i}": np.zeros(1) for i in range(3)})
    np.savez(folder / "step-00000003.npz", **arrays)
    state = {"epoch": 0, "position": 3, "global_step": 3, "history": [], "best_score": None,
             "best_epoch": None, "loss_sums": {}, "arrays": "step-00000003.npz"}
    (folder / "latest.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"step-00000003\.npz: written by an older version "
                                         r"\(two optimizers"):
        trainer._read_checkpoint()
