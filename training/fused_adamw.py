"""`FusedAdamW`: Keras' AdamW with each variable's Adam update as one TensorFlow kernel.

Keras' `Adam.update_step` is eight separate ops per variable (subtract,
multiply, square, sqrt, divide, three assigns), each a pass over memory with
its own temporary. On MiniLM that is 22.7M parameters (half of them the
token-embedding table) times eight, every step: a memory-bound tail that took
about 40 ms of a 250 ms bf16 train step (batch 32, 24 tokens) on the 2-core
EPYC. TensorFlow's `ResourceApplyAdam` kernel does the same arithmetic in
one fused, multithreaded pass over `(var, m, v, grad)`.

The maths is Keras' exactly (same `alpha`, same epsilon placement):

    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
    var -= alpha * m / (sqrt(v) + epsilon)

The decoupled weight decay, clipping, exclusions, schedules, variables (so
checkpoints) and `tf.distribute` behaviour are AdamW's own: only
`update_step` is replaced, and only for TensorFlow variables without
amsgrad; anything else takes Keras' path.

`lazy_embeddings=True` updates a variable whose gradient arrives as
`tf.IndexedSlices` (an embedding table: MiniLM's token table is half its
weights, and a batch touches a few hundred of its 30,522 rows) only in the
rows the batch used: their decay, moments and step, as TF-Addons' LazyAdam
did. Keras' path (and `lazy_embeddings=False`) densifies that gradient and
decays every row's moments each step; on the 2-core EPYC the dense table
cost 48 of 247 ms of a bf16 train step at batch 32 x 24 tokens
(`benchmarks/profile_step.py --token-embedding trained frozen`). Rows not in
the batch keep their weights and moments (dense Adam would still move them
by their decaying momentum), and the global-norm clip takes the norm of the
gradient with repeated rows summed, the norm of the dense gradient. Under a
`tf.distribute` strategy of several replicas the update stays dense.

Example:
>>> import numpy as np
>>> w = keras.Variable(np.ones(3, "float32"))
>>> opt = FusedAdamW(learning_rate=0.1, weight_decay=0.0)
>>> opt.apply([np.array([1.0, -1.0, 0.0], "float32")], [w])
>>> [round(float(x), 4) for x in np.asarray(w)]  # Adam's first step moves by lr * sign(g)
[0.9, 1.1, 1.0]
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kerasbert")
class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose per-variable update is `ResourceApplyAdam`.

    Takes AdamW's arguments, plus `lazy_embeddings` (see the module docstring).
    """

    def __init__(self, *args, lazy_embeddings=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_embeddings = bool(lazy_embeddings)
        self._lazy_keys = set()  # variables whose gradient is sparse in the step being traced

    def get_config(self):
        return dict(super().get_config(), lazy_embeddings=self.lazy_embeddings)

    def _backend_apply_gradients(self, grads, trainable_variables):
        # One replica only: under a strategy of several the lazy step has not
        # been shown to match one device (tests/test_distribute.py), so it
        # takes Keras' dense path there.
        if (self.lazy_embeddings and not self.gradient_accumulation_steps
                and not (self.clipnorm or self.clipvalue)
                and tf.distribute.get_strategy().num_replicas_in_sync == 1):
            # The clip, the decay and the update below see which variables
            # go lazily; known while tracing, from the gradients' types.
            grads = [_summed_slices(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            self._lazy_keys = {self._var_key(v) for g, v in zip(grads, trainable_variables)
                               if isinstance(g, tf.IndexedSlices)}
        try:
            return super()._backend_apply_gradients(grads, trainable_variables)
        finally:
            self._lazy_keys = set()

    def _clip_gradients(self, grads):
        # `_lazy_keys` is only ever set with no per-tensor or value clip.
        if not self._lazy_keys or not self.global_clipnorm:
            return super()._clip_gradients(grads)
        # Keras' clip would densify the slices; the same formula on their values.
        squares = [tf.reduce_sum(tf.square(tf.cast(
            g.values if isinstance(g, tf.IndexedSlices) else g, tf.float32)))
            for g in grads if g is not None]
        norm = tf.sqrt(tf.add_n(squares))
        clip = tf.cast(self.global_clipnorm, tf.float32)
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # NaN if norm is not finite

        def scaled(g):
            if isinstance(g, tf.IndexedSlices):
                return tf.IndexedSlices(g.values * tf.cast(scale, g.values.dtype), g.indices,
                                        g.dense_shape)
            return g * tf.cast(scale, g.dtype)

        return [None if g is None else scaled(g) for g in grads]

    def _apply_weight_decay(self, variables):
        # Lazily updated variables decay row by row in `update_step`.
        return super()._apply_weight_decay(
            [v for v in variables if self._var_key(v) not in self._lazy_keys])

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices) and self._var_key(variable) in self._lazy_keys:
            return self._lazy_update_step(gradient, variable, learning_rate)
        if self.amsgrad or not isinstance(variable, tf.Variable):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        # An embedding's gradient arrives as IndexedSlices; Keras' update
        # densifies it too (Adam decays every row's moments each step).
        gradient = tf.convert_to_tensor(tf.cast(gradient, dtype))
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=_handle(momentum), v=_handle(velocity),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=gradient, use_locking=False)

    def _lazy_update_step(self, gradient, variable, learning_rate):
        """Decay and Adam on the rows in `gradient.indices` only (distinct, see `_summed_slices`)."""
        dtype = variable.dtype
        # Again: under a strategy the all-reduce gathers the replicas' rows.
        gradient = _summed_slices(gradient)
        rows, g = gradient.indices, tf.cast(gradient.values, dtype)
        lr = tf.cast(learning_rate, dtype)
        index = self._get_variable_index(variable)
        # Handles, as in the dense step: under a strategy `update` hands this
        # device's copy of the variable, and `.handle` of a moment is its copy.
        handles = (variable.handle, _handle(self._momentums[index]),
                   _handle(self._velocities[index]))
        w, m, v = (tf.raw_ops.ResourceGather(resource=h, indices=rows, dtype=dtype)
                   for h in handles)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            w = w - w * tf.cast(self.weight_decay, dtype) * lr
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        m = m + (g - m) * (1 - beta_1)
        v = v + (tf.square(g) - v) * (1 - beta_2)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        w = w - alpha * m / (tf.sqrt(v) + tf.cast(self.epsilon, dtype))
        for handle, rows_now in zip(handles, (w, m, v)):
            tf.raw_ops.ResourceScatterUpdate(resource=handle, indices=rows, updates=rows_now)


def _summed_slices(slices):
    """`slices` with each row once, its repeated slices summed (what densifying would add up)."""
    rows, position = tf.unique(slices.indices)
    values = tf.math.unsorted_segment_sum(slices.values, position, tf.shape(rows)[0])
    return tf.IndexedSlices(values, rows, slices.dense_shape)


def _handle(variable):
    # A Keras variable wraps a tf.Variable (a distributed one under a
    # strategy, whose `.handle` is the current device's copy in an update).
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle
