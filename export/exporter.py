"""Writes an ensemble's SavedModel, TFLite files, vocabulary and manifest.

`export_ensemble` is what `python -m export.run` calls. Layout of the
export folder:

    saved_model/               text-in serving signatures (load after `import
                               tensorflow_text`); `serving_default` is `sentiment`
    model_float32.tflite       text in, tf-text custom ops
    model_int8.tflite          text in, dynamic-range int8 weights
    model_float16.tflite       text in, float16 weights (only with float16=True)
    model_ids_float32.tflite   token ids in, builtin ops only
    model_ids_int8.tflite      token ids in, builtin ops only, int8 weights
    embedder_float32.tflite    MediaPipe TextEmbedder: one signature, inputs ids/mask/
    embedder_int8.tflite       segment_ids, BERT metadata, vocab packed in (only when
                               a member is a cosine bi-encoder; see export.device_models)
    sentiment_float32.tflite   MediaPipe TextClassifier: the same inputs, the five SST
    sentiment_int8.tflite      labels packed in
    vocab.txt                  for ids-in runtimes that tokenise themselves
    manifest.json              members, max_length, files (with each signature's input
                               order), the device files' members, verification report
"""

import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from export.device_models import (DEVICE_KINDS, DEVICE_OUTPUTS, choose_embedder,
                                   device_endpoints, finish_device_model, SST_LABELS,
                                   COSINE_TO_SCORE)
from export.multitask_ensemble import SIGNATURES, MultitaskEnsemble
from export.tflite_flatbuffer import rename_io_tensors, signature_io
from export.tflite_runtime import custom_op_names, file_size
from kerasbert_lite.progress import Progress, bar_log
from kerasbert_lite.tasks import benchmark_task
from training.run_folder import atomic_write_text

SAVED_MODEL_DIR = "saved_model"
MANIFEST = "manifest.json"
VOCAB = "vocab.txt"
# kind -> (file name, text-in?, weight quantisation)
TFLITE_KINDS = {
    "float32": ("model_float32.tflite", True, None),
    "int8": ("model_int8.tflite", True, "int8"),
    "float16": ("model_float16.tflite", True, "float16"),
    "ids_float32": ("model_ids_float32.tflite", False, None),
    "ids_int8": ("model_ids_int8.tflite", False, "int8"),
}
MANIFEST_VERSION = 1


def write_saved_model(path, endpoints):
    """Writes a SavedModel with one serving signature per endpoint.

    `keras.export.ExportArchive`, not a bare `tf.Module`: the latter exports
    NaNs for these Keras 3 models. The members are not `track()`ed:
    `add_endpoint` already captures every variable the endpoints use, and
    tracking the Keras models too stores each weight twice (the Keras
    variable wrappers and the captured tf.Variables: 179 instead of 90 MiB
    for MiniLM) and doubles the write time. `track()` is only needed for
    lookup tables, and the tokenizer has none (its vocabulary is a constant).
    """
    archive = keras.export.ExportArchive()
    for name, (fn, spec) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=spec)
    archive.write_out(str(path), verbose=False)


def tflite_converter(saved_model_dir, signature_keys=tuple(SIGNATURES)):
    """A converter for `signature_keys` of a SavedModel (one multi-signature model)."""
    return tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=list(signature_keys))


def convert_tflite(converter, quantization=None, text_in=True):
    """Runs `converter` (from `tflite_converter`) for one kind of TFLite file.

    The converter is reused across kinds: loading the SavedModel is a good
    part of each conversion's time.

    Args:
        converter: a `tf.lite.TFLiteConverter`.
        quantization: None (float32), "int8" (dynamic range: int8 weights,
            float activations) or "float16" (float16 weights).
        text_in: keep tf-text ops as custom ops; False allows builtin ops only,
            so the conversion fails rather than emit a custom op.

    Returns:
        The flatbuffer bytes.
    """
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = text_in
    converter.optimizations = []
    converter.target_spec.supported_types = []
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization is not None:
        raise ValueError(f"unknown quantization {quantization!r}")
    return converter.convert()


