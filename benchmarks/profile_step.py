"""Where a train step's time goes: a TensorBoard profiler trace, summed by op group.

One MiniLM training step as the trainer runs it (sentiment task: forward,
loss, backward, the trainer's FusedAdamW with global-norm clipping, batch 32 x seq 64), traced
with `tf.profiler` for a few steps after warm-up, in each of the asked
configurations (precision x fused kernels on/off). The trace's host-CPU
kernel events (the `tf_Compute` threads, one per inter-op thread; the
executor's `Process` spans around them left out) are summed per group: the matmuls, the optimizer update, GELU, dropout, LayerNorm, the
attention softmax, the fused XLA islands, casts, and the rest by op type.

    python benchmarks/profile_step.py                                   # bf16, fused off and on
    python benchmarks/profile_step.py --precisions float32 mixed_bfloat16 --steps 3
    python benchmarks/profile_step.py --keep-trace /tmp/trace            # open in TensorBoard
    python benchmarks/profile_step.py --fused on --seq 24 --token-embedding trained lazy frozen

Op time is summed over threads, so it exceeds wall time on a multi-core
machine; the shares are what to compare. The wall time per step is printed
beside it (median of untraced steps).
"""

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
import kerasbert  # noqa: E402
from kerasbert import fused_ops  # noqa: E402
from kerasbert import losses  # noqa: E402
from training.fused_adamw import FusedAdamW  # noqa: E402

_GROUPS = [
    ("optimizer (AdamW)", r"adam_w|ApplyAdam|loss_scale_optimizer|clip_by_global_norm"),
    ("fused islands (XLA)", r"^_?XlaRun|__inference_(forward|backward|_gelu|_softmax)"),
    ("GELU", r"intermediate_dense\w*/Gelu|/Erfc?\b"),
    ("dropout", r"dropout"),
    ("LayerNorm", r"layer_norm"),
    ("attention softmax/mask", r"self_attention\w*/(?!.*MatMul)"),
    ("embeddings", r"embeddings?"),
]


def group_of(op_name, op_type):
    if "MatMul" in op_type or op_type.startswith("_MklFused"):
        return "matmuls (" + op_type + ")"
    if op_type in ("_XlaRun", "XlaRun", "_XlaCompile", "XlaLaunch", "Start", "Execute",
                   "ExecuteAsyncOnStream"):
        # XLA's runtime events of the fused kernels (nested: an upper bound).
        return "fused islands (XLA)"
    for group, pattern in _GROUPS:
        if re.search(pattern, op_name):
            return group
    return "other: " + op_type


def op_breakdown(trace_dir, steps):
    """{group: ms per step} from the newest xplane.pb under `trace_dir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/*.xplane.pb"))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    totals = collections.Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for event in line.events:
            name = plane.event_metadata[event.metadata_id].name
            if ":" not in name:  # executor bookkeeping, not a kernel
                continue
            op_name, op_type = name.rsplit(":", 1)
            if op_type == "Process":  # the executor's span around each kernel below
                continue
            totals[group_of(op_name, op_type)] += event.duration_ps / 1e9 / steps
    return totals


def make_step(batch, seq_len, forward_only=False, token_embedding="trained"):
    backbone, _ = kerasbert.from_pretrained(max_length=128)
    model = kerasbert.MultitaskBert(backbone, num_sentiment_classes=5)
    submodel = model.task_model("sentiment")
    # "frozen": without the token-embedding table (half of MiniLM's 22.7M
    # weights), what its gradient and update cost a step; "lazy": its rows
    # stepped as the trainer does by default; "trained": every row, densely.
    variables = [v for v in submodel.trainable_variables
                 if token_embedding != "frozen" or "token_embedding" not in v.path]
    optimizer = FusedAdamW(learning_rate=1e-5, weight_decay=0.01, global_clipnorm=1.0,
                           lazy_embeddings=token_embedding == "lazy")
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    optimizer.build(variables)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (batch, seq_len)).astype("int32")
    ids[:, 0] = 101
    x = {"token_ids": tf.constant(ids), "segment_ids": tf.zeros((batch, seq_len), tf.int32),
         "padding_mask": tf.ones((batch, seq_len), tf.int32)}
    y = tf.constant(rng.integers(0, 5, batch).astype("int32"))
    if forward_only:
        # Evaluation's call: the sentence vector, no dropout, no gradient.
        embedding = model.task_model("embedding")
        forward = tf.function(lambda x: embedding(x, training=False))
        return lambda: forward(x)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = losses.sentiment_cross_entropy(submodel(x, training=True), y)
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return loss

    return lambda: step(x, y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["mixed_bfloat16"],
                        choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--fused", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="traced steps")
    parser.add_argument("--timed", type=int, default=5, help="untimed-by-profiler steps timed")
    parser.add_argument("--forward", action="store_true",
                        help="profile evaluation's forward pass instead (use e.g. --batch 128 --seq 24)")
    parser.add_argument("--top", type=int, default=14, help="groups shown per configuration")
    parser.add_argument("--token-embedding", nargs="+", default=["trained"],
                        choices=["trained", "lazy", "frozen"],
                        help="train step with the embedding tables stepped densely (every row), "
                             "lazily (the rows the batch used; the trainer's default) and/or "
                             "the token table left out of the gradient and update")
    parser.add_argument("--keep-trace", default=None, help="write the traces here")
    args = parser.parse_args()

    what = "forward pass (evaluation)" if args.forward else "sentiment train step"
    print(f"MiniLM {what}, batch {args.batch} x seq {args.seq}, graph mode; "
          f"TF {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    configs = [(p, f, e) for p in args.precisions for f in args.fused
               for e in (["trained"] if args.forward else args.token_embedding)]
    for precision, fused, table in configs:
        keras.mixed_precision.set_global_policy(precision)
        fused_ops.set_enabled(fused == "on")
        run = make_step(args.batch, args.seq, args.forward, token_embedding=table)
        for _ in range(3):
            run().numpy()
        times = []
        for _ in range(args.timed):
            start = time.perf_counter()
            run().numpy()
            times.append(time.perf_counter() - start)
        trace = (Path(args.keep_trace) / f"{precision}-fused-{fused}-{table}" if args.keep_trace
                 else Path(tempfile.mkdtemp()))
        tf.profiler.experimental.start(str(trace))
        for _ in range(args.steps):
            run().numpy()
        tf.profiler.experimental.stop()
        groups = op_breakdown(trace, args.steps)
        total = sum(groups.values())
        what = "" if args.forward else f", token embedding {table}"
        print(f"\n{precision}, fused kernels {fused}{what}: "
              f"{statistics.median(times) * 1e3:.0f} ms "
              f"per step (wall, median of {args.timed}); op time {total:.0f} ms per step "
              f"summed over threads")
        for group, ms in groups.most_common(args.top):
            print(f"  {group:40s} {ms:8.1f} ms {100 * ms / total:5.1f}%")
        rest = total - sum(ms for _, ms in groups.most_common(args.top))
        print(f"  {'(the rest)':40s} {rest:8.1f} ms {100 * rest / total:5.1f}%")
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
