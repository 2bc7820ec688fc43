"""What a step needs of the other replicas under `tf.distribute`: the one-device math on a split batch.

Each replica holds an equal share of the global batch. The losses here
must come out as on one device with the whole batch:

* `replica_info()`: `(replica id, replicas in sync)` of the current
  replica context, `(0, 1)` outside a strategy (or in its cross-replica
  context).
* `gather_rows(value)`: the global batch's rows of `value`, replica by
  replica (`ReplicaContext.all_gather`; its gradient flows back to each
  replica's own rows). InfoNCE takes its negatives from it, so a 2-replica
  run trains against the same negatives as one device.
* `cross_replica_gradients(grads, variables, optimizer)`: the gradients
  summed over the replicas, each optimizer's group clipped by its
  `global_clipnorm` over that sum (the one-device clip), handed back as
  equal shares: Keras' own all-reduce in `optimizer.apply` sums them to the
  clipped gradient, and its own per-share clip leaves them alone (each
  share's norm is at most `clipnorm / replicas`). Keras on its own would
  clip each replica's part before the sum, which is not the one-device update.

Example (no strategy: one replica, nothing to gather):
>>> import numpy as np
>>> replica_info()
(0, 1)
>>> gather_rows(np.ones((2, 3), "float32")).shape
TensorShape([2, 3])
"""

import tensorflow as tf


def replica_info():
    """`(replica_id_in_sync_group, num_replicas_in_sync)`; `(0, 1)` outside replica context."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def gather_rows(value):
    """All replicas' `value` concatenated on axis 0 in replica order (`value` itself on one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.convert_to_tensor(value)
    return context.all_gather(value, axis=0)


def replica_sum(value):
    """`value` summed over the replicas (no gradient: used for normalisers)."""
    context = tf.distribute.get_replica_context()
    value = tf.stop_gradient(tf.convert_to_tensor(value))
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce("SUM", value)


def _groups(optimizer, variables):
    """`[(sub-optimizer, [indices of variables it steps])]`, in first-seen order."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    index_of = getattr(inner, "_var_to_optimizer_idx", None)  # a built MultiOptimizer
    groups = {}
    for i, variable in enumerate(variables):
        if index_of is not None:
            sub = inner.optimizers[index_of[inner._var_key(variable)]]
        else:
            sub = inner
        groups.setdefault(id(sub), (sub, []))[1].append(i)
    return list(groups.values())


def cross_replica_gradients(grads, variables, optimizer):
    """Replica shares of the all-reduced, per-group global-norm-clipped gradients (see above).

    Call it in replica context with each replica's gradients of `loss /
    replicas`; None gradients stay None. Under a loss-scaling optimizer the
    clip norm is scaled alike (a non-finite sum stays non-finite, so the
    step is skipped as usual).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(grads)
    replicas = context.num_replicas_in_sync
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = dict(zip(present, context.all_reduce("SUM", [grads[i] for i in present])))
    scale = optimizer.scale_loss(tf.constant(1.0)) if optimizer is not None else 1.0
    out = list(grads)
    for sub, indices in _groups(optimizer, variables) if optimizer is not None else [
            (None, list(range(len(variables))))]:
        indices = [i for i in indices if i in summed]
        values = [summed[i] for i in indices]
        clip = getattr(sub, "global_clipnorm", None)
        if clip and values:
            values, _ = tf.clip_by_global_norm(values, clip * scale)
        for i, value in zip(indices, values):
            out[i] = _scale(value, 1.0 / replicas)
    return out


def _scale(gradient, factor):
    """`gradient * factor` for a dense tensor or `tf.IndexedSlices` (embedding lookups)."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


__all__ = ["cross_replica_gradients", "gather_rows", "replica_info", "replica_sum"]
