"""`NonFiniteLoss`: training stopped on a NaN or infinite loss."""


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or infinite; the run stopped before saving it.

    `MultitaskTrainer.train` raises it naming the task, step and epoch, and where the
    last good checkpoint is; `python -m training.run` prints that message and exits 2.

    Example:
    >>> isinstance(NonFiniteLoss("sst loss is nan at step 12 (epoch 1)"), RuntimeError)
    True
    """
