"""How long one dev evaluation takes, and what it computes: pairs vs distinct sentences.

Builds the trainer of `python -m training.run --variant dps_mse --precision auto`
(MiniLM, the real dev sets), then times each task's dev prediction the way
evaluation runs it each epoch (`MultitaskTrainer.predict`), after one
untimed pass that pays the compiles. For the pair tasks it also times the
pair model on pair batches (both sentences padded to the longer one's
bucket), which is how evaluation ran before it encoded each distinct
sentence once. Token slots are the padded (B, T) positions computed.

    python benchmarks/eval_speed.py --data-dir ../shared/data
    python benchmarks/eval_speed.py --data-dir ../shared/data --repeats 3 --precision float32
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "lite")]


def slots(batches):
    return sum(len(indices) * length for length, indices in batches.eval_plan())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("KERASBERT_DATA"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per task (median)")
    args = parser.parse_args()

    from training.run import build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(
        ["--variant", "dps_mse", "--precision", args.precision, "--out", "/tmp/eval_speed"]
        + (["--data-dir", args.data_dir] if args.data_dir else [])))
    from training.multitask_trainer import MultitaskTrainer
    from training.pipelines import outputs_in_data_order
    import tensorflow as tf

    trainer = MultitaskTrainer(config).setup()
    print(f"dps_mse dev evaluation, {trainer.precision.policy}, eval batch {config.eval_batch_size}, "
          f"buckets every {trainer.eval_buckets[1] - trainer.eval_buckets[0]} tokens; "
          f"TF {tf.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")

    def timed(fn):
        fn()  # compiles each new length once
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    rows, total = [], 0.0
    for task, batches in trainer.dev_batches.items():
        seconds = timed(lambda: trainer.predict(task, batches))
        total += seconds
        if batches.pair_encoding == "bi":
            _, sentences, _, _ = trainer._eval_inputs_cache[("sentences", id(batches))]
            count, computed = len(sentences.data), slots(sentences)
            rows.append((task, "distinct sentences", count, computed, seconds))
            pair_model = trainer._predictor(task_output(task))
            dataset, _ = batches.eval_dataset()
            pairs = [(x, w, i) for x, _y, w, i in dataset]
            old = timed(lambda: outputs_in_data_order(
                ((pair_model(x), w, i) for x, w, i in pairs), len(batches.data)))
            rows.append((task, "pairs (before)", 2 * len(batches.data), 2 * slots(batches), old))
        else:
            rows.append((task, "sentences", len(batches.data), slots(batches), seconds))
    print(f"\n{'task':6s} {'encoded as':20s} {'sentences':>9s} {'token slots':>11s} "
          f"{'seconds':>8s} {'slots/s':>8s}")
    for task, how, count, computed, seconds in rows:
        print(f"{task:6s} {how:20s} {count:9d} {computed:11d} {seconds:8.1f} "
              f"{computed / seconds:8.0f}")
    print(f"\none dev evaluation (all tasks, as each epoch runs it): {total:.1f} s "
          f"(goal: <= 45 s)")


def task_output(task):
    from kerasbert_lite.tasks import get_task
    return get_task(task).output


if __name__ == "__main__":
    main()
