"""Encoder throughput: forward and training step of the default encoder, graph vs XLA.

For `from_pretrained()` (all-MiniLM-L6-v2 unless `--model` says otherwise) at
batch 32 x seq 64 and 32 x 128 it times

* forward: `backbone(batch, training=False)`,
* train: forward + backward + one `keras.optimizers.AdamW` step,

each under `tf.function` (graph) and `tf.function(jit_compile=True)` (XLA),
after warm-up steps, and prints ms/step (median and best), tokens/s and the
achieved matmul GFLOP/s (from the median). In the same run it measures the
machine's fp32 matmul peak (chained 2048^3 matmuls, graph and XLA, best call,
before and after the encoder runs; the higher one counts) and prints the
encoder's share of it, from the median and from the best step (best-of, like
the peak). On a shared machine the load averages printed alongside say how
much to trust the numbers.

FLOPs are counted analytically from matmuls only, per layer
`2*B*T*(4H^2 + 2*H*I) + 2*2*B*N*T^2*D` (projections + FFN, then QK^T and PV),
times the number of layers; the embeddings, pooler, softmax, LayerNorm and the
optimizer update are not counted. A training step counts 3x forward
(backward = 2x forward).

    python benchmarks/encoder_throughput.py            # ~4 min on 2 CPU cores
    python benchmarks/encoder_throughput.py --steps 2 --seqs 64   # smoke run
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasbert  # noqa: E402
from kerasbert.from_pretrained import DEFAULT_MODEL  # noqa: E402


def encoder_forward_flops(config, batch, seq_len):
    """Matmul FLOPs of one forward pass of the encoder stack."""
    h, i, n, d = config.hidden_dim, config.intermediate_dim, config.num_heads, config.head_dim
    per_layer = 2 * batch * seq_len * (4 * h * h + 2 * h * i) + 2 * 2 * batch * n * seq_len ** 2 * d
    return config.num_layers * per_layer


def make_batch(config, batch, seq_len, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, config.vocabulary_size, size=(batch, seq_len)).astype("int32")
    ids[:, 0] = 101
    return {
        "token_ids": tf.constant(ids),
        "segment_ids": tf.zeros((batch, seq_len), tf.int32),
        "padding_mask": tf.ones((batch, seq_len), tf.int32),  # no padding: every FLOP is real
    }


def time_steps(fn, arg, warmup, steps):
    """Per-step wall times (s) after `warmup` untimed calls; each call is fetched to host."""
    for _ in range(warmup):
        fn(arg).numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn(arg).numpy()
        times.append(time.perf_counter() - start)
    return times


def forward_fn(backbone, jit):
    @tf.function(jit_compile=jit)
    def forward(batch):
        out = backbone(batch, training=False)
        # A scalar that needs every output, so nothing is pruned and only 4 bytes come back.
        return tf.reduce_sum(out["sequence_output"]) + tf.reduce_sum(out["pooled_output"])
    return forward


def train_fn(backbone, jit):
    optimizer = keras.optimizers.AdamW(learning_rate=1e-5, weight_decay=0.01)
    optimizer.build(backbone.trainable_variables)  # slot variables outside the tf.function

    @tf.function(jit_compile=jit)
    def train_step(batch):
        with tf.GradientTape() as tape:
            out = backbone(batch, training=True)
            loss = (tf.reduce_mean(tf.square(out["sequence_output"]))
                    + tf.reduce_mean(tf.square(out["pooled_output"])))
        grads = tape.gradient(loss, backbone.trainable_variables)
        optimizer.apply_gradients(zip(grads, backbone.trainable_variables))
        return loss
    return train_step


def matmul_peak(size=2048, chain=4, repeats=3, dtype="float32"):
    """Best GFLOP/s of `chain` dependent size^3 matmuls per call in `dtype`, graph and XLA."""
    rng = np.random.default_rng(0)
    a = tf.cast(rng.standard_normal((size, size)).astype("float32"), dtype)
    b = tf.cast((rng.standard_normal((size, size)) / np.sqrt(size)).astype("float32"), dtype)
    flops = 2 * size ** 3 * chain
    results = {}
    for label, jit in (("graph", False), ("xla", True)):
        @tf.function(jit_compile=jit)
        def chained(x):
            for _ in range(chain):
                x = tf.matmul(x, b)
            return tf.reduce_sum(x)
        times = time_steps(chained, a, warmup=1, steps=repeats)
        results[label] = flops / min(times) / 1e9
    return results


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="from_pretrained() argument (default: packaged MiniLM)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seqs", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing/compiling) first")
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    parser.add_argument("--kinds", nargs="+", default=["forward", "train"],
                        choices=["forward", "train"])
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_bfloat16", "mixed_float16"],
                        help="Keras dtype policy of the encoder (the peak is measured in its "
                             "compute dtype)")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.precision)
    peak_dtype = keras.mixed_precision.global_policy().compute_dtype

    t0 = time.perf_counter()
    backbone, _ = kerasbert.from_pretrained(args.model)
    config = backbone.bert_config
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); TF {tf.__version__}, "
          f"keras {keras.__version__}")
    print(f"encoder: {args.model or DEFAULT_MODEL} "
          f"L={config.num_layers} H={config.hidden_dim} I={config.intermediate_dim} "
          f"N={config.num_heads} D={config.head_dim}, {backbone.count_params() / 1e6:.1f}M params; "
          f"batch {args.batch}, {args.warmup} warm-up + {args.steps} timed steps")

    load_before = os.getloadavg()[0]
    peak = matmul_peak(dtype=peak_dtype)
    print(f"{peak_dtype} matmul peak (2048^3, chained): graph {peak['graph']:.1f} GFLOP/s, "
          f"XLA {peak['xla']:.1f} GFLOP/s (1-min load average {load_before:.2f})", flush=True)

    rows = []
    for seq_len in args.seqs:
        batch = make_batch(config, args.batch, seq_len)
        fwd_flops = encoder_forward_flops(config, args.batch, seq_len)
        for kind, make, flops in (("forward", forward_fn, fwd_flops),
                                  ("train", train_fn, 3 * fwd_flops)):
            if kind not in args.kinds:
                continue
            for mode in args.modes:
                fn = make(backbone, jit=(mode == "xla"))
                start = time.perf_counter()
                times = time_steps(fn, batch, args.warmup, args.steps)
                setup = time.perf_counter() - start - sum(times)
                step = statistics.median(times)
                gflops = flops / step / 1e9
                rows.append((kind, mode, seq_len, step * 1e3, min(times) * 1e3,
                             args.batch * seq_len / step, gflops, flops / min(times) / 1e9, setup))
                print(f"  done {kind:7s} {mode:5s} seq {seq_len}: {step * 1e3:.1f} ms/step", flush=True)

    load_after = os.getloadavg()[0]
    peak_after = matmul_peak(dtype=peak_dtype)
    print(f"{peak_dtype} matmul peak again: graph {peak_after['graph']:.1f} GFLOP/s, "
          f"XLA {peak_after['xla']:.1f} GFLOP/s (1-min load average {load_after:.2f})")
    peak_gflops = max(*peak.values(), *peak_after.values())

    header = (f"{'step':8s} {'mode':5s} {'seq':>4s} {'ms/step':>9s} {'min ms':>8s} "
              f"{'tokens/s':>9s} {'GFLOP/s':>8s} {'% peak':>7s} {'best %':>7s} {'warm-up s':>9s}")
    print()
    print(f"GFLOP per step (matmuls): forward seq64 "
          f"{encoder_forward_flops(config, args.batch, 64) / 1e9:.1f}, seq128 "
          f"{encoder_forward_flops(config, args.batch, 128) / 1e9:.1f}; train = 3x forward")
    print(header)
    print("-" * len(header))
    for kind, mode, seq_len, ms, min_ms, tps, gflops, best_gflops, setup in rows:
        print(f"{kind:8s} {mode:5s} {seq_len:4d} {ms:9.1f} {min_ms:8.1f} {tps:9.0f} "
              f"{gflops:8.1f} {100 * gflops / peak_gflops:6.1f}% "
              f"{100 * best_gflops / peak_gflops:6.1f}% {setup:9.1f}")
    print(f"\npeak = {peak_gflops:.1f} GFLOP/s {peak_dtype}, policy {args.precision} (best of graph/XLA chained 2048^3 matmul, "
          f"before and after). ms/step, tokens/s, GFLOP/s and % peak: median of {args.steps} "
          f"steps; best %: fastest step. Load average {load_before:.2f} -> {load_after:.2f} on "
          f"{os.cpu_count()} cores; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
