"""training.metrics against scipy / scikit-learn and by hand."""

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score

from training.metrics import (METRIC_NAMES, overall_scores, predicted_labels, selection_score,
                              task_metric)


def test_metric_names():
    assert METRIC_NAMES == {"sst": "sst_acc", "cfimdb": "cfimdb_acc", "quora": "quora_acc",
                            "sts": "sts_pearson"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sts_pearson_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, size=50)
    predictions = labels + rng.normal(scale=1.5, size=50)
    got = task_metric("sts", predictions, labels)
    assert got == pytest.approx(pearsonr(predictions, labels)[0], abs=1e-12)
    assert task_metric("sts", -predictions, labels) == pytest.approx(-got, abs=1e-12)


def test_sts_constant_prediction_is_zero():
    assert task_metric("sts", np.full(5, 2.0), np.arange(5.0)) == 0.0
    assert task_metric("sts", np.arange(5.0), np.full(5, 2.0)) == 0.0


@pytest.mark.parametrize("task", ["sst", "quora", "cfimdb"])
def test_accuracy_matches_sklearn(task):
    rng = np.random.default_rng(7)
    classes = 5 if task == "sst" else 2
    labels = rng.integers(classes, size=40)
    predictions = np.where(rng.uniform(size=40) < 0.6, labels, rng.integers(classes, size=40))
    # Labels as the readers give them: int32 for SST, float32 0.0/1.0 for Quora.
    file_labels = labels.astype(np.float32 if task == "quora" else np.int32)
    got = task_metric(task, predictions, file_labels)
    assert got == pytest.approx(accuracy_score(labels, predictions), abs=1e-12)
    assert 0.3 < got < 1.0


def test_metric_length_mismatch_raises():
    with pytest.raises(ValueError, match="sst: 3 predictions for 4 labels"):
        task_metric("sst", [0, 1, 2], [0, 1, 2, 3])


def test_overall_scores_by_hand():
    metrics = {"sst_acc": 0.5, "quora_acc": 0.8, "sts_pearson": 0.4}
    out = overall_scores(metrics)
    assert out["overall_mean"] == pytest.approx((0.5 + 0.8 + 0.4) / 3)
    assert out["overall_cs224n"] == pytest.approx((0.5 + 0.8 + 0.7) / 3)
    # A negative r maps below one half.
    neg = overall_scores({"sst_acc": 0.5, "quora_acc": 0.5, "sts_pearson": -1.0})
    assert neg["overall_cs224n"] == pytest.approx(1.0 / 3)
    assert neg["overall_mean"] == pytest.approx(0.0)


def test_overall_scores_partial():
    # The classifier variant only has sst: no CS224N score, the mean is sst.
    assert overall_scores({"sst_acc": 0.42}) == {"overall_mean": pytest.approx(0.42)}
    assert overall_scores({"sst_acc": 0.4, "sts_pearson": 0.2}) == {
        "overall_mean": pytest.approx(0.3)}
    assert overall_scores({"cfimdb_acc": 0.9}) == {}


def test_selection_score_falls_back_to_the_one_metric_there_is():
    full = {"sst_acc": .5, "quora_acc": .8, "sts_pearson": .6}
    full.update(overall_scores(full))
    assert selection_score(full) == pytest.approx((.5 + .8 + .8) / 3)
    assert selection_score({"sst_acc": .42, **overall_scores({"sst_acc": .42})}) == .42
    # Regression: a CFIMDB classifier had no score, so every epoch counted as
    # "best" and the last one was kept (.629 where epoch 4 had .633).
    assert selection_score({"cfimdb_acc": .633}) == .633
    with pytest.raises(ValueError, match="no dev score"):
        selection_score({})


def test_selection_score_counts_only_the_trained_tasks():
    # The first SST-only 5-epoch run's dev metrics after epochs 1 and 2: its
    # untrained Quora and STS heads drifted, so the three-task overall picked
    # epoch 1 although SST, the one task it trains, was better at epoch 2.
    epoch1 = {"sst_acc": .4478, "quora_acc": .4166, "sts_pearson": .0458}
    epoch2 = {"sst_acc": .4614, "quora_acc": .3851, "sts_pearson": .0577}
    for m in (epoch1, epoch2):
        m.update(overall_scores(m))
    assert selection_score(epoch1) > selection_score(epoch2)
    assert selection_score(epoch1, ["sst"]) == pytest.approx(.4478)
    assert selection_score(epoch2, ["sst"]) == pytest.approx(.4614)
    # STS enters as (r + 1) / 2, as in the CS224N overall.
    assert selection_score(epoch1, ["quora", "sts"]) == pytest.approx((.4166 + 1.0458 / 2) / 2)
    assert selection_score(epoch1, ["sst", "quora", "sts"]) == pytest.approx(epoch1["overall_cs224n"])
    assert selection_score({"cfimdb_acc": .633}, ["cfimdb"]) == .633
    with pytest.raises(ValueError, match="no dev quora_acc"):
        selection_score({"sst_acc": .5}, ["sst", "quora"])


def test_predicted_labels():
    logits = np.array([[0.1, 2.0, 0.0, -1.0, 0.5], [3.0, 0.0, 0.0, 0.0, 0.0]])
    sst = predicted_labels("sst", logits)
    assert sst.tolist() == [1, 0] and sst.dtype == np.int64
    assert predicted_labels("cfimdb", np.array([[0.0, 1.0], [1.0, -1.0]])).tolist() == [1, 0]
    # Quora: a logit, > 0 is a duplicate; exactly 0 (p = 0.5) is not.
    quora = predicted_labels("quora", np.array([0.3, -0.2, 0.0, 12.0]))
    assert quora.tolist() == [1, 0, 0, 1] and quora.dtype == np.int64
    sts = predicted_labels("sts", np.array([1.5, 4.25], np.float32))
    assert sts.tolist() == [1.5, 4.25] and sts.dtype == np.float64
