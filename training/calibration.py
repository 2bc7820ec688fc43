"""`PlattScaling`: the paraphrase logit refitted on Quora pairs held out of training.

Why: a bi-encoder's paraphrase logit is `scale * cosine + bias`, and both are
learned on training pairs the encoder has memorised. On pairs it has never
seen, cosines sit lower and the threshold is wrong: `distill_cosine_nce`
ranks Quora dev as well as a cross-encoder (AUC .918) yet scores .784 at
p > .5, against .841 at the best threshold (`experiments/quora_ranking.py`).
`--calibration-holdout F` keeps a fraction F of quora-train out of training
(`holdout_mask`, by id, so the same pairs on every resume); after each epoch
a two-parameter logistic regression of the gold labels on the held-out
logits (Platt scaling) is folded into the layer that emits the logit
(`MultitaskBert.paraphrase_logit_layer`), so the saved model and its exports
carry it. Dev is never used to fit it.
"""

import dataclasses
import hashlib

import numpy as np


def holdout_mask(ids, fraction):
    """Boolean mask of the ids held out: those whose hash falls below `fraction`.

    By a hash of the id, not a seeded draw: the split does not move with
    `--seed`, `--quora-fraction` or the order of the file.

    >>> holdout_mask(["q1", "q2", "q3"], 0.0).tolist()
    [False, False, False]
    >>> mask = holdout_mask([f"q{i}" for i in range(10000)], 0.1)
    >>> bool(0.09 < mask.mean() < 0.11)
    True
    """
    def unit(key):
        digest = hashlib.sha256(str(key).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64

    return np.array([unit(i) < fraction for i in ids], dtype=bool)


def split_holdout(pairs, fraction, what="calibration holdout"):
    """`(training pairs, held-out pairs)`: `pairs` split by `holdout_mask` of its ids.

    Raises ValueError naming `what` (the trainer passes its flag) when the
    split leaves nothing on one side.

    >>> from training.examples import PairData
    >>> pairs = PairData([f"q{i}" for i in range(100)], ["a"] * 100, ["b"] * 100,
    ...                  np.zeros(100, np.float32), "toy")
    >>> train, held_out = split_holdout(pairs, 0.1)
    >>> len(train) + len(held_out), sorted(held_out.ids) == sorted(
    ...     i for i, h in zip(pairs.ids, holdout_mask(pairs.ids, 0.1)) if h)
    (100, True)
    """
    held = holdout_mask(pairs.ids, fraction)
    if held.all() or not held.any():
        raise ValueError(f"{what} {fraction} holds out {held.sum()} of the {len(pairs)} pairs of "
                         f"{pairs.source}; it must leave some to train on and some to calibrate on")
    return pairs.subset(np.flatnonzero(~held)), pairs.subset(np.flatnonzero(held))


@dataclasses.dataclass(frozen=True)
class PlattScaling:
    """`p = sigmoid(scale * logit + bias)`, fitted to gold labels.

    Args:
        scale, bias: the affine map applied to the model's logit.
        pairs: how many held-out pairs it was fitted on.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=4000)
    >>> y = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(float)
    >>> fit = PlattScaling.fit(z, y)
    >>> round(fit.scale, 1), round(fit.bias, 1)
    (2.0, -1.0)
    """

    scale: float = 1.0
    bias: float = 0.0
    pairs: int = 0

    @classmethod
    def fit(cls, logits, labels, iterations=100):
        """Maximum likelihood by Newton's method (the loss is convex in two unknowns).

        With Platt's targets: (N+ + 1) / (N+ + 2) for positives and
        1 / (N- + 2) for negatives instead of 1 and 0, so a held-out set the
        logit separates perfectly still gets a finite fit. A held-out set of
        one class has nothing to fit: raises ValueError.
        """
        z = np.asarray(logits, np.float64).reshape(-1)
        y = np.asarray(labels, np.float64).reshape(-1) > 0.5
        if len(z) != len(y) or not len(z):
            raise ValueError(f"calibration needs as many labels as logits, got {len(y)} and {len(z)}")
        positives = int(y.sum())
        if positives in (0, len(y)):
            raise ValueError(f"calibration: all {len(y)} held-out pairs have label {int(y[0])}; "
                             "hold out more pairs (--calibration-holdout)")
        target = np.where(y, (positives + 1) / (positives + 2),
                          1 / (len(y) - positives + 2))
        x = np.stack([z, np.ones_like(z)], axis=1)  # (N, 2): scale, bias
        theta = np.zeros(2)
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-(x @ theta)))
            gradient = x.T @ (p - target)
            # A tiny ridge keeps the Hessian invertible when p saturates.
            hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
            step = np.linalg.solve(hessian, gradient)
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
        return cls(float(theta[0]), float(theta[1]), len(z))

    def __call__(self, logits):
        """The calibrated logits."""
        return self.scale * np.asarray(logits) + self.bias

    def fold(self, layer):
        """Folds the map into Dense `layer` (units 1, whose output is the logit).

        Returns the layer's previous weights, for `layer.set_weights` to undo
        it (training goes on from the unfolded weights).
        """
        previous = layer.get_weights()
        kernel, bias = previous
        layer.set_weights([kernel * self.scale, bias * self.scale + self.bias])
        return previous

    def to_dict(self):
        return dataclasses.asdict(self)
