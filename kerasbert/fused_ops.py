"""Fused training kernels: XLA-compiled islands for the elementwise work around the matmuls.

On a CPU the encoder's matmuls run fastest as oneDNN kernels in plain graph
mode (bf16 more so: XLA's CPU bf16 matmuls are 2-4x slower), but the
elementwise work between them (GELU, dropout, residual add, LayerNorm) then
runs as a dozen separate TF ops, each a pass over memory; in a MiniLM train
step under mixed_bfloat16 that was about a third of the op time
(results/benchmarks/README.md, `benchmarks/profile_step.py`). Here each such chain is one small
`jit_compile=True` function whose backward pass is another, so XLA fuses it
into a loop or two, while the matmuls outside stay oneDNN's. Under a fully
XLA-compiled step (GPU) the islands are simply inlined.

The layers use these while training, and for inference only under a
bf16/fp16 compute dtype (`use_fused`): float32 inference, the graph that
exports and TFLite conversion see, stays the plain Keras ops. The maths is
done in float32 whatever the compute dtype.

Example:
>>> import numpy as np, tensorflow as tf
>>> x = tf.constant(np.linspace(-3, 3, 7, dtype="float32"))
>>> np.allclose(gelu(x), tf.nn.gelu(x, approximate=False), atol=1e-6)
True
"""

import math

import tensorflow as tf

_ENABLED = True


def enabled():
    """True when the layers may use the fused kernels (TensorFlow backend, not switched off)."""
    import keras
    return _ENABLED and keras.backend.backend() == "tensorflow"


def use_fused(layer, training):
    """Whether `layer`'s call should take the fused path.

    Training always does. Inference does under a bf16/fp16 compute dtype,
    where TF's own half-precision GELU and LayerNorm kernels are slow (erfc
    in bf16 was a fifth of a bf16 forward pass); a float32 inference graph,
    the one exports convert, stays the plain Keras ops.
    """
    return enabled() and bool(training or layer.compute_dtype != "float32")


def set_enabled(value):
    """Switches the fused training kernels on or off (e.g. to compare against plain Keras ops).

    Takes effect for steps traced afterwards.
    """
    global _ENABLED
    _ENABLED = bool(value)


_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_forward(x):
    xf = tf.cast(x, tf.float32)
    return tf.cast(xf * (0.5 + 0.5 * tf.math.erf(xf * _SQRT1_2)), x.dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_backward(x, dy):
    xf = tf.cast(x, tf.float32)
    cdf = 0.5 + 0.5 * tf.math.erf(xf * _SQRT1_2)
    pdf = tf.exp(-0.5 * tf.square(xf)) * _INV_SQRT_2PI
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), x.dtype)


@tf.custom_gradient
def gelu(x):
    """Exact (erf) GELU, x * Phi(x), fused forward and backward.

    Args:
        x: a float tensor of any shape; the result has its dtype.
    """
    return _gelu_forward(x), lambda dy: _gelu_backward(x, dy)


def dropout_rate_and_seed(dropout_layer, training):
    """(rate, int32 (2,) seed) for a fused dropout standing in for `dropout_layer`.

    Rate 0 when not training. The seed is drawn from the layer's own
    generator, which keeps the mask stream part of the model's variables
    (checkpoints and resume restore it), as with Dropout.
    """
    import keras
    if not (training and dropout_layer.rate):
        return 0.0, tf.zeros((2,), tf.int32)
    return float(dropout_layer.rate), keras.random.randint(
        (2,), 0, 2**31 - 1, seed=dropout_layer.seed_generator, dtype="int32")


def dropout_bits(shape, seed):
    """uint16 random bits of `shape` (last dim even) from the stateless `seed`.

    Drawn in plain graph mode: XLA's CPU random-number kernels measured ~80x
    slower than TF's (336 vs 4 ms for 786k floats). Each 32-bit draw gives two
    16-bit values, half the generator work of one float per element.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    halved = tf.concat([shape[:-1], shape[-1:] // 2], 0)
    bits = tf.random.stateless_uniform(halved, seed, minval=None, maxval=None, dtype=tf.uint32)
    return tf.reshape(tf.bitcast(bits, tf.uint16), shape)


def _keep_threshold(rate):
    """(threshold, scale): keep where bits >= threshold; `rate` rounded to 1/65536."""
    threshold = int(round(rate * 65536))
    return threshold, 1.0 / (1.0 - threshold / 65536)


def _add_layer_norm(x, h, gamma, beta, bits, rate, epsilon):
    """LayerNorm(x + dropout(h)) in float32, cast to x's dtype."""
    hf = tf.cast(h, tf.float32)
    if rate > 0.0:
        threshold, scale = _keep_threshold(rate)
        hf = tf.where(tf.cast(bits, tf.int32) >= threshold, hf * scale, 0.0)
    s = tf.cast(x, tf.float32) + hf
    mean = tf.reduce_mean(s, axis=-1, keepdims=True)
    centred = s - mean
    variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
    y = centred * tf.math.rsqrt(variance + epsilon) * tf.cast(gamma, tf.float32)
    return tf.cast(y + tf.cast(beta, tf.float32), x.dtype)


