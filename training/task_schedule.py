"""Which task each training step of an epoch belongs to."""

import numpy as np

SCHEDULES = ("round_robin", "proportional")


def task_schedule(batch_counts, kind="round_robin", seed=0, epoch=0):
    """The epoch's step order: a list of task names, each task `batch_counts[task]` times.

    `round_robin` (the paper's): cycle through the tasks in order, skipping a
    task once its batches for the epoch are used up. `proportional`: a
    seeded shuffle of the same multiset, so each step draws a task with
    probability proportional to its remaining batches.

    Every task's data is seen once per epoch either way; the list depends
    only on `(batch_counts, kind, seed, epoch)`, which is what makes an exact
    resume possible.

    Example:
    >>> task_schedule({"sst": 3, "sts": 1})
    ['sst', 'sts', 'sst', 'sst']
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    tasks = [t for t, n in batch_counts.items() if n > 0]
    if kind == "proportional":
        order = np.repeat(np.array(tasks), [batch_counts[t] for t in tasks])
        rng = np.random.default_rng([seed, epoch, 7])
        return [str(t) for t in rng.permutation(order)]
    remaining = dict(batch_counts)
    order = []
    while any(remaining[t] for t in tasks):
        for t in tasks:
            if remaining[t]:
                order.append(t)
                remaining[t] -= 1
    return order
