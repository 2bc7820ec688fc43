"""Checks the MediaPipe-ready files of an export (`export.device_models`).

1. Float parity, held to the tolerance: the float32 embedder against the
   Keras embedding of its member (L2-normalised), the score the embedder
   implies (`cosine_to_score` of two embeddings) against the member's own
   Keras similarity, and the float32 sentiment file against the ensemble's
   Keras probabilities.
2. Int8 drift: embedding cosine float32 vs int8, STS Pearson of the implied
   score and SST accuracy with both (on dev samples when a data folder is
   given), and how often the decisions agree.
3. MediaPipe, when `mediapipe` is installed: its own TextEmbedder and
   TextClassifier (its own tokenizer too) on the float32 files against the
   ids fed here, on text normalised as an app must (`bert_normalize`:
   MediaPipe's BERT tokenizer lower-cases but keeps accents, so raw accented
   text gets other ids; `raw_mismatched` counts those sentences).
"""

import functools

import numpy as np

from export.device_models import DEVICE_KINDS, cosine_to_score
from export.multitask_ensemble import MultitaskEnsemble
from export.tflite_runtime import load_interpreter
from kerasbert_lite.tasks import benchmark_task


class DeviceModelRunner:
    """Runs one device file (ids/mask/segment_ids in) on batches of texts."""

    def __init__(self, path, tokenizer, max_length, num_threads=None):
        self.interpreter = load_interpreter(path, num_threads=num_threads, custom_ops=False)
        ((_, details),) = self.interpreter.get_signature_list().items()
        (self.output,) = details["outputs"]
        self.runner = self.interpreter.get_signature_runner()
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts, batch_size=32):
        outs = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start:start + batch_size]),
                                 max_length=self.max_length)
            outs.append(self.runner(ids=enc["token_ids"].numpy(),
                                    mask=enc["padding_mask"].numpy(),
                                    segment_ids=enc["segment_ids"].numpy())[self.output])
        return np.concatenate(outs, axis=0)


def _pair_scores(embed, a, b, similarity_output):
    ea, eb = embed(a), embed(b)
    return cosine_to_score(np.sum(ea * eb, axis=-1), similarity_output)


def _pearson(x, y):
    return float("nan") if np.std(x) == 0 else float(np.corrcoef(x, y)[0, 1])


def bert_normalize(text):
    """The uncased normalisation the models were trained on, for MediaPipe's input.

    kerasbert_lite's pure-Python copy of tf-text's (web/app.js and the
    README's Kotlin/Swift snippets do the same): MediaPipe then produces
    the training ids.
    """
    return _normalizer().normalize(text)


@functools.lru_cache(maxsize=1)
def _normalizer():
    # Built once: it reads the exceptions table, and bert_normalize runs per sentence.
    from kerasbert_lite.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
    return WordPieceTokenizer(list(SPECIAL_TOKENS))


def mediapipe_check(out_dir, files, runners, texts, log=print):
    """MediaPipe's TextEmbedder / TextClassifier on the float32 files vs `runners`."""
    try:
        from mediapipe.tasks.python import text as mp_text
        from mediapipe.tasks.python.core.base_options import BaseOptions
    except ImportError as e:
        return {"ran": False, "why": f"mediapipe is not installed ({e})"}
    report = {"ran": True, "examples": len(texts)}
    tasks = (("embedder_float32", mp_text.TextEmbedder, mp_text.TextEmbedderOptions,
              lambda t, s: np.asarray(t.embed(s).embeddings[0].embedding)),
             ("sentiment_float32", mp_text.TextClassifier, mp_text.TextClassifierOptions,
              lambda t, s: _category_scores(t.classify(s))))
    for kind, task_cls, options_cls, run in tasks:
        if kind not in files:
            continue
        options = options_cls(base_options=BaseOptions(
            model_asset_path=str(out_dir / files[kind]["path"])))
        with task_cls.create_from_options(options) as task:
            got = np.stack([run(task, bert_normalize(s)) for s in texts])
            raw = np.stack([run(task, s) for s in texts])
        want = runners[kind](texts)
        diff = np.max(np.abs(got - want), axis=-1)
        raw_diff = np.max(np.abs(raw - want), axis=-1)
        report[kind] = {"max_abs_diff": float(diff.max()),
                        "mismatched": int(np.sum(diff > 1e-3)),
                        "raw_mismatched": int(np.sum(raw_diff > 1e-3))}
        log(f"  MediaPipe {task_cls.__name__} on {files[kind]['path']}: max |diff| "
            f"{diff.max():.2e} on normalised text ({report[kind]['mismatched']} of {len(texts)} "
            f"> 1e-3; on raw text {report[kind]['raw_mismatched']}: accents kept)")
    return report


