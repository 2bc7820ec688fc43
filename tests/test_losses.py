"""kerasbert.losses against hand computations in NumPy."""

import numpy as np
import pytest

from kerasbert import losses


def _np(x):
    return float(np.asarray(x))


def log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def weighted_mean(values, weight):
    if weight is None:
        return values.mean()
    return (values * weight).sum() / max(weight.sum(), 1.0)


WEIGHTS = [None, np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.5, 2.0, 0.0, 1.0])]


@pytest.mark.parametrize("weight", WEIGHTS)
def test_sentiment_cross_entropy(weight):
    logits = np.array([[2.0, -1.0, 0.5, 0.0, 3.0],
                       [0.1, 0.2, 0.3, 0.4, 0.5],
                       [-5.0, 5.0, 0.0, 1.0, -1.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    labels = np.array([4, 0, 1, 2], np.int32)
    per_row = -log_softmax(logits.astype(np.float64))[np.arange(4), labels]
    expected = weighted_mean(per_row, weight)
    got = _np(losses.sentiment_cross_entropy(logits, labels, weight))
    assert got == pytest.approx(expected, rel=1e-6)
    # Uniform logits over 5 classes: exactly log(5).
    assert per_row[3] == pytest.approx(np.log(5.0))


@pytest.mark.parametrize("weight", WEIGHTS)
def test_binary_cross_entropy_logits(weight):
    logits = np.array([3.0, -2.0, 0.0, 0.7], np.float32)
    labels = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    per_row = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    expected = weighted_mean(per_row, weight)
    assert _np(losses.binary_cross_entropy_logits(logits, labels, weight)) == pytest.approx(
        expected, rel=1e-6)
    # Large logits stay finite (the logits form, not log(sigmoid)).
    big = _np(losses.binary_cross_entropy_logits(np.array([200.0]), np.array([0.0])))
    assert big == pytest.approx(200.0)


@pytest.mark.parametrize("weight", WEIGHTS)
def test_thresholded_similarity_bce(weight):
    scores = np.array([4.5, 1.0, 2.5, 3.0], np.float32)
    # 2.5 is not above the threshold: target 0. 2.6 is: target 1.
    labels = np.array([5.0, 2.5, 2.6, 0.0], np.float32)
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = scores.astype(np.float64) / 5.0
    per_row = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    expected = weighted_mean(per_row, weight)
    assert _np(losses.thresholded_similarity_bce(scores, labels, weight)) == pytest.approx(
        expected, rel=1e-5)


def test_thresholded_similarity_bce_edges():
    # Exactly at the threshold the target is 0, so the loss is -log(1 - s/5).
    at = _np(losses.thresholded_similarity_bce(np.array([1.0]), np.array([2.5])))
    assert at == pytest.approx(-np.log(0.8), rel=1e-6)
    above = _np(losses.thresholded_similarity_bce(np.array([1.0]), np.array([2.5001])))
    assert above == pytest.approx(-np.log(0.2), rel=1e-5)
    # Scores of exactly 0 or 5 are clipped, not log(0): large but finite.
    worst = _np(losses.thresholded_similarity_bce(np.array([0.0, 5.0]), np.array([5.0, 0.0])))
    assert np.isfinite(worst) and worst == pytest.approx(-np.log(1e-7), rel=1e-2)
    best = _np(losses.thresholded_similarity_bce(np.array([5.0, 0.0]), np.array([5.0, 0.0])))
    assert 0.0 <= best < 1e-5


@pytest.mark.parametrize("weight", WEIGHTS)
def test_similarity_mse(weight):
    scores = np.array([4.5, 1.0, 2.5, 0.0], np.float32)
    labels = np.array([5.0, 2.0, 2.5, 3.0], np.float32)
    per_row = (scores.astype(np.float64) - labels) ** 2  # .25, 1, 0, 9
    expected = weighted_mean(per_row, weight)
    assert _np(losses.similarity_mse(scores, labels, weight)) == pytest.approx(expected, rel=1e-6)
    if weight is None:
        assert expected == pytest.approx(10.25 / 4)


def test_zero_weight_batch_is_zero_not_nan():
    zero = np.zeros(4)
    assert _np(losses.similarity_mse(np.ones(4), np.zeros(4), zero)) == 0.0
    assert _np(losses.sentiment_cross_entropy(np.zeros((4, 5)), np.zeros(4, np.int32), zero)) == 0.0


def info_nce_reference(u, v, positive, temperature):
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    logits = u @ v.T / temperature
    n = len(u)
    a_to_b = -log_softmax(logits, axis=1)[np.arange(n), np.arange(n)]
    b_to_a = -log_softmax(logits, axis=0)[np.arange(n), np.arange(n)]
    w = positive.astype(np.float64)
    return (0.5 * (a_to_b + b_to_a) * w).sum() / max(w.sum(), 1.0)


@pytest.fixture()
def vectors():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(5, 6))
    v = u + 3.0 * rng.normal(size=(5, 6))
    return u.astype(np.float32), v.astype(np.float32)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0])
