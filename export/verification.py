"""Checks an export against Keras: float parity, int8 quality, sizes.

`verify_export` (run by `python -m export.run` unless `--no-verify`):

1. Float parity: on a parity sample (dev sentences/pairs, or built-in
   sentences without a data folder) every signature of the SavedModel, the
   text-in float32 TFLite and the ids-in float32 TFLite must match the
   Keras reference (`MultitaskEnsemble.reference`) to `tolerance` (max
   absolute difference). A failure makes `export.run` exit non-zero.
2. Int8: the dev metric of each task (SST accuracy, Quora accuracy at 0.5,
   STS Pearson) with float32 and int8 TFLite on a sample of the dev files,
   the change, how often the two agree, the cosine of float32 vs int8
   embeddings, and that ids-in int8 equals text-in int8.
3. Sizes of every file.
"""

import time

import numpy as np

from export.multitask_ensemble import SIGNATURES
from export.tflite_runtime import load_interpreter
from kerasbert_lite.progress import Progress, bar_log
from kerasbert_lite.tasks import benchmark_task

DEFAULT_TOLERANCE = 1e-4
_PAIR_TASKS = ("paraphrase", "similarity")
# Used when no data folder is given: varied lengths, casing, punctuation,
# non-Latin text and one over-long input (exercises truncation).
BUILTIN_SENTENCES = [
    "A man is playing a guitar.",
    "The movie was an absolute delight from start to finish!",
    "I didn't like it at all.",
    "Two dogs run across the grassy field.",
    "How do I learn to cook Italian food at home?",
    "What is the best way to learn cooking?",
    "It's raining heavily in Paris today.",
    "Stocks fell sharply after the announcement.",
    "",
    "Un café, s'il vous plaît.",
    "这部电影很好看。",
    "Great 👍",
    " ".join(["a remarkably long sentence that keeps going"] * 40),
    "THE END.",
]


def builtin_pairs():
    """Pairs of the built-in sentences: each with the next one, and with itself."""
    s = BUILTIN_SENTENCES
    a = s + s[:4]
    b = s[1:] + s[:1] + s[:4]
    return a, b


def load_samples(data_dir, num_parity=64, num_metric=500, seed=0):
    """Texts (and labels) per task for parity and int8 checks.

    Returns:
        {"source": ..., "sentiment": {"a", "labels"}, "paraphrase"/"similarity":
        {"a", "b", "labels"}}, each a random sample (fixed seed) of up to
        `num_metric` dev examples; labels are None for built-in sentences.
        The first `num_parity` of each are the parity sample.
    """
    if data_dir is None:
        a, b = builtin_pairs()
        return {"source": "built-in sentences",
                "sentiment": {"a": list(BUILTIN_SENTENCES), "labels": None},
                "embed": {"a": list(BUILTIN_SENTENCES), "labels": None},
                "paraphrase": {"a": a, "b": b, "labels": None},
                "similarity": {"a": a, "b": b, "labels": None}}
    from training.readers import load_split
    rng = np.random.default_rng(seed)

    def sample(n_rows):
        return np.sort(rng.choice(n_rows, size=min(num_metric, n_rows), replace=False))

    # Each output on its benchmark dataset (SST, Quora, STS), read in that order:
    # the seeded samples, hence committed manifests' numbers, depend on it.
    dev = {output: load_split(benchmark_task(output).name, "dev", data_dir)
           for output in ("sentiment", "paraphrase", "similarity")}
    out = {"source": f"{data_dir} (dev files, seed {seed})"}
    idx = sample(len(dev["sentiment"]))
    out["sentiment"] = {"a": [dev["sentiment"].texts[i] for i in idx],
                        "labels": dev["sentiment"].labels[idx]}
    out["embed"] = {"a": out["sentiment"]["a"], "labels": None}
    for task in ("paraphrase", "similarity"):
        data = dev[task]
        idx = sample(len(data))
        out[task] = {"a": [data.texts_a[i] for i in idx], "b": [data.texts_b[i] for i in idx],
                     "labels": data.labels[idx]}
    return out


