"""`HeadRateAdamW`: one AdamW stepping the task heads at their own learning rate."""

import keras


@keras.saving.register_keras_serializable(package="kerasbert")
class HeadRateAdamW(keras.optimizers.AdamW):
    """AdamW in which some variables (the task heads) step at `head_rate` x the rate.

    The custom loop trains the pretrained encoder at `lr` and the freshly
    initialised heads at `head_lr` with two AdamWs on the same schedule
    shape; `model.fit` takes one optimizer, so this one scales the rate (and
    the decoupled weight decay, which AdamW ties to the rate) of the
    variables at `head_paths` by `head_rate = head_lr / lr`. One difference
    remains: global-norm clipping sees all gradients together, where the
    custom loop clips each group by its own norm.

    Args:
        head_paths: `variable.path` of each head variable.
        head_rate: the heads' multiple of the learning rate.
        *args, **kwargs: as for `keras.optimizers.AdamW`.

    Example (one step, no decay: each variable moves by about its rate, Adam's
    first step being the sign of the gradient):
    >>> import numpy as np
    >>> body, head = keras.Variable([1.0], name="body"), keras.Variable([1.0], name="head")
    >>> opt = HeadRateAdamW(learning_rate=0.01, weight_decay=0.0,
    ...                     head_paths=[head.path], head_rate=10.0)
    >>> _ = opt.apply_gradients([(np.array([1.0]), body), (np.array([1.0]), head)])
    >>> [round(float(v.numpy()[0]), 4) for v in (body, head)]
    [0.99, 0.9]
    """

    def __init__(self, *args, head_paths=(), head_rate=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_paths = tuple(head_paths)
        self.head_rate = float(head_rate)
        self._head_keys = set()
        self._rate_scale = 1.0

    def build(self, variables):
        super().build(variables)
        paths = set(self.head_paths)
        self._head_keys = {self._var_key(v) for v in variables if v.path in paths}

    def _is_head(self, variable):
        return self._var_key(variable) in self._head_keys

    def update_step(self, gradient, variable, learning_rate):
        if self._is_head(variable):
            learning_rate = learning_rate * self.head_rate
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        super()._apply_weight_decay([v for v in variables if not self._is_head(v)])
        heads = [v for v in variables if self._is_head(v)]
        if heads:
            # AdamW decays by `weight_decay * self.learning_rate`; scale that
            # property while (and only while) the heads are decayed.
            self._rate_scale = self.head_rate
            try:
                super()._apply_weight_decay(heads)
            finally:
                self._rate_scale = 1.0

    def _get_current_learning_rate(self):
        rate = super()._get_current_learning_rate()
        return rate if self._rate_scale == 1.0 else rate * self._rate_scale

    def get_config(self):
        return {**super().get_config(), "head_paths": list(self.head_paths),
                "head_rate": self.head_rate}
