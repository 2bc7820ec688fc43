"""Training-step throughput per task on the real data's length buckets, graph vs XLA.

For the default encoder (packaged all-MiniLM-L6-v2) it times one training
step of each task as the custom loop runs it: the task's sub-model forward,
its loss, backward and an AdamW update (global-norm clipping, BERT's decay
exclusions), at batch 32, on real batches of the CS224N train sets:

* `sst`: single sentences (sentiment head);
* `quora`, `sts`: bi-encoder pairs (each sentence encoded alone: two
  encoder passes per example; the dps_mse layout);
* `quora-cross`, `sts-cross`: cross-encoder pairs (`[CLS] a [SEP] b [SEP]`,
  one pass; the cross variant).

Batches are bucketed as the trainer does (`training.pipelines.batch_plan`,
seed 0, epoch 0): by default the trainer's XLA buckets (32, 64, 128) under
`jit_compile=True` and its finer graph-mode buckets (16 ... 128) under plain
`tf.function`, since XLA compiles one program per shape and graph mode does
not. Each bucket holding at least `--min-share` of the plan's batches is
timed (warm-up steps first: tracing, XLA compiling), and the per-bucket times
are averaged with the plan's bucket frequencies; `covered` says what share
of the plan's batches that average stands for.

Reported per task and mode: ms/step, examples/s, tokens/s counted as real
tokens and as padded token slots (what the hardware computes), the padding
waste of the plan (share of padded slots; for bi-encoders over both
sentences, from `training.pipelines.padding_waste` on each side's lengths),
achieved GFLOP/s and its share of this machine's fp32 matmul peak, measured in
the same run exactly as `benchmarks/encoder_throughput.py` does (chained
2048^3 matmuls, graph and XLA, before and after; the best counts). FLOPs are
the encoder's matmuls on the padded shapes (see `encoder_forward_flops`),
3x forward for a training step, times the passes per example.

    python benchmarks/train_throughput.py                        # all tasks, ~5 min idle
    python benchmarks/train_throughput.py --tasks sst --modes graph --steps 1   # smoke
    python benchmarks/train_throughput.py --buckets 32 64 128   # same buckets both modes

The machine is shared: compare modes within one run, and read the load
averages printed alongside.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# This checkout's code (not whatever `pip install -e` last pointed at), and
# the sibling benchmark for the peak measurement.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import kerasbert  # noqa: E402
from encoder_throughput import cpu_name, encoder_forward_flops, matmul_peak  # noqa: E402
from training import losses  # noqa: E402
from training.keras_fit import DEFAULT_LENGTHS as FIT_LENGTHS  # noqa: E402
from training.pipelines import batch_plan, padding_waste, token_lengths  # noqa: E402
from training.readers import load_split, resolve_data_dir  # noqa: E402
from training.variants import get_variant  # noqa: E402

# The trainer's defaults (training.multitask_trainer); repeated so this script
# keeps working if they move.
XLA_BUCKETS = (32, 64, 128)
GRAPH_BUCKETS = (16, 24, 32, 40, 48, 64, 96, 128)
MAX_LENGTH = 128

# task -> (dataset, pair encoding or None, variant the model is built as, sub-model, loss)
TASKS = {
    "sst": ("sst", None, "dps_mse", "sentiment", losses.sentiment_cross_entropy),
    "quora": ("quora", "bi", "dps_mse", "paraphrase", losses.binary_cross_entropy_logits),
    "sts": ("sts", "bi", "dps_mse", "similarity", losses.similarity_mse),
    "quora-cross": ("quora", "cross", "cross", "paraphrase", losses.binary_cross_entropy_logits),
    "sts-cross": ("sts", "cross", "cross", "similarity", losses.similarity_mse),
}

PYTORCH_REFERENCE = (
    "PyTorch reference (measured earlier on this machine): HF BertModel, PyTorch 2.13 CPU, "
    "same MiniLM, fwd+bwd+AdamW at batch 32x64: ~1,000 ms/step, ~2,050 tokens/s, "
    "~135 GFLOP/s = 30% of the peak measured then (so ~450 GFLOP/s, an idle machine); compare "
    "it with the L=64 rows above, and its % with this run's % peak")


class TaskBench:
    """One task's model step, plan and example batches per bucket."""

    def __init__(self, name, model, tokenizer, data, batch_size):
        dataset, self.encoding, _, output, self.loss_fn = TASKS[name]
        self.name, self.tokenizer, self.data, self.batch_size = name, tokenizer, data, batch_size
        self.passes = 2 if self.encoding == "bi" else 1
        self.submodel = model.task_model(output)
        self.lengths = token_lengths(data, tokenizer, self.encoding or "bi")
        if self.encoding == "bi":  # each side's own length, for real-token counts
            self.side_lengths = [np.asarray(tokenizer.token_lengths(texts)).astype(np.int64)
                                 for texts in (data.texts_a, data.texts_b)]
        else:
            self.side_lengths = [self.lengths]
        self.optimizer = keras.optimizers.AdamW(learning_rate=1e-5, weight_decay=0.01,
                                                global_clipnorm=1.0)
        self.optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        self.optimizer.build(self.submodel.trainable_variables)

    def plan(self, buckets):
        return batch_plan(self.lengths, self.batch_size, buckets, seed=0, epoch=0)

    def waste(self, plan):
        """Padded-slot share over every encoder input (both sides for bi-encoders)."""
        return float(np.mean([padding_waste(plan, lengths) for lengths in self.side_lengths]))

    def real_tokens(self, plan, length):
        """Mean real tokens per batch of bucket `length` (all passes)."""
        rows = [idx for bucket, idx in plan if bucket == length]
        return float(np.mean([sum(np.minimum(side[idx], length).sum()
                                  for side in self.side_lengths) for idx in rows]))

    def batch(self, plan, length, k):
        """The k-th batch of bucket `length` in the plan, tokenised as the pipeline does."""
        idx = [idx for bucket, idx in plan if bucket == length][k % sum(
            1 for bucket, _ in plan if bucket == length)]
        d = self.data
        if self.encoding is None:
            x = self.tokenizer([d.texts[i] for i in idx], max_length=length)
        elif self.encoding == "bi":
            x = {"a": self.tokenizer([d.texts_a[i] for i in idx], max_length=length),
                 "b": self.tokenizer([d.texts_b[i] for i in idx], max_length=length)}
        else:
            x = {"pair": self.tokenizer([d.texts_a[i] for i in idx], [d.texts_b[i] for i in idx],
                                        max_length=length)}
        y = tf.constant(d.labels[idx])
        return x, y

    def step_fn(self, jit):
        """The trainer's single-replica step: loss, gradients, AdamW on the reached variables."""
        submodel, loss_fn, optimizer = self.submodel, self.loss_fn, self.optimizer
        variables = submodel.trainable_variables

        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(submodel(x, training=True), y)
            grads = tape.gradient(loss, variables)
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss

        return tf.function(step, jit_compile=jit, reduce_retracing=True)