class _TFLiteRunner:
    """Runs one export file's signatures on batches (text-in or ids-in)."""

    def __init__(self, path, ensemble, text_in, num_threads=None):
        self.ensemble = ensemble
        self.text_in = text_in
        self.interpreter = load_interpreter(path, num_threads=num_threads, custom_ops=text_in)
        self.runners = {}

    def __call__(self, task, a, b=None, batch_size=32):
        runner = self.runners.get(task) or self.interpreter.get_signature_runner(task)
        self.runners[task] = runner
        inputs, output = SIGNATURES[task]
        outs = []
        for start in range(0, len(a), batch_size):
            part_a = a[start:start + batch_size]
            part_b = b[start:start + batch_size] if b is not None else None
            if self.text_in:
                feed = {inputs[0]: np.array(part_a, dtype=object)}
                if part_b is not None:
                    feed[inputs[1]] = np.array(part_b, dtype=object)
            else:
                feed = self.ensemble.ids_inputs(task, part_a, part_b)
            outs.append(runner(**feed)[output])
        return np.concatenate(outs, axis=0)


def _saved_model_runner(path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses
    loaded = tf.saved_model.load(str(path))

    def run(task, a, b=None, batch_size=32):
        fn = loaded.signatures[task]
        inputs, output = SIGNATURES[task]
        outs = []
        for start in range(0, len(a), batch_size):
            feed = {inputs[0]: tf.constant(a[start:start + batch_size], tf.string)}
            if b is not None:
                feed[inputs[1]] = tf.constant(b[start:start + batch_size], tf.string)
            outs.append(fn(**feed)[output].numpy())
        return np.concatenate(outs, axis=0)
    return run


def _task_args(samples, task, n=None):
    s = samples[task]
    a = s["a"][:n] if n else s["a"]
    b = (s["b"][:n] if n else s["b"]) if task in _PAIR_TASKS else None
    return a, b


def _metric(task, outputs, labels):
    """(manifest key, value) of signature `task`'s dev metric on its benchmark dataset.

    The key is the table's (`Task.export_metric`: `sst_accuracy`, ...). The
    value is computed here, not by `Task.score`: the signatures return a
    probability for paraphrase (not a logit), and a constant STS output is
    NaN in the manifests, not 0.

    >>> _metric("paraphrase", np.array([.9, .2, .7]), np.array([1., 0., 0.]))
    ('quora_accuracy', 0.6666666666666666)
    """
    key = benchmark_task(task).export_metric
    if task == "sentiment":
        return key, float(np.mean(outputs.argmax(-1) == labels))
    if task == "paraphrase":
        return key, float(np.mean((outputs > 0.5) == (labels > 0.5)))
    if np.std(outputs) == 0:
        return key, float("nan")
    return key, float(np.corrcoef(outputs, labels)[0, 1])


def _agreement(task, x, y):
    if task == "sentiment":
        return float(np.mean(x.argmax(-1) == y.argmax(-1)))
    if task == "paraphrase":
        return float(np.mean((x > 0.5) == (y > 0.5)))
    return None


def _cosines(x, y):
    norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    return np.sum(x * y, axis=-1) / np.maximum(norms, 1e-12)


def verify_export(ensemble, out_dir, files, data_dir=None, num_parity=64, num_metric=500,
                  tolerance=DEFAULT_TOLERANCE, log=print, seed=0, device=None):
    """Verifies the files of an export folder; returns the report (also logged).

    Args:
        ensemble: the `MultitaskEnsemble` that was exported.
        out_dir: the export folder.
        files: the manifest's `files` entry (kind -> {"path", ...}).
        data_dir: CS224N data folder; None uses built-in sentences (no metrics).
        num_parity: examples per task for the float parity check.
        num_metric: examples per task for the int8 metric change.
        tolerance: max absolute difference allowed for float parity.
        log: a print-like function.
        device: the manifest's `device` entry; with it the MediaPipe-ready
            files are checked too (`export.device_verification`).

    Returns:
        dict with `parity`, `int8`, `sizes`, `device`, `passed` (float
        parity held, device files included).
    """
    from pathlib import Path
    out_dir = Path(out_dir)
    started = time.perf_counter()
    samples = load_samples(data_dir, num_parity=num_parity, num_metric=num_metric, seed=seed)
    float_runners = {"saved_model": _saved_model_runner(out_dir / files["saved_model"]["path"]),
                     "tflite_float32": _TFLiteRunner(out_dir / files["float32"]["path"],
                                                     ensemble, text_in=True),
                     "tflite_ids_float32": _TFLiteRunner(out_dir / files["ids_float32"]["path"],
                                                         ensemble, text_in=False)}
    if "float16" in files:
        float_runners["tflite_float16"] = _TFLiteRunner(out_dir / files["float16"]["path"],
                                                        ensemble, text_in=True)
    # Float16 weights are not float32: reported, not held to the tolerance.
    held = ("saved_model", "tflite_float32", "tflite_ids_float32")

    # One bar over every model call below: Keras, each float file, then float32 /
    # int8 / ids-in int8 per task (the device files report on their own lines).
    bar = Progress(len(SIGNATURES) * (1 + len(float_runners) + 3), "verify", unit="run")
    log = bar_log(bar, log)
    parity = {name: {} for name in float_runners}
    for task in SIGNATURES:
        a, b = _task_args(samples, task, num_parity)
        reference = ensemble.reference(task, a, b)
        bar.update()
        for name, run in float_runners.items():
            parity[name][task] = float(np.max(np.abs(run(task, a, b) - reference)))
            bar.update()
    worst = max(parity[name][task] for name in held for task in SIGNATURES)
    passed = bool(worst <= tolerance)
    examples = {task: len(_task_args(samples, task, num_parity)[0]) for task in SIGNATURES}
    parity_report = {"tolerance": tolerance, "examples": examples,
                     "max_abs_diff": parity, "worst": worst, "passed": passed}
    log(f"float parity vs Keras (max |diff| over {min(examples.values())}-"
        f"{max(examples.values())} examples/task, tolerance {tolerance:g}):")
    for name, diffs in parity.items():
        log(f"  {name:<20}" + "  ".join(f"{t} {d:.2e}" for t, d in diffs.items()))
    log(f"  -> {'PASS' if passed else 'FAIL'} (worst {worst:.2e})")

    int8_report = {"source": samples["source"], "float_reference": "tflite_float32"}
    float_tfl = float_runners["tflite_float32"]
    int8_tfl = _TFLiteRunner(out_dir / files["int8"]["path"], ensemble, text_in=True)
    ids_int8 = _TFLiteRunner(out_dir / files["ids_int8"]["path"], ensemble, text_in=False)
    metrics, agreement, max_diff, ids_vs_text = {}, {}, {}, {}
    for task in SIGNATURES:
        a, b = _task_args(samples, task)
        x, y = float_tfl(task, a, b), int8_tfl(task, a, b)
        bar.update(2)
        max_diff[task] = float(np.max(np.abs(x - y)))
        if task == "embed":
            cos = _cosines(x, y)
            int8_report["embedding_cosine"] = {"mean": float(cos.mean()), "min": float(cos.min()),
                                               "examples": len(cos)}
        else:
            agreement[task] = _agreement(task, x, y)
            labels = samples[task]["labels"]
            if labels is not None:
                name, f = _metric(task, x, labels)
                _, q = _metric(task, y, labels)
                metrics[name] = {"float32": f, "int8": q, "change": q - f, "examples": len(labels)}
        n = min(num_parity, len(a))
        ids_vs_text[task] = float(np.max(np.abs(
            ids_int8(task, a[:n], b[:n] if b is not None else None) - y[:n])))
        bar.update()
    bar.close()
    agreement = {k: v for k, v in agreement.items() if v is not None}
    int8_report.update(metrics=metrics, prediction_agreement=agreement,
                       max_abs_diff_vs_float32=max_diff, ids_int8_vs_text_int8=ids_vs_text)
    log(f"int8 vs float32 TFLite ({samples['source']}):")
    for name, m in metrics.items():
        log(f"  {name:<16} float32 {m['float32']:.4f}  int8 {m['int8']:.4f}  "
            f"change {m['change']:+.4f}  (n={m['examples']})")
    for task, v in agreement.items():
        log(f"  {task} decisions agree on {v:.1%}")
    cos = int8_report["embedding_cosine"]
    log(f"  embedding cosine(float32, int8): mean {cos['mean']:.5f}, min {cos['min']:.5f}")
    log("  max |int8 - float32|: " + "  ".join(f"{t} {d:.3g}" for t, d in max_diff.items()))
    log("  max |ids-in int8 - text-in int8|: "
        + "  ".join(f"{t} {d:.3g}" for t, d in ids_vs_text.items()))

    report = {"parity": parity_report, "int8": int8_report}
    if device is not None:
        from export.device_verification import verify_device_models
        report["device"] = verify_device_models(ensemble, out_dir, files, device, samples,
                                                _task_args, num_parity=num_parity,
                                                tolerance=tolerance, log=log)
        passed = passed and report["device"]["passed"]
    sizes = {kind: entry["bytes"] for kind, entry in files.items() if "bytes" in entry}
    log("sizes: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()))
    return {"passed": passed, **report, "sizes": sizes,
            "seconds": round(time.perf_counter() - started, 1)}
