"""Training-step throughput per task on the real data's length buckets, graph vs XLA.

For the default encoder (packaged all-MiniLM-L6-v2) it times one training
step of each task as the custom loop runs it: the task's sub-model forward,
its loss, backward and an AdamW update (the trainer's FusedAdamW, embedding
tables stepped lazily; global-norm clipping, BERT's decay exclusions), at
batch 32, on real batches of the CS224N train sets:

* `sst`: single sentences (sentiment head);
* `quora`, `sts`: bi-encoder pairs (each sentence encoded alone: two
  encoder passes per example; the dps_mse layout);
* `quora-cross`, `sts-cross`: cross-encoder pairs (`[CLS] a [SEP] b [SEP]`,
  one pass; the cross variant).

Batches are bucketed as the trainer does (`training.pipelines.batch_plan`,
seed 0, epoch 0): by default the trainer's XLA buckets (32, 64, 128) under
`jit_compile=True` and its finer graph-mode buckets (every 4 tokens to 64,
every 8 above) under plain `tf.function`, since XLA compiles one program per
shape and graph mode does not. A bi-encoder's two sentences are each padded
to their own bucket, so its "bucket" is a pair of lengths `a/b`. The
plan's `--top` most frequent buckets are timed (warm-up steps first:
tracing, XLA compiling), and the per-bucket times are averaged with the
plan's bucket frequencies; `covered` says what share of the plan's batches
that average stands for.

Reported per task and mode: ms/step, examples/s, tokens/s counted as real
tokens and as padded token slots (what the hardware computes), the padding
waste of the plan (share of padded slots; for bi-encoders over both
sentences, from `training.pipelines.padding_waste` on each side's lengths),
achieved GFLOP/s and its share of this machine's fp32 matmul peak, measured in
the same run exactly as `benchmarks/encoder_throughput.py` does (chained
2048^3 matmuls, graph and XLA, before and after; the best counts). FLOPs are
the encoder's matmuls on the padded shapes (see `encoder_forward_flops`),
3x forward for a training step, times the passes per example.

Each configuration runs in every asked precision (`--precisions`, Keras
dtype policies; the fused training kernels of `kerasbert.fused_ops` on, as
the trainer runs), and its GFLOP/s is set against the matmul peak measured
in that precision's compute dtype in the same run.

Then the fixed-shape comparison (`--fixed`): the sentiment step at batch 32 x
seq 64 with no padding, per precision and mode, beside PyTorch on the same
encoder and shape (HF `BertModel` from the same safetensors, a linear head,
`torch.optim.AdamW`, which steps the embedding tables densely, as is
PyTorch's default), float32 and bf16 autocast, when torch and transformers
are installed (the test extra). The last lines print the issue's goals: a
bf16 step at >= 60% of the bf16 peak, and >= 3x PyTorch float32.

    python benchmarks/train_throughput.py                        # everything, ~15 min idle
    python benchmarks/train_throughput.py --tasks sst --modes graph --steps 1   # smoke
    python benchmarks/train_throughput.py --tasks --fixed         # the fixed-shape table only
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
from encoder_throughput import (cpu_name, encoder_forward_flops, make_batch,  # noqa: E402
                                matmul_peak)
from kerasbert import losses  # noqa: E402
from training.fused_adamw import FusedAdamW  # noqa: E402
from training.pipelines import (batch_plan, pair_side_lengths, padding_waste,  # noqa: E402
                                token_lengths)
from training.readers import load_split, resolve_data_dir  # noqa: E402
from training.variants import get_variant  # noqa: E402

# The trainer's defaults (training.multitask_trainer); repeated so this script
# keeps working if they move.
XLA_BUCKETS = (32, 64, 128)
GRAPH_BUCKETS = tuple(range(8, 64, 4)) + tuple(range(64, 129, 8))
MAX_LENGTH = 128

# task -> (dataset, pair encoding or None, variant the model is built as, sub-model, loss)
TASKS = {
    "sst": ("sst", None, "dps_mse", "sentiment", losses.sentiment_cross_entropy),
    "quora": ("quora", "bi", "dps_mse", "paraphrase", losses.binary_cross_entropy_logits),
    "sts": ("sts", "bi", "dps_mse", "similarity", losses.similarity_mse),
    "quora-cross": ("quora", "cross", "cross", "paraphrase", losses.binary_cross_entropy_logits),
    "sts-cross": ("sts", "cross", "cross", "similarity", losses.similarity_mse),
}

PRECISION_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16"}


def fixed_step(precision, jit, batch, seq_len, model_arg):
    """Seconds per sentiment train step at batch x seq_len (no padding), median and best."""
    keras.mixed_precision.set_global_policy(precision)
    backbone, _ = kerasbert.from_pretrained(model_arg, max_length=MAX_LENGTH)
    model = kerasbert.MultitaskBert(backbone, num_sentiment_classes=5)
    bench = TaskBench.__new__(TaskBench)
    bench.submodel, bench.loss_fn = model.task_model("sentiment"), losses.sentiment_cross_entropy
    bench.optimizer = FusedAdamW(learning_rate=1e-5, weight_decay=0.01,  # the trainer's AdamW
                                 global_clipnorm=1.0, lazy_embeddings=True)
    bench.optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    bench.optimizer.build(bench.submodel.trainable_variables)
    fn = bench.step_fn(jit)
    x = make_batch(backbone.bert_config, batch, seq_len)
    y = tf.constant(np.arange(batch) % 5, tf.int32)
    for _ in range(3):
        float(fn(x, y))
    times = []
    for _ in range(6):
        start = time.perf_counter()
        float(fn(x, y))
        times.append(time.perf_counter() - start)
    keras.mixed_precision.set_global_policy("float32")
    return statistics.median(times), min(times)


def torch_step(autocast, batch, seq_len):
    """(median, best) seconds of the same step in PyTorch (HF BertModel), or None."""
    try:
        import torch
        from transformers import BertConfig as HFConfig
        from transformers import BertModel
    except ImportError:
        return None
    from kerasbert.from_pretrained import embedded_model_dir
    folder = embedded_model_dir()
    torch.manual_seed(0)
    encoder = BertModel.from_pretrained(str(folder), config=HFConfig.from_pretrained(str(folder)),
                                        add_pooling_layer=True)
    head = torch.nn.Linear(encoder.config.hidden_size, 5)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    encoder.train()
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(1000, encoder.config.vocab_size, (batch, seq_len)))
    mask = torch.ones_like(ids)
    labels = torch.tensor(np.arange(batch) % 5)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            pooled = encoder(input_ids=ids, attention_mask=mask).pooler_output
            loss = torch.nn.functional.cross_entropy(head(pooled).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return float(loss)

    for _ in range(2):
        step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def fixed_comparison(args, config, peaks):
    """Prints the fixed-shape table and the goal lines; returns nothing."""
    batch, seq_len = 32, 64
    flops = 3 * encoder_forward_flops(config, batch, seq_len)
    rows = []
    for precision in args.precisions:
        for mode in args.modes:
            median, best = fixed_step(precision, mode == "xla", batch, seq_len, args.model)
            rows.append((f"kerasbert {precision}", mode, median, best,
                         peaks[PRECISION_DTYPE[precision]]))
            print(f"  done fixed {precision} {mode}: {median * 1e3:.0f} ms/step", flush=True)
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    if torch_version and not args.no_torch:
        for autocast, dtype in ((False, "float32"), (True, "bfloat16")):
            result = torch_step(autocast, batch, seq_len)
            if result:
                label = "PyTorch " + ("bf16 autocast" if autocast else "float32")
                rows.append((label, "eager", *result, peaks.get(dtype)))
                print(f"  done {label}: {result[0] * 1e3:.0f} ms/step", flush=True)
    print(f"\nFixed shape: sentiment train step (fwd + bwd + AdamW, clip 1.0), batch {batch} x "
          f"seq {seq_len}, no padding; {flops / 1e9:.0f} GFLOP of matmuls per step")
    header = (f"{'implementation':32s} {'mode':5s} {'ms/step':>8s} {'min ms':>7s} "
              f"{'tokens/s':>9s} {'GFLOP/s':>8s} {'% own peak':>10s}")
    print(header)
    print("-" * len(header))
    for label, mode, median, best, peak in rows:
        share = f"{100 * flops / median / 1e9 / peak:9.1f}%" if peak else f"{'':>10s}"
        print(f"{label:32s} {mode:5s} {median * 1e3:8.0f} {best * 1e3:7.0f} "
              f"{batch * seq_len / median:9.0f} {flops / median / 1e9:8.1f} {share}")
    ours = [r for r in rows if r[0].startswith("kerasbert")]
    fastest = min(ours, key=lambda r: r[2])
    bf16 = [r for r in ours if "bfloat16" in r[0]]
    if bf16:
        best_bf16 = min(bf16, key=lambda r: r[2])
        print(f"goal: bf16 step >= 60% of the bf16 peak: {100 * flops / best_bf16[2] / 1e9 / best_bf16[4]:.0f}%"
              f" ({best_bf16[1]})")
    torch_f32 = [r for r in rows if r[0] == "PyTorch float32"]
    if torch_f32:
        print(f"goal: >= 3x PyTorch float32: {torch_f32[0][2] / fastest[2]:.2f}x "
              f"({fastest[0]} {fastest[1]}, {fastest[2] * 1e3:.0f} vs "
              f"{torch_f32[0][2] * 1e3:.0f} ms)")
    else:
        print("PyTorch: not installed (pip install '.[test]'), no side-by-side rows")


class TaskBench:
    """One task's model step, plan and example batches per bucket."""

    def __init__(self, name, model, tokenizer, data, batch_size):
        dataset, self.encoding, _, output, self.loss_fn = TASKS[name]
        self.name, self.tokenizer, self.data, self.batch_size = name, tokenizer, data, batch_size
        self.passes = 2 if self.encoding == "bi" else 1
        self.submodel = model.task_model(output)
        # (N,) lengths, or (N, 2) for bi-encoder pairs: each side its own bucket, as the trainer.
        self.lengths = (pair_side_lengths(data, tokenizer) if self.encoding == "bi"
                        else token_lengths(data, tokenizer, self.encoding or "bi"))
        self.optimizer = FusedAdamW(learning_rate=1e-5, weight_decay=0.01,  # the trainer's AdamW
                                    global_clipnorm=1.0, lazy_embeddings=True)
        self.optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        self.optimizer.build(self.submodel.trainable_variables)

    def plan(self, buckets):
        return batch_plan(self.lengths, self.batch_size, buckets, seed=0, epoch=0)

    def waste(self, plan):
        """Padded-slot share over every encoder input (both sides for bi-encoders)."""
        return padding_waste(plan, self.lengths)

    def real_tokens(self, plan, length):
        """Mean real tokens per batch of bucket `length` (all passes)."""
        rows = [idx for bucket, idx in plan if bucket == length]
        lengths = self.lengths.reshape(len(self.lengths), -1)
        return float(np.mean([np.minimum(lengths[idx], np.atleast_1d(length)).sum()
                              for idx in rows]))

    def flops(self, config, batch, length):
        """A training step's encoder matmul FLOPs (3x forward) at bucket `length`, all passes."""
        sides = np.atleast_1d(length).tolist() * (self.passes if np.ndim(length) == 0 else 1)
        return 3 * sum(encoder_forward_flops(config, batch, side) for side in sides)

    def padded(self, batch, length):
        """Token slots a step computes at bucket `length`, all passes."""
        return batch * int(np.sum(length)) * (self.passes if np.ndim(length) == 0 else 1)

    def batch(self, plan, length, k):
        """The k-th batch of bucket `length` in the plan, tokenised as the pipeline does."""
        idx = [idx for bucket, idx in plan if bucket == length][k % sum(
            1 for bucket, _ in plan if bucket == length)]
        d = self.data
        if self.encoding is None:
            x = self.tokenizer([d.texts[i] for i in idx], max_length=length)
        elif self.encoding == "bi":
            x = {"a": self.tokenizer([d.texts_a[i] for i in idx], max_length=length[0]),
                 "b": self.tokenizer([d.texts_b[i] for i in idx], max_length=length[1])}
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


