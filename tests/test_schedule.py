"""training.engine: the task schedule and the learning-rate schedule."""

from collections import Counter

import keras
import numpy as np
import pytest

from training.engine import WarmupLinearDecay, task_schedule


def test_round_robin_order_and_counts():
    order = task_schedule({"sst": 4, "quora": 2, "sts": 3})
    assert order == ["sst", "quora", "sts", "sst", "quora", "sts", "sst", "sts", "sst"]
    # Equal counts: a plain cycle.
    assert task_schedule({"a": 2, "b": 2}) == ["a", "b", "a", "b"]
    # A task without batches is left out.
    assert task_schedule({"a": 2, "b": 0}) == ["a", "a"]
    # Round robin ignores seed and epoch.
    counts = {"sst": 5, "quora": 1, "sts": 3}
    assert task_schedule(counts, seed=3, epoch=4) == task_schedule(counts)


@pytest.mark.parametrize("counts", [{"sst": 30, "quora": 7, "sts": 12}, {"sst": 1, "sts": 40}])
def test_proportional_counts_and_determinism(counts):
    order = task_schedule(counts, "proportional", seed=1, epoch=0)
    assert Counter(order) == Counter(counts)
    assert all(isinstance(t, str) for t in order)
    assert task_schedule(counts, "proportional", seed=1, epoch=0) == order
    others = [task_schedule(counts, "proportional", seed=s, epoch=e)
              for s, e in ((1, 1), (2, 0), (2, 1))]
    assert all(Counter(o) == Counter(counts) for o in others)
    assert all(o != order for o in others)


def test_proportional_is_mixed():
    # Not a round robin and not blocks of one task: both halves have every task.
    order = task_schedule({"sst": 50, "quora": 50, "sts": 50}, "proportional", seed=0, epoch=0)
    assert order != task_schedule({"sst": 50, "quora": 50, "sts": 50})
    for half in (order[:75], order[75:]):
        assert set(half) == {"sst", "quora", "sts"}


def test_unknown_schedule():
    with pytest.raises(ValueError, match="round_robin"):
        task_schedule({"sst": 1}, "random")


def test_warmup_linear_decay_values():
    schedule = WarmupLinearDecay(peak=2e-3, warmup_steps=4, total_steps=12)
    steps = np.arange(0, 15)
    got = np.array([float(schedule(s)) for s in steps])
    expected = np.where(steps < 4, steps / 4, np.clip((12 - steps) / 8, 0, 1)) * 2e-3
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    assert got[4] == pytest.approx(2e-3) and got[12] == 0.0 and got[14] == 0.0


def test_warmup_linear_decay_no_warmup_and_config():
    schedule = WarmupLinearDecay(peak=1.0, warmup_steps=0, total_steps=10)
    assert [float(schedule(s)) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    # Serialisable, so the optimizer inside best.keras reloads.
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, WarmupLinearDecay) and again.get_config() == schedule.get_config()
    assert WarmupLinearDecay(1.0, 0, 0).total_steps == 1