def write_device_models(ensemble, out_dir, tmp, files, log=print, done=None):
    """Writes the MediaPipe-ready files (`export.device_models`); returns the manifest entry.

    Adds each file to `files`. The embedder is skipped, with the reason in
    the entry, when no member's cosine is its similarity score. `done()`, if
    given, is called after the scratch SavedModel and after each file.
    """
    done = done or (lambda: None)
    embedder_member, why = choose_embedder(ensemble)
    endpoints = device_endpoints(ensemble, embedder_member)
    saved_model = tmp / "device_saved_model"
    write_saved_model(saved_model, endpoints)
    done()
    vocabulary = ensemble.tokenizer.vocabulary
    entry = {"inputs": "token ids: int32 (1 or B, max_length) right-padded, named by the "
                       "TFLite metadata (MediaPipe's BERT convention)",
             "max_length": ensemble.max_length}
    if embedder_member is None:
        entry["embedder"] = {"written": False, "why": why}
        log(f"no embedder file: {why}")
    else:
        member = ensemble.members[embedder_member]
        run = ensemble.runs[embedder_member] if embedder_member < len(ensemble.runs) else None
        entry["embedder"] = {
            "written": True, "member": embedder_member,
            "run": str(run.path) if run else None, "variant": run.variant if run else None,
            "sts_dev_pearson": (run.dev_scores().get(benchmark_task("similarity").metric)
                                if run else None),
            "why": why, "output": "embedding", "embedding_dim": int(
                ensemble.embedding_dims[embedder_member]),
            "score_from_cosine": COSINE_TO_SCORE[member.similarity_output],
            "similarity_output": member.similarity_output}
    entry["sentiment"] = {"members": list(range(len(ensemble.members))),
                          "output": "probabilities", "labels": list(SST_LABELS)}
    for model in endpoints:
        converter = tflite_converter(saved_model, signature_keys=[model])
        for kind, (name, kind_model, quantization) in DEVICE_KINDS.items():
            if kind_model != model:
                continue
            t = time.perf_counter()
            flatbuffer = convert_tflite(converter, quantization=quantization, text_in=False)
            custom = custom_op_names(flatbuffer)
            if custom:
                raise RuntimeError(f"{out_dir / name}: needs custom ops {custom}; device "
                                   "files must be builtin-only")
            config = {"lowercase": ensemble.tokenizer.lowercase,
                      "max_length": ensemble.max_length}
            if model == "embedder":
                config.update({k: entry["embedder"][k] for k in (
                    "similarity_output", "score_from_cosine", "variant", "sts_dev_pearson")})
            else:
                config["labels"] = list(SST_LABELS)
            data, input_order = finish_device_model(
                flatbuffer, model, vocabulary,
                description=f"kerasbert {model} ({', '.join(r.variant for r in ensemble.runs)})",
                config=config)
            (out_dir / name).write_bytes(data)
            files[kind] = {"path": name, "inputs": "token ids", "input_order": input_order,
                           "output": DEVICE_OUTPUTS[model][0], "weights": quantization or "float32",
                           "custom_ops": [], "metadata": "MediaPipe BERT (vocab.txt packed"
                           + (", labels.txt)" if DEVICE_OUTPUTS[model][2] else ")")}
            done()
            log(f"wrote {out_dir / name} ({len(data) / 2**20:.1f} MiB, inputs "
                f"{input_order}, {time.perf_counter() - t:.1f}s)")
    return entry


def export_ensemble(run_dirs, out_dir, max_length=None, verify=True, data_dir=None,
                    float16=False, log=print, verify_kwargs=None):
    """Exports the ensemble of `run_dirs` into `out_dir` and returns the manifest.

    Args:
        run_dirs: run folders (config.json, best.keras, vocab.txt).
        out_dir: the export folder (created; files of a previous export replaced).
        max_length: tokens per input; default the largest of the runs'.
        verify: run `export.verification.verify_export` and store its report.
        data_dir: CS224N data folder for verification (built-in sentences without).
        float16: also write `model_float16.tflite`.
        log: a print-like function for progress lines.
        verify_kwargs: extra arguments for `verify_export` (sample sizes).

    Returns:
        The manifest dict (also written to `out_dir/manifest.json`). When
        verification ran, `manifest["verification"]["passed"]` says whether
        float parity held.

    One export at a time may write `out_dir` (`training.run_lock.RunLock`:
    a second is refused, naming the first); the manifest is written last and
    whole, so one in the folder belongs to a complete export.
    """
    from training.run_lock import RunLock

    with RunLock(out_dir):
        return _export_ensemble(run_dirs, out_dir, max_length, verify, data_dir, float16, log,
                                verify_kwargs)


