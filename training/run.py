"""Command line: train a multitask (or single-task) BERT on the CS224N data.

    python -m training.run --variant dps_mse --data-dir ../shared/data
    python -m training.run --variant classifier --task cfimdb --mode frozen
    python -m training.run --variant bm --tasks sst          # SST-only multitask
    python -m training.run --variant dps_mse --out runs/x --resume
    python -m training.run --strategy mirrored                # all GPUs of this machine
    TF_CONFIG='{...}' python -m training.run --strategy multiworker   # one per machine
"""

import argparse
import json
import logging
import os
import sys


def build_parser():
    from kerasbert_lite.tasks import sentiment_task_names
    from training.train_config import SCHEDULES, STRATEGIES
    from training.variants import VARIANTS

    variants = "\n".join(f"  {v.name:<13} {v.description} [{v.paper}]" for v in VARIANTS.values())
    parser = argparse.ArgumentParser(
        prog="python -m training.run",
        description="Fine-tune BERT on SST, Quora and STS at once (CS224N minBERT) and "
                    "report dev scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="variants:\n" + variants)
    add = parser.add_argument
    add("--variant", default="dps_mse", choices=sorted(VARIANTS),
        help="training recipe (see the list below; default: dps_mse)")
    add("--model", default=None,
        help="encoder: a local HF folder (config.json, model.safetensors, vocab.txt), a "
             "Google BERT folder, a hub name when online, or a run folder (its fine-tuned "
             "encoder, e.g. a 6-layer student for --student-layers 3) (default: the "
             "packaged all-MiniLM-L6-v2)")
    add("--data-dir", default=None,
        help="folder with the CS224N files (default: $KERASBERT_DATA)")
    add("--out", default=None, help="run folder (default: runs/VARIANT)")
    add("--epochs", type=int, default=5, help="passes over every task's training data (5)")
    add("--batch-size", type=int, default=32, help="training examples per step (32)")
    add("--eval-batch-size", type=int, default=128, help="examples per evaluation batch (128)")
    add("--lr", type=float, default=None,
        help="peak encoder learning rate after warm-up (default: the variant's, 5e-5)")
    add("--head-lr", type=float, default=1e-3,
        help="peak learning rate of the task heads, which start from random (1e-3)")
    add("--max-length", type=int, default=128,
        help="tokens per sequence, specials included; longer input is truncated (128)")
    add("--buckets", default="auto",
        help="comma-separated padded lengths; each batch takes the smallest that fits. "
             "auto: 32,64,128 under XLA (one compile per bucket), "
             "16,24,32,40,48,64,96,128 in graph mode (less padding)")
    add("--quora-fraction", type=float, default=1.0,
        help="fraction of quora-train to use, a seeded subset (1.0)")
    add("--tasks", default=None,
        help="comma-separated datasets to train on, e.g. 'sst' for the SST-only run "
             "(default: the variant's; evaluation always covers all three)")
    add("--task", default="sst", choices=sentiment_task_names(),
        help=f"sentiment dataset (for --variant classifier: {' or '.join(sentiment_task_names())})")
    add("--mode", default="finetune", choices=("finetune", "frozen"),
        help="finetune the encoder, or freeze it and train only the heads")
    add("--schedule", default="round_robin", choices=SCHEDULES,
        help="task order within an epoch: the paper's round robin, or proportional sampling")
    add("--warmup-ratio", type=float, default=0.1, help="fraction of steps spent warming up (0.1)")
    add("--weight-decay", type=float, default=0.01, help="AdamW weight decay (0.01)")
    add("--clip-norm", type=float, default=1.0, help="global gradient-norm clip (1.0)")
    add("--embedding-update", default="lazy", choices=("lazy", "dense"),
        help="AdamW on the embedding tables: lazy (default) steps only the rows a batch used, "
             "as LazyAdam; dense steps every row every step (Keras' AdamW maths, slower)")
    add("--checkpoint-every", type=int, default=200,
        help="steps between resumable checkpoints (200)")
    add("--jit", default="auto", choices=("auto", "on", "off"),
        help="XLA-compile train/eval steps: auto = on GPU only (on CPU, oneDNN graph mode "
             "measured faster); on; off")
    add("--precision", default="auto",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help="dtype policy: auto = bf16 on a CPU with avx512_bf16/amx_bf16 or a GPU of "
             "compute capability >= 8.0, float16 with loss scaling on older GPUs, else "
             "float32 (recorded in config.json as precision_used)")
    add("--log-every", type=int, default=20,
        help="steps between reads of the loss (progress bar, TensorBoard, NaN check) (20)")
    add("--teacher", nargs="+", default=None, metavar="PATH",
        help="--variant distill: the teacher, an export folder or the run folders of an "
             "ensemble's members; its outputs on the training sets are cached in --out")
    add("--teacher-weight", type=float, default=0.5,
        help="--variant distill: weight of the teacher's soft targets; 1 - it goes to the "
             "gold labels (0.5)")
    add("--distill-temperature", type=float, default=1.0,
        help="--variant distill: temperature of the sentiment KL term (1.0)")
    add("--extra-pairs", type=int, default=0, metavar="N",
        help="--variant distill: add N unlabeled pairs of training sentences to each pair "
             "task (half word-overlap neighbours, half random), labelled by the teacher (0)")
    add("--embedding-teacher", default=None, metavar="RUN",
        help="--variant distill: a bi-encoder run folder (e.g. the 6-layer student) whose "
             "unit sentence vectors the student's vectors learn, by squared distance, beside "
             "--teacher's outputs; cached in --out")
    add("--embedding-weight", type=float, default=1.0,
        help="--embedding-teacher: weight of the sentence-vector term (1.0)")
    add("--calibration-holdout", type=float, default=0.0, metavar="F",
        help="hold a fraction F of quora-train out of training (by id) and refit the "
             "paraphrase logit's scale and bias on it after each epoch, so p > .5 means "
             "duplicate on unseen pairs too; the saved model carries it (0: off)")
    add("--student-layers", type=int, default=None,
        help="keep every k-th encoder layer, k = layers // N, from the first (DistilBERT's "
             "initialisation): 3 of MiniLM's 6 takes layers 0, 2, 4 (default: all)")
    add("--seed", type=int, default=0, help="seeds data order, dropout and head init (0)")
    add("--strategy", default="auto", choices=STRATEGIES,
        help="tf.distribute strategy: auto = multiworker when TF_CONFIG names more than one "
             "worker, mirrored on 2+ GPUs, else one device; --batch-size stays the global "
             "batch (split over the replicas). Recorded in config.json with replicas and workers")
    add("--tpu", default=None,
        help="TPU address for --strategy tpu (grpc://host:8470, a TPU name, or 'local' on a "
             "TPU VM); untested here")
    add("--collective-timeout", type=float, default=None,
        help="multiworker: seconds a collective waits for the other workers before the run "
             "stops with an error (default: TensorFlow's peer health check, about a minute)")
    add("--limit", type=int, default=None,
        help="use only the first N examples of each split: a smoke run")
    add("--resume", action="store_true",
        help="continue the run in --out from its last checkpoint (the step it reached); "
             "the result is the uninterrupted run's to float noise")
    add("--json", action="store_true",
        help="end with summary.json's content instead of the table (for scripts)")
    add("--verbose", action="store_true",
        help="show TensorFlow's and absl's own log lines (hidden by default)")
    add("--kill-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def config_from_args(args):
    from training.train_config import TrainConfig
    from training.variants import get_variant

    buckets = None
    if args.buckets != "auto":
        try:
            buckets = tuple(int(b) for b in args.buckets.split(","))
        except ValueError:
            raise ValueError(f"--buckets must be 'auto' or comma-separated integers, "
                             f"got {args.buckets!r}") from None
    tasks = tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else None
    single_task = get_variant(args.variant).single_task
    return TrainConfig(
        variant=args.variant, data_dir=args.data_dir,
        out=args.out or os.path.join("runs", f"{args.variant}-{args.task}-{args.mode}" if single_task
                                     else args.variant),
        model=args.model, tasks=tasks, sentiment_task=args.task, mode=args.mode,
        epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        lr=args.lr, head_lr=args.head_lr, max_length=args.max_length, buckets=buckets,
        quora_fraction=args.quora_fraction, limit=args.limit, schedule=args.schedule,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
        clip_norm=args.clip_norm, embedding_update=args.embedding_update,
        checkpoint_every=args.checkpoint_every,
        jit_compile=args.jit, precision=args.precision, log_every=args.log_every,
        teacher=tuple(args.teacher) if args.teacher else None,
        teacher_weight=args.teacher_weight, distill_temperature=args.distill_temperature,
        extra_pairs=args.extra_pairs, calibration_holdout=args.calibration_holdout,
        embedding_teacher=args.embedding_teacher, embedding_weight=args.embedding_weight,
        student_layers=args.student_layers, seed=args.seed, strategy=args.strategy,
        tpu=args.tpu, collective_timeout=args.collective_timeout)


def main(argv=None):
    """The command line; exit 0 on success, 2 with one `error: <path or flag>: <what>` line
    (3 when a multi-worker run lost a worker)."""
    from kerasbert_lite.error_line import error_line

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.ERROR)
    try:
        # Every flag is checked here, before TensorFlow starts or data is read.
        config = config_from_args(args)
        from training.strategy import check_strategy_setup
        check_strategy_setup(config.strategy, config.tpu)
        if args.kill_after_steps is not None and args.kill_after_steps < 1:
            raise ValueError(f"--kill-after-steps must be at least 1, got {args.kill_after_steps}")
        # The data next, before TensorFlow starts or the encoder loads: a new
        # user without the CS224N files learns where to get them in a second.
        from training.data_files import missing_data_message
        missing = missing_data_message(config)
    except (OSError, ValueError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    from training.multitask_trainer import MultitaskTrainer, NonFiniteLoss
    import tensorflow as tf

    try:
        trainer = MultitaskTrainer(config)
        summary = trainer.train(resume=args.resume, kill_after_steps=args.kill_after_steps)
    except (OSError, ValueError, NonFiniteLoss) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
            tf.errors.CancelledError, tf.errors.AbortedError) as e:
        # A collective of a multi-worker run failed: a worker died, hung or
        # cannot be reached. The process's collective runtime is left
        # unusable (and its threads may block a normal exit): leave now.
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"error: {config.out}: lost contact with another worker ({type(e).__name__}: "
              f"{first[:300]}); check every worker, then start them all again with --resume",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(3)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from training.run_summary import summary_table
        print(summary_table(summary, config.out))
    return 0


if __name__ == "__main__":
    from kerasbert_lite.native_logs import quiet_native_logs
    quiet_native_logs()  # before TensorFlow loads; --verbose keeps its lines
    sys.exit(main())