def test_info_nce_matches_reference(vectors, temperature):
    u, v = vectors
    positive = np.array([True, False, True, True, False])
    expected = info_nce_reference(u.astype(np.float64), v.astype(np.float64), positive,
                                  temperature)
    got = _np(losses.info_nce(u, v, positive, temperature))
    assert expected > 0.05
    assert got == pytest.approx(expected, rel=1e-4)


def test_info_nce_is_symmetric_and_scale_free(vectors):
    u, v = vectors
    positive = np.array([True, True, False, True, True])
    forward = _np(losses.info_nce(u, v, positive, 0.5))
    assert forward > 0.1
    assert _np(losses.info_nce(v, u, positive, 0.5)) == pytest.approx(forward, rel=1e-5)
    # Cosine logits: rescaling the vectors changes nothing.
    assert _np(losses.info_nce(3.0 * u, 0.5 * v, positive, 0.5)) == pytest.approx(forward,
                                                                                 rel=1e-5)
    # It is not the one-directional loss: that one differs for this batch.
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    one_way = -log_softmax(un @ vn.T / 0.5, axis=1)[np.arange(5), np.arange(5)]
    w = positive.astype(float)
    assert abs((one_way * w).sum() / w.sum() - forward) > 1e-3


def test_info_nce_positive_rows_only(vectors):
    u, v = vectors
    full = np.ones(5, bool)
    only_first = np.array([True, False, False, False, False])
    # Non-positive rows still act as negatives: the loss of row 0 alone is
    # its term of the full loss, not the loss of a batch of one.
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    logits = un @ vn.T / 0.2
    row0 = 0.5 * (-log_softmax(logits, axis=1)[0, 0] - log_softmax(logits, axis=0)[0, 0])
    assert _np(losses.info_nce(u, v, only_first, 0.2)) == pytest.approx(row0, rel=1e-4)
    assert _np(losses.info_nce(u[:1], v[:1], full[:1], 0.2)) == pytest.approx(0.0, abs=1e-6)
    # Mean over positive rows (not over the batch).
    both = np.array([True, True, False, False, False])
    row1 = 0.5 * (-log_softmax(logits, axis=1)[1, 1] - log_softmax(logits, axis=0)[1, 1])
    assert _np(losses.info_nce(u, v, both, 0.2)) == pytest.approx((row0 + row1) / 2, rel=1e-4)


def test_info_nce_no_positive_is_zero(vectors):
    u, v = vectors
    assert _np(losses.info_nce(u, v, np.zeros(5, bool), 0.05)) == 0.0


def test_info_nce_temperature_scaling():
    # Two orthogonal pairs matched perfectly: logits diag 1/t, off-diag 0, so
    # each direction's loss is log(1 + e^{-1/t}) for B = 2.
    u = np.eye(2, dtype=np.float32)
    for t in (0.5, 1.0, 2.0):
        got = _np(losses.info_nce(u, u, np.ones(2, bool), t))
        assert got == pytest.approx(np.log1p(np.exp(-1.0 / t)), rel=1e-5)
    # A lower temperature sharpens: the correct match costs less.
    assert _np(losses.info_nce(u, u, np.ones(2, bool), 0.05)) < 1e-8


def test_similarity_losses_registry():
    assert losses.SIMILARITY_LOSSES == {"bce_threshold": losses.thresholded_similarity_bce,
                                        "mse": losses.similarity_mse}
    assert losses.STS_THRESHOLD == 2.5