def _export_ensemble(run_dirs, out_dir, max_length, verify, data_dir, float16, log,
                     verify_kwargs):
    out_dir = Path(out_dir)
    started = time.perf_counter()
    ensemble = MultitaskEnsemble.from_runs(run_dirs, max_length=max_length)
    log(f"loaded {len(ensemble.members)} member(s): "
        + ", ".join(f"{r.variant} ({m.pair_encoding})"
                    for r, m in zip(ensemble.runs, ensemble.members))
        + f"; max_length {ensemble.max_length}")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_model_dir = out_dir / SAVED_MODEL_DIR
    if saved_model_dir.exists():
        shutil.rmtree(saved_model_dir)
    # A failed export must not leave the previous export's manifest behind.
    for name in [MANIFEST] + [name for name, *_ in TFLITE_KINDS.values()] + [
            name for name, *_ in DEVICE_KINDS.values()]:
        (out_dir / name).unlink(missing_ok=True)

    kinds = [k for k in TFLITE_KINDS if float16 or k != "float16"]
    # Minutes of conversion: one bar over the files (the two SavedModels, the
    # TFLite kinds, the device files), the log lines printed above it.
    with Progress(2 + len(kinds) + 1 + len(DEVICE_KINDS), "export", unit="file") as bar:
        log = bar_log(bar, log)
        manifest = _write_files(ensemble, out_dir, saved_model_dir, kinds, log, bar)
    if verify:
        from export.verification import verify_export
        manifest["verification"] = verify_export(ensemble, out_dir, manifest["files"],
                                                 data_dir=data_dir, log=log,
                                                 device=manifest["device"],
                                                 **(verify_kwargs or {}))
    manifest["export_seconds"] = round(time.perf_counter() - started, 1)
    # The whole process's peak (Linux reports KiB): what a machine needs to run this export.
    manifest["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    log(f"wrote {out_dir / MANIFEST} ({manifest['export_seconds']}s in all)")
    return manifest


def _write_files(ensemble, out_dir, saved_model_dir, kinds, log, bar):
    """Writes the SavedModel, the TFLite and device files and vocab.txt; the manifest dict."""
    t = time.perf_counter()
    write_saved_model(saved_model_dir, ensemble.text_endpoints())
    bar.update()
    log(f"wrote {saved_model_dir} ({time.perf_counter() - t:.1f}s)")
    shutil.copyfile(ensemble.runs[0].vocab_path, out_dir / VOCAB)

    files = {"saved_model": {"path": SAVED_MODEL_DIR}}
    with tempfile.TemporaryDirectory(prefix="kerasbert_ids_") as tmp:
        # The ids-in signatures live in a scratch SavedModel so the shipped
        # one stays strings-in only, and both TFLite kinds get the plain
        # signature names.
        ids_saved_model = Path(tmp) / "saved_model"
        write_saved_model(ids_saved_model, ensemble.ids_endpoints())
        bar.update()
        converters = {}
        for kind in kinds:
            name, text_in, quantization = TFLITE_KINDS[kind]
            t = time.perf_counter()
            if text_in not in converters:
                converters[text_in] = tflite_converter(
                    saved_model_dir if text_in else ids_saved_model)
            flatbuffer = convert_tflite(converters[text_in], quantization=quantization,
                                        text_in=text_in)
            if not text_in:
                # Apps feed ids-in tensors by name or position: stable names.
                flatbuffer = rename_io_tensors(flatbuffer)
            (out_dir / name).write_bytes(flatbuffer)
            custom = custom_op_names(flatbuffer)
            if not text_in and custom:
                raise RuntimeError(f"{out_dir / name}: the ids-in model needs custom ops "
                                   f"{custom}; it must be builtin-only")
            files[kind] = {"path": name, "inputs": "text" if text_in else "token ids",
                           "weights": quantization or "float32", "custom_ops": custom,
                           "signatures": signature_io(flatbuffer)}
            bar.update()
            log(f"wrote {out_dir / name} ({len(flatbuffer) / 2**20:.1f} MiB, "
                f"{time.perf_counter() - t:.1f}s)")
        device = write_device_models(ensemble, out_dir, Path(tmp), files, log, bar.update)
    files["vocab"] = {"path": VOCAB}
    for entry in files.values():
        entry["bytes"] = file_size(out_dir / entry["path"])

    manifest = {
        "format_version": MANIFEST_VERSION,
        **ensemble.describe(),
        "signatures": {
            # ids_inputs in the file's own input order (apps feed by position).
            task: {"text_inputs": list(inputs), "output": output,
                   "ids_inputs": files["ids_float32"]["signatures"][task]["inputs"]}
            for task, (inputs, output) in SIGNATURES.items()},
        "device": device,
        "outputs_note": "text-in signatures also return `truncated` (int32, 1 where an input "
                        "was cut to max_length); ids-in inputs are int32 (B, max_length), "
                        "right-padded, and only the real-length prefix is computed",
        "files": files,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    return manifest
