"""Latency of scoring one sentence pair, strings in, across the export's runtimes.

Usage:
    python benchmarks/score_latency.py exports/em [--iterations 300] [--threads 1 2]
        [--text-a "..."] [--text-b "..."] [--json latency.json]

Times one `similarity` call on a single pair, tokenisation included, for:
  - TFLite float32 / int8 (and float16 if exported) text-in files through
    `SimilarityScorer.score` (ai-edge-litert runtime), at each `--threads` count;
  - the ids-in embedder files (`embedder_*.tflite`) through kerasbert_lite's
    `SimilarityScorer.score` (its pure-Python tokenizer, no TensorFlow), at
    each `--threads` count;
  - the same embedder files in MediaPipe's own Python TextEmbedder (its C++
    tokenizer; text normalised first as an app does), when mediapipe is installed;
  - ONNX Runtime int8 of the same MiniLM (`--onnx FILE`, made by
    benchmarks/make_onnx_peer.py), when onnxruntime is installed: two
    sentences encoded, mean-pooled, cosine;
  - the SavedModel's `similarity` signature (TensorFlow, its default threads);
  - Keras: the members' similarity sub-models called eagerly on the
    tokenizer's output trimmed to the pair's length (the same work as the
    export), outputs averaged in numpy.
Then a fresh process's import + load + first-pair time for kerasbert_lite
and for the TensorFlow scorer. Prints p50 / p95 / mean / min in milliseconds, the model sizes, and the
load average before and after: the machine is shared, so a busy neighbour
shows up as a high load and a wide p50-p95 gap (min is the least disturbed
figure). The cases are timed in interleaved rounds so that noise spreads
over all of them.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# About 15 tokens each with [CLS]/[SEP] for the MiniLM vocabulary: the size of
# the ONNX Runtime reference measurement.
DEFAULT_A = "A man is playing a large flute on the big stage tonight."
DEFAULT_B = "A man plays the wooden flute loudly on a small stage tonight."


def _time_interleaved(cases, rounds, warmup):
    """Times every case in `rounds` interleaved rounds.

    Interleaving spreads a noisy neighbour's bursts over all cases instead of
    penalising whichever case ran during the burst.

    Args:
        cases: list of (fn, iterations) pairs.

    Returns:
        one dict of statistics (milliseconds) per case.
    """
    for fn, _ in cases:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in cases]
    for _ in range(rounds):
        for (fn, iterations), out in zip(cases, samples):
            for _ in range(max(iterations // rounds, 1)):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    stats = []
    for out in samples:
        ms = np.array(out) * 1000
        stats.append({"p50_ms": float(np.percentile(ms, 50)),
                      "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean()),
                      "min_ms": float(ms.min()), "iterations": len(ms)})
    return stats


def _tflite_case(path, threads, text_a, text_b):
    from export.similarity_scorer import SimilarityScorer
    # The scorer's public call: what an application pays, Python included.
    scorer = SimilarityScorer(path, num_threads=threads)
    return lambda: [scorer.score(text_a, text_b)]


def _lite_case(path, threads, text_a, text_b):
    from kerasbert_lite import SimilarityScorer
    scorer = SimilarityScorer(path, num_threads=threads)
    return lambda: [scorer.score(text_a, text_b)]


_OPEN = []


def _mediapipe_case(path, text_a, text_b):
    from mediapipe.tasks.python import text as mp_text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from export.device_verification import bert_normalize
    embedder = mp_text.TextEmbedder.create_from_options(mp_text.TextEmbedderOptions(
        base_options=BaseOptions(model_asset_path=str(path))))
    _OPEN.append(embedder)  # closed before exit: MediaPipe's __del__ fails at shutdown

    def run():
        u = embedder.embed(bert_normalize(text_a)).embeddings[0]
        v = embedder.embed(bert_normalize(text_b)).embeddings[0]
        return [5 * max(mp_text.TextEmbedder.cosine_similarity(u, v), 0.0)]
    return run


def _onnx_case(path, vocab, threads, text_a, text_b):
    import onnxruntime as ort

    from kerasbert_lite import WordPieceTokenizer
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tok = WordPieceTokenizer(vocab)

    def run():
        enc = tok.encode([text_a, text_b], max_length=128)
        n = int(enc["padding_mask"].sum(-1).max())
        feed = {"input_ids": enc["token_ids"][:, :n].astype(np.int64),
                "attention_mask": enc["padding_mask"][:, :n].astype(np.int64),
                "token_type_ids": enc["segment_ids"][:, :n].astype(np.int64)}
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None]
        emb = (hidden * mask).sum(1) / mask.sum(1)
        emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
        return [5 * max(float(emb[0] @ emb[1]), 0.0)]
    return run


_STARTUP = """
import time
t = time.perf_counter()
from {module} import SimilarityScorer
imported = time.perf_counter()
scorer = SimilarityScorer({path!r})
loaded = time.perf_counter()
scorer.score("a man plays guitar", "someone plays a guitar")
done = time.perf_counter()
print(imported - t, loaded - imported, done - loaded)
"""


def startup(model_dir, files, repeats=3):
    """Fresh-process import, load and first-pair seconds: kerasbert_lite vs the TF scorer."""
    import subprocess
    rows = []
    for label, module, kind in (("kerasbert_lite embedder int8", "kerasbert_lite",
                                 "embedder_int8"),
                                ("TF + tf-text, text-in int8", "export.similarity_scorer",
                                 "int8")):
        if kind not in files:
            continue
        code = _STARTUP.format(module=module, path=str(model_dir / files[kind]["path"]))
        runs = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 cwd=str(Path(__file__).resolve().parents[1]), check=True)
            runs.append([float(x) for x in out.stdout.split()[-3:]])
        best = np.min(runs, axis=0)
        rows.append({"runtime": label, "import_s": float(best[0]), "load_s": float(best[1]),
                     "first_pair_s": float(best[2])})
    return rows


def _saved_model_case(path, text_a, text_b):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops
    fn = tf.saved_model.load(str(path)).signatures["similarity"]
    a, b = tf.constant([text_a]), tf.constant([text_b])
    return lambda: fn(text_a=a, text_b=b)["score"].numpy()


def _keras_case(manifest, text_a, text_b):
    from export.multitask_ensemble import MultitaskEnsemble, trim_padding
    ensemble = MultitaskEnsemble.from_runs([m["path"] for m in manifest["members"]],
                                           max_length=manifest["max_length"])
    tok, max_length = ensemble.tokenizer, ensemble.max_length

    def run():
        scores = []
        for m in ensemble.members:
            if m.pair_encoding == "cross":
                inputs = {"pair": trim_padding(tok([text_a], [text_b], max_length=max_length))}
            else:
                inputs = {"a": trim_padding(tok([text_a], max_length=max_length)),
                          "b": trim_padding(tok([text_b], max_length=max_length))}
            scores.append(np.asarray(m.task_model("similarity")(inputs, training=False)))
        return np.mean(scores, axis=0)
    return run, ensemble


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", help="an export folder written by `python -m export.run`")
    parser.add_argument("--iterations", type=int, default=300,
                        help="timed calls per TFLite case (SavedModel / Keras: a third)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved rounds the iterations are split into")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--text-a", default=DEFAULT_A)
    parser.add_argument("--text-b", default=DEFAULT_B)
    parser.add_argument("--skip", nargs="*", default=[], choices=["saved_model", "keras", "float32", "int8", "float16", "startup"],
                        help="leave out the slow TensorFlow cases, or text-in TFLite kinds")
    parser.add_argument("--onnx", help="an ONNX int8 MiniLM (benchmarks/make_onnx_peer.py) to "
                                       "time with ONNX Runtime beside the exports")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    model_dir = Path(args.model_dir)
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        print(f"error: {manifest_path}: no such file (not an export folder?)", file=sys.stderr)
        return 2
    manifest = json.loads(manifest_path.read_text())
    load_before = os.getloadavg()

    from kerasbert.bert_tokenizer import BertTokenizer
    tok = BertTokenizer(str(model_dir / "vocab.txt"), lowercase=manifest["lowercase"])
    lengths = [int(tok.token_lengths([t])[0]) for t in (args.text_a, args.text_b)]

    rows, cases = [], []
    files = manifest["files"]
    for kind in ("float32", "int8", "float16"):
        if kind not in files or kind in args.skip:
            continue
        for threads in args.threads:
            fn = _tflite_case(model_dir / files[kind]["path"], threads, args.text_a, args.text_b)
            rows.append({"runtime": f"TFLite {kind}", "threads": threads,
                         "bytes": files[kind]["bytes"], "score": float(fn()[0])})
            cases.append((fn, args.iterations))
    for kind in ("embedder_float32", "embedder_int8"):
        if kind not in files:
            continue
        for threads in args.threads:
            fn = _lite_case(model_dir / files[kind]["path"], threads, args.text_a, args.text_b)
            rows.append({"runtime": f"lite {kind[9:]}", "threads": threads,
                         "bytes": files[kind]["bytes"], "score": float(fn()[0])})
            cases.append((fn, args.iterations))
        try:
            fn = _mediapipe_case(model_dir / files[kind]["path"], args.text_a, args.text_b)
        except ImportError:
            print("mediapipe not installed: no MediaPipe case", file=sys.stderr)
        else:
            rows.append({"runtime": f"MediaPipe {kind[9:]}", "threads": "mp default",
                         "bytes": files[kind]["bytes"], "score": float(fn()[0])})
            cases.append((fn, args.iterations))
    if args.onnx:
        try:
            for threads in args.threads:
                fn = _onnx_case(args.onnx, model_dir / "vocab.txt", threads, args.text_a,
                                args.text_b)
                rows.append({"runtime": "ORT int8 MiniLM", "threads": threads,
                             "bytes": Path(args.onnx).stat().st_size, "score": float(fn()[0])})
                cases.append((fn, args.iterations))
        except ImportError:
            print("onnxruntime not installed: no ORT case", file=sys.stderr)
    slow_iterations = max(args.iterations // 3, args.rounds)
    if "saved_model" not in args.skip:
        fn = _saved_model_case(model_dir / files["saved_model"]["path"], args.text_a, args.text_b)
        rows.append({"runtime": "SavedModel (TF)", "threads": "tf default",
                     "bytes": files["saved_model"]["bytes"], "score": float(fn()[0])})
        cases.append((fn, slow_iterations))
    if "keras" not in args.skip:
        fn, _ = _keras_case(manifest, args.text_a, args.text_b)
        keras_bytes = sum(Path(m["path"], "best.keras").stat().st_size
                          for m in manifest["members"])
        rows.append({"runtime": "Keras (eager)", "threads": "tf default", "bytes": keras_bytes,
                     "score": float(fn()[0])})
        cases.append((fn, slow_iterations))
    print(f"timing {len(cases)} cases in {args.rounds} interleaved rounds...", file=sys.stderr,
          flush=True)
    for row, stats in zip(rows, _time_interleaved(cases, args.rounds, args.warmup)):
        row.update(stats)
    load_after = os.getloadavg()
    for task in _OPEN:
        task.close()

    print(f"\nscore latency, one pair, strings in: {model_dir} "
          f"({len(manifest['members'])} member(s), max_length {manifest['max_length']})")
    print(f"pair: {args.text_a!r} / {args.text_b!r} ({lengths[0]} and {lengths[1]} tokens "
          "with [CLS]/[SEP])")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs)\n")
    header = f"{'runtime':<22} {'threads':>10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} " \
             f"{'min ms':>8} {'size MiB':>9} {'score':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['runtime']:<22} {str(r['threads']):>10} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} "
              f"{r['mean_ms']:8.2f} {r['min_ms']:8.2f} {r['bytes'] / 2**20:9.1f} {r['score']:7.3f}")
    starts = [] if "startup" in args.skip else startup(model_dir, files)
    if starts:
        print("\nfresh process, best of 3 (seconds): import / load / first pair")
        for r in starts:
            print(f"{r['runtime']:<30} {r['import_s']:6.2f} {r['load_s']:6.2f} "
                  f"{r['first_pair_s']:6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model_dir": str(model_dir), "text_a": args.text_a, "text_b": args.text_b,
            "token_lengths": lengths, "load_before": load_before, "load_after": load_after,
            "rows": rows, "startup": starts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