def show(length):
    """A bucket as printed: `64`, or `24/40` for a bi-encoder's two sides."""
    return "/".join(str(n) for n in np.atleast_1d(length))


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
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=list(PRECISION_DTYPE))
    parser.add_argument("--fixed", action=argparse.BooleanOptionalAction, default=True,
                        help="the fixed-shape table beside PyTorch (default on)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per bucket")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps per bucket first (tracing / XLA compile)")
    parser.add_argument("--top", type=int, default=3,
                        help="time the plan's this many most frequent buckets")
    parser.add_argument("--buckets", type=int, nargs="+", default=None,
                        help="one bucket set for both modes (default: the trainer's per mode)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data_dir = resolve_data_dir(args.data_dir or os.environ.get("KERASBERT_DATA")
                                or Path(__file__).resolve().parents[2] / "shared" / "data")
    train = {TASKS[t][0]: None for t in args.tasks}
    train = {dataset: load_split(dataset, "train", data_dir) for dataset in train}

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); TF {tf.__version__}, "
          f"keras {keras.__version__}")
    load_before = os.getloadavg()[0]
    dtypes = sorted({PRECISION_DTYPE[p] for p in args.precisions} | {"float32"})
    peaks_before = {d: matmul_peak(dtype=d) for d in dtypes}
    for dtype, peak in peaks_before.items():
        print(f"{dtype} matmul peak (2048^3, chained): graph {peak['graph']:.1f}, "
              f"XLA {peak['xla']:.1f} GFLOP/s (1-min load average {load_before:.2f})", flush=True)

    bucket_rows, task_rows = [], []
    config = None
    for precision in args.precisions if args.tasks else []:
        keras.mixed_precision.set_global_policy(precision)
        backbone, tokenizer = kerasbert.from_pretrained(args.model, max_length=MAX_LENGTH)
        config = backbone.bert_config
        models = {variant: kerasbert.MultitaskBert(backbone, **get_variant(variant).model_kwargs())
                  for variant in sorted({TASKS[t][2] for t in args.tasks})}
        benches = {task: TaskBench(task, models[TASKS[task][2]], tokenizer,
                                   train[TASKS[task][0]], args.batch) for task in args.tasks}
        for task, bench in benches.items():
            for mode in args.modes:
                buckets = tuple(args.buckets or (XLA_BUCKETS if mode == "xla" else GRAPH_BUCKETS))
                plan = bench.plan(buckets)
                shares = {length: sum(1 for b, _ in plan if b == length) / len(plan)
                          for length in sorted({b for b, _ in plan})}
                timed = sorted(shares, key=shares.get, reverse=True)[:args.top]
                fn = bench.step_fn(jit=(mode == "xla"))
                per_bucket = {}
                for length in timed:
                    times, setup = time_bucket(fn, bench, plan, length, args.warmup, args.steps)
                    flops = bench.flops(config, args.batch, length)
                    per_bucket[length] = (statistics.median(times), flops,
                                          bench.real_tokens(plan, length))
                    bucket_rows.append((precision, task, mode, length, shares[length],
                                        statistics.median(times), min(times), flops, setup))
                    print(f"  done {precision} {task:11s} {mode:5s} L={show(length)}: "
                          f"{statistics.median(times) * 1e3:.0f} ms/step", flush=True)
                # Plan-weighted over the timed buckets: sums of per-step amounts,
                # divided by the summed step time.
                weight = {length: shares[length] for length in timed}
                covered = sum(weight.values())
                seconds = sum(weight[k] * per_bucket[k][0] for k in timed)
                flops = sum(weight[k] * per_bucket[k][1] for k in timed)
                real = sum(weight[k] * per_bucket[k][2] for k in timed)
                padded = sum(weight[k] * bench.padded(args.batch, k) for k in timed)
                task_rows.append(dict(
                    precision=precision, task=task, mode=mode, buckets=buckets, covered=covered,
                    ms=seconds / covered * 1e3, examples=args.batch * covered / seconds,
                    real_tps=real / seconds, padded_tps=padded / seconds,
                    waste=bench.waste(plan), gflops=flops / seconds / 1e9))
        keras.mixed_precision.set_global_policy("float32")

    load_after = os.getloadavg()[0]
    peaks_after = {d: matmul_peak(dtype=d) for d in dtypes}
    peaks = {d: max(*peaks_before[d].values(), *peaks_after[d].values()) for d in dtypes}
    for dtype, peak in peaks_after.items():
        print(f"{dtype} matmul peak again: graph {peak['graph']:.1f}, XLA {peak['xla']:.1f} "
              f"GFLOP/s (1-min load average {load_after:.2f})")

    if bucket_rows:
        print("\nPer bucket (ms/step: median of the timed steps; GFLOP/s from the median; "
              "% of the peak of the precision's compute dtype)")
        header = (f"{'precision':15s} {'task':11s} {'mode':5s} {'L':>7s} {'share':>6s} "
                  f"{'ms/step':>8s} {'min ms':>7s} {'GFLOP/s':>8s} {'% peak':>7s} {'warm-up s':>9s}")
        print(header)
        print("-" * len(header))
        for precision, task, mode, length, share, step, best, flops, setup in bucket_rows:
            peak = peaks[PRECISION_DTYPE[precision]]
            print(f"{precision:15s} {task:11s} {mode:5s} {show(length):>7s} {share:6.1%} "
                  f"{step * 1e3:8.0f} {best * 1e3:7.0f} {flops / step / 1e9:8.1f} "
                  f"{100 * flops / step / 1e9 / peak:6.1f}% {setup:9.1f}")

        print("\nPer task step (bucket times averaged with the plan's bucket frequencies)")
        header = (f"{'precision':15s} {'task':11s} {'mode':5s} {'buckets':>8s} {'covered':>7s} "
                  f"{'ms/step':>8s} {'ex/s':>6s} {'real tok/s':>10s} {'pad tok/s':>9s} "
                  f"{'pad waste':>9s} {'GFLOP/s':>8s} {'% peak':>7s}")
        print(header)
        print("-" * len(header))
        for r in task_rows:
            peak = peaks[PRECISION_DTYPE[r["precision"]]]
            print(f"{r['precision']:15s} {r['task']:11s} {r['mode']:5s} {len(r['buckets']):8d} "
                  f"{r['covered']:7.0%} {r['ms']:8.0f} {r['examples']:6.1f} {r['real_tps']:10.0f} "
                  f"{r['padded_tps']:9.0f} {r['waste']:9.1%} {r['gflops']:8.1f} "
                  f"{100 * r['gflops'] / peak:6.1f}%")

    if args.fixed:
        if config is None:
            config = kerasbert.from_pretrained(args.model, max_length=MAX_LENGTH)[0].bert_config
        fixed_comparison(args, config, peaks)
    print("\npeaks: " + ", ".join(f"{d} {p:.1f} GFLOP/s" for d, p in peaks.items())
          + " (best of graph/XLA chained 2048^3 matmul, before and after). tokens/s: real = "
          f"non-pad tokens, padded = token slots computed. Load average {load_before:.2f} -> "
          f"{load_after:.2f} on {os.cpu_count()} cores; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