def _category_scores(result):
    categories = result.classifications[0].categories
    scores = np.zeros(len(categories), np.float64)
    for c in categories:
        scores[c.index] = c.score
    return scores


def verify_device_models(ensemble, out_dir, files, device, samples, task_args,
                         num_parity=64, tolerance=1e-4, log=print):
    """The manifest's `verification.device` report; `passed` is float parity held.

    Args:
        ensemble: the exported `MultitaskEnsemble`.
        out_dir: the export folder; files: the manifest's `files`.
        device: the manifest's `device` entry (which member is the embedder).
        samples, task_args: from `export.verification` (`load_samples`, `_task_args`).
        num_parity: examples per check for float parity.
    """
    from pathlib import Path
    out_dir = Path(out_dir)
    tok, length = ensemble.tokenizer, ensemble.max_length
    runners = {kind: DeviceModelRunner(out_dir / files[kind]["path"], tok, length)
               for kind in DEVICE_KINDS if kind in files}
    parity, drift = {}, {}
    sentences, _ = task_args(samples, "sentiment", num_parity)
    pa, pb = task_args(samples, "similarity", num_parity)
    sentiment_ref = ensemble.reference("sentiment", sentences)
    parity["sentiment_float32"] = float(np.max(np.abs(
        runners["sentiment_float32"](sentences) - sentiment_ref)))
    if device["embedder"]["written"]:
        member = ensemble.members[device["embedder"]["member"]]
        alone = MultitaskEnsemble([member], tok, length)
        parity["embedder_float32"] = float(np.max(np.abs(
            runners["embedder_float32"](sentences) - alone.reference("embed", sentences))))
        implied = _pair_scores(runners["embedder_float32"], pa, pb, member.similarity_output)
        parity["embedder_score_vs_member_similarity"] = float(np.max(np.abs(
            implied - alone.reference("similarity", pa, pb))))
    worst = max(parity.values())
    passed = bool(worst <= tolerance)
    log("device files, float parity vs Keras: " + "  ".join(
        f"{k} {v:.2e}" for k, v in parity.items()) + f"  -> {'PASS' if passed else 'FAIL'}")

    a = samples["sentiment"]["a"]
    x, y = runners["sentiment_float32"](a), runners["sentiment_int8"](a)
    drift["sentiment_agreement"] = float(np.mean(x.argmax(-1) == y.argmax(-1)))
    labels = samples["sentiment"]["labels"]
    if labels is not None:
        drift[benchmark_task("sentiment").export_metric] = {"float32": float(np.mean(x.argmax(-1) == labels)),
                                 "int8": float(np.mean(y.argmax(-1) == labels))}
    if device["embedder"]["written"]:
        output = device["embedder"]["similarity_output"]
        ex, ey = runners["embedder_float32"](a), runners["embedder_int8"](a)
        cos = np.sum(ex * ey, -1) / np.maximum(
            np.linalg.norm(ex, axis=-1) * np.linalg.norm(ey, axis=-1), 1e-12)
        drift["embedding_cosine"] = {"mean": float(cos.mean()), "min": float(cos.min())}
        sa, sb = task_args(samples, "similarity")
        fs = _pair_scores(runners["embedder_float32"], sa, sb, output)
        qs = _pair_scores(runners["embedder_int8"], sa, sb, output)
        drift["score_max_abs_diff"] = float(np.max(np.abs(fs - qs)))
        sts = samples["similarity"]["labels"]
        if sts is not None:
            drift[benchmark_task("similarity").export_metric] = {"float32": _pearson(fs, sts), "int8": _pearson(qs, sts)}
    log("device files, int8 vs float32: " + ", ".join(
        f"{k} {v:.4f}" if not isinstance(v, dict) else
        f"{k} " + "/".join(f"{n} {w:.4f}" for n, w in v.items()) for k, v in drift.items()))
    mediapipe = mediapipe_check(out_dir, files, runners, sentences[:num_parity], log=log)
    return {"passed": passed, "parity": parity, "worst": worst, "tolerance": tolerance,
            "int8": drift, "mediapipe": mediapipe}
