"""`resolve_precision`: which Keras dtype policy a run trains under, `--precision auto` included.

bf16 pays only where the hardware has bf16 matmul units: on a CPU with
avx512_bf16 or amx_bf16 oneDNN's bf16 matmuls ran at 1.8x the float32 peak
(748 vs 418 GFLOP/s on the 2-core EPYC, graph mode), while a CPU without
them emulates bf16 and is slower than float32. On GPUs bf16 needs compute
capability 8.0 (Ampere); older GPUs get float16 with loss scaling.

Example:
>>> resolve_precision("float32").policy
'float32'
>>> choice = resolve_precision("auto", flags={"avx512f", "avx512_bf16"}, gpus=[])
>>> choice.policy, choice.reason
('mixed_bfloat16', 'CPU has avx512_bf16')
>>> resolve_precision("auto", flags={"avx2"}, gpus=[]).policy
'float32'
>>> resolve_precision("auto", flags=set(), gpus=[(7, 5)]).policy
'mixed_float16'
"""

import dataclasses

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The resolved policy name and why it was chosen (recorded in the run's config.json)."""

    policy: str
    reason: str


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo is unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def gpu_compute_capabilities():
    """(major, minor) of each visible GPU, (0, 0) where TensorFlow does not say."""
    import tensorflow as tf
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def resolve_precision(setting, flags=None, gpus=None):
    """The dtype policy for `setting` (one of `PRECISIONS`).

    Args:
        setting: `auto` or a Keras policy name.
        flags: the CPU's feature flags (default: read from /proc/cpuinfo).
        gpus: compute capabilities of the GPUs (default: asked of TensorFlow).

    Returns:
        `PrecisionChoice`.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting != "auto":
        return PrecisionChoice(setting, "asked for")
    gpus = gpu_compute_capabilities() if gpus is None else list(gpus)
    if gpus:
        oldest = min(gpus)
        if oldest >= (8, 0):
            return PrecisionChoice("mixed_bfloat16", f"GPU compute capability {oldest[0]}.{oldest[1]}")
        return PrecisionChoice("mixed_float16",
                               f"GPU compute capability {oldest[0]}.{oldest[1]} < 8.0 (no bf16)")
    flags = cpu_flags() if flags is None else set(flags)
    for flag in _CPU_BF16_FLAGS:
        if flag in flags:
            return PrecisionChoice("mixed_bfloat16", f"CPU has {flag}")
    return PrecisionChoice("float32", "CPU without avx512_bf16/amx_bf16 (bf16 would be emulated)")


def set_precision(setting="auto"):
    """Resolves `setting` and makes it Keras's global dtype policy; returns the `PrecisionChoice`.

    Call it before building the model, as the trainer does; for `model.fit`
    that is all there is to it (under `mixed_float16`, `Model.compile` wraps
    the optimizer in a `LossScaleOptimizer` itself).

    >>> set_precision("float32").policy
    'float32'
    """
    import keras
    choice = resolve_precision(setting)
    keras.mixed_precision.set_global_policy(choice.policy)
    return choice