_ISLANDS = {}


def _island(maths, *constants, differentiable=1):
    """(forward, backward) XLA-compiled functions of `maths(*args, *constants)`, cached.

    The constants (rate, epsilon) are Python numbers XLA folds in, one
    compiled pair each. `backward(*args, dy)` recomputes the forward inside
    its own XLA program, which is cheaper than keeping the mask and the
    normalised values alive, and returns the gradients of the first
    `differentiable` args.
    """
    key = (maths, constants)
    if key not in _ISLANDS:
        def forward(*args):
            return maths(*args, *constants)

        def backward(*args_and_dy):
            *args, dy = args_and_dy
            wrt = list(args[:differentiable])
            with tf.GradientTape() as tape:
                tape.watch(wrt)
                y = forward(*wrt, *args[differentiable:])
            return tape.gradient(y, wrt, output_gradients=dy)

        _ISLANDS[key] = (tf.function(forward, jit_compile=True, reduce_retracing=True),
                         tf.function(backward, jit_compile=True, reduce_retracing=True))
    return _ISLANDS[key]


def _mask_bits(shape, seed, rate):
    """The dropout bits for `rate` (a scalar placeholder when nothing is dropped)."""
    if rate > 0:
        return dropout_bits(shape, tf.cast(seed, tf.int32))
    return tf.zeros((), tf.uint16)


def dropout_add_layer_norm(x, h, gamma, beta, *, seed, rate, epsilon):
    """`LayerNorm(x + dropout(h, rate))`, the post-LN residual, in one fused kernel.

    Args:
        x: (..., H) residual stream.
        h: (..., H) sublayer output, dropped out at `rate` with the stateless
            `seed` (int32 (2,)); the same seed gives the same mask. The rate
            is applied at a resolution of 1/65536 (0.1 -> 0.100006).
        gamma, beta: (H,) LayerNorm scale and offset (variables or tensors).
        rate: dropout rate in [0, 1); a Python float.
        epsilon: LayerNorm epsilon.

    Returns:
        (..., H) in x's dtype.

    Example:
    >>> import keras, numpy as np, tensorflow as tf
    >>> x = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 8)), tf.float32)
    >>> y = dropout_add_layer_norm(x, x, tf.ones(8), tf.zeros(8), seed=tf.constant([1, 2]),
    ...                            rate=0.0, epsilon=1e-12)
    >>> np.allclose(y, keras.layers.LayerNormalization(epsilon=1e-12)(2 * x), atol=1e-5)
    True
    """
    forward, backward = _island(_add_layer_norm, float(rate), float(epsilon), differentiable=4)
    bits = _mask_bits(tf.shape(h), seed, rate)

    @tf.custom_gradient
    def fused(x, h, gamma, beta):
        def grad(dy):
            return backward(x, h, gamma, beta, bits, dy)
        return forward(x, h, gamma, beta, bits), grad

    return fused(x, h, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))


def _softmax_dropout(scores, bias, bits, rate):
    """dropout(softmax(scores + bias)) in float32, cast to scores' dtype."""
    probs = tf.nn.softmax(tf.cast(scores, tf.float32) + bias, axis=-1)
    if rate > 0.0:
        threshold, scale = _keep_threshold(rate)
        probs = tf.where(tf.cast(bits, tf.int32) >= threshold, probs * scale, 0.0)
    return tf.cast(probs, scores.dtype)


def masked_softmax_dropout(scores, bias, *, seed, rate):
    """`dropout(softmax(scores + bias), rate)` over the last axis, in one fused kernel.

    Args:
        scores: (B, N, T, T) attention logits, any float dtype.
        bias: float32 additive mask broadcastable to `scores` (0 keep, -1e9 drop);
            no gradient flows to it.
        seed: int32 (2,) stateless seed of the dropout mask.
        rate: dropout rate in [0, 1), resolution 1/65536.

    Returns:
        probabilities in scores' dtype.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> s = tf.constant([[1.0, 2.0, 3.0]])
    >>> p = masked_softmax_dropout(s, tf.constant([0.0, 0.0, -1e9]), seed=tf.constant([0, 0]),
    ...                            rate=0.0)
    >>> [round(float(v), 4) for v in p.numpy()[0]]
    [0.2689, 0.7311, 0.0]
    """
    forward, backward = _island(_softmax_dropout, float(rate))
    bias = tf.cast(bias, tf.float32)
    bits = _mask_bits(tf.shape(scores), seed, rate)

    @tf.custom_gradient
    def fused(scores):
        return forward(scores, bias, bits), lambda dy: backward(scores, bias, bits, dy)[0]

    return fused(scores)