def time_bucket(fn, bench, plan, length, warmup, steps):
    """(per-step seconds, warm-up seconds) on distinct real batches of one bucket."""
    start = time.perf_counter()
    for k in range(warmup):
        float(fn(*bench.batch(plan, length, k)))
    setup = time.perf_counter() - start
    times = []
    for k in range(warmup, warmup + steps):
        x, y = bench.batch(plan, length, k)  # tokenised outside the timed region
        start = time.perf_counter()
        float(fn(x, y))  # fetch the loss: the step is done
        times.append(time.perf_counter() - start)
    return times, setup


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="CS224N files (default $KERASBERT_DATA)")
    parser.add_argument("--model", default=None,
                        help="from_pretrained() argument (default: packaged MiniLM)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per bucket")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps per bucket first (tracing / XLA compile)")
    parser.add_argument("--min-share", type=float, default=0.1,
                        help="time buckets holding at least this share of the plan's batches")
    parser.add_argument("--buckets", type=int, nargs="+", default=None,
                        help="one bucket set for both modes (default: the trainer's per mode)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data_dir = resolve_data_dir(args.data_dir or os.environ.get("KERASBERT_DATA")
                                or Path(__file__).resolve().parents[2] / "shared" / "data")
    backbone, tokenizer = kerasbert.from_pretrained(args.model, max_length=MAX_LENGTH)
    config = backbone.bert_config
    models = {}
    for variant in sorted({TASKS[t][2] for t in args.tasks}):
        models[variant] = kerasbert.MultitaskBert(backbone, **get_variant(variant).model_kwargs())
    train = {}
    benches = {}
    for task in args.tasks:
        dataset = TASKS[task][0]
        train.setdefault(dataset, load_split(dataset, "train", data_dir))
        benches[task] = TaskBench(task, models[TASKS[task][2]], tokenizer, train[dataset],
                                  args.batch)

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); TF {tf.__version__}, "
          f"keras {keras.__version__}")
    print(f"encoder: {args.model or 'all-MiniLM-L6-v2'} L={config.num_layers} "
          f"H={config.hidden_dim}, {backbone.count_params() / 1e6:.1f}M params; "
          f"batch {args.batch}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per bucket; buckets with >= "
          f"{args.min_share:.0%} of the plan's batches")
    load_before = os.getloadavg()[0]
    peak = matmul_peak()
    print(f"fp32 matmul peak (2048^3, chained): graph {peak['graph']:.1f}, XLA {peak['xla']:.1f} "
          f"GFLOP/s (1-min load average {load_before:.2f})", flush=True)

    bucket_rows, task_rows = [], []
    for task, bench in benches.items():
        for mode in args.modes:
            buckets = tuple(args.buckets or (XLA_BUCKETS if mode == "xla" else GRAPH_BUCKETS))
            plan = bench.plan(buckets)
            shares = {length: sum(1 for b, _ in plan if b == length) / len(plan)
                      for length in sorted({b for b, _ in plan})}
            timed = [length for length, share in shares.items() if share >= args.min_share]
            fn = bench.step_fn(jit=(mode == "xla"))
            per_bucket = {}
            for length in timed:
                times, setup = time_bucket(fn, bench, plan, length, args.warmup, args.steps)
                flops = 3 * bench.passes * encoder_forward_flops(config, args.batch, length)
                per_bucket[length] = (statistics.median(times), flops,
                                      bench.real_tokens(plan, length))
                bucket_rows.append((task, mode, length, shares[length], statistics.median(times),
                                    min(times), flops, setup))
                print(f"  done {task:11s} {mode:5s} L={length:3d}: "
                      f"{statistics.median(times) * 1e3:.0f} ms/step", flush=True)
            # Plan-weighted over the timed buckets: sums of per-step amounts,
            # divided by the summed step time.
            weight = {length: shares[length] for length in timed}
            covered = sum(weight.values())
            seconds = sum(weight[k] * per_bucket[k][0] for k in timed)
            flops = sum(weight[k] * per_bucket[k][1] for k in timed)
            real = sum(weight[k] * per_bucket[k][2] for k in timed)
            padded = sum(weight[k] * args.batch * bench.passes * k for k in timed)
            task_rows.append(dict(
                task=task, mode=mode, buckets=buckets, covered=covered,
                ms=seconds / covered * 1e3, examples=args.batch * covered / seconds,
                real_tps=real / seconds, padded_tps=padded / seconds, waste=bench.waste(plan),
                gflops=flops / seconds / 1e9))

    load_after = os.getloadavg()[0]
    peak_after = matmul_peak()
    peak_gflops = max(*peak.values(), *peak_after.values())
    print(f"fp32 matmul peak again: graph {peak_after['graph']:.1f}, XLA {peak_after['xla']:.1f} "
          f"GFLOP/s (1-min load average {load_after:.2f})")

    print("\nPer bucket (ms/step: median of the timed steps; GFLOP/s from the median)")
    header = (f"{'task':11s} {'mode':5s} {'L':>4s} {'share':>6s} {'ms/step':>8s} {'min ms':>7s} "
              f"{'GFLOP/s':>8s} {'% peak':>7s} {'warm-up s':>9s}")
    print(header)
    print("-" * len(header))
    for task, mode, length, share, step, best, flops, setup in bucket_rows:
        print(f"{task:11s} {mode:5s} {length:4d} {share:6.1%} {step * 1e3:8.0f} {best * 1e3:7.0f} "
              f"{flops / step / 1e9:8.1f} {100 * flops / step / 1e9 / peak_gflops:6.1f}% "
              f"{setup:9.1f}")

    print("\nPer task step (bucket times averaged with the plan's bucket frequencies)")
    header = (f"{'task':11s} {'mode':5s} {'buckets':>8s} {'covered':>7s} {'ms/step':>8s} "
              f"{'ex/s':>6s} {'real tok/s':>10s} {'pad tok/s':>9s} {'pad waste':>9s} "
              f"{'GFLOP/s':>8s} {'% peak':>7s}")
    print(header)
    print("-" * len(header))
    for r in task_rows:
        print(f"{r['task']:11s} {r['mode']:5s} {len(r['buckets']):8d} {r['covered']:7.0%} "
              f"{r['ms']:8.0f} {r['examples']:6.1f} {r['real_tps']:10.0f} {r['padded_tps']:9.0f} "
              f"{r['waste']:9.1%} {r['gflops']:8.1f} {100 * r['gflops'] / peak_gflops:6.1f}%")

    print("\nPadding waste of the real train plans (batch %d):" % args.batch)
    for task, bench in benches.items():
        fixed = FIT_LENGTHS[bench.encoding or "bi"][bench.submodel.name.replace("_model", "")]
        parts = [f"XLA buckets {bench.waste(bench.plan(XLA_BUCKETS)):.1%}",
                 f"graph buckets {bench.waste(bench.plan(GRAPH_BUCKETS)):.1%}",
                 f"keras_fit fixed {fixed} {bench.waste(bench.plan((fixed,))):.1%}"]
        print(f"  {task:11s} " + ", ".join(parts))
    print(f"\npeak = {peak_gflops:.1f} GFLOP/s fp32 (best of graph/XLA chained 2048^3 matmul, "
          f"before and after). tokens/s: real = non-pad tokens, padded = token slots computed. "
          f"Load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} cores; total "
          f"{time.perf_counter() - t0:.0f} s")
    print(PYTORCH_REFERENCE)


if __name__ == "__main__":
    main()
