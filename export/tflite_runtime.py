"""Loading TFLite files on the ai-edge-litert runtime, with clear errors.

Text-in models hold tf-text custom ops (FastBertNormalize,
FastWordpieceTokenizeWithOffsets, RaggedTensorToTensor); they run on
`InterpreterWithCustomOps` with tf-text's registrar. Ids-in models hold
builtin ops only and run on any TFLite runtime.
"""

import os
from pathlib import Path

from kerasbert_lite.model_file_error import ModelFileError
from kerasbert_lite.tflite_file import read_tflite_bytes  # noqa: F401  (re-used here)


def load_interpreter(path, num_threads=None, custom_ops=True):
    """An allocated-on-demand LiteRT interpreter for the file at `path`.

    Args:
        path: a `.tflite` file.
        num_threads: CPU threads for the kernels (None: the runtime's default).
        custom_ops: register the tf-text custom ops (needed by text-in models).

    Raises:
        ModelFileError: missing, unreadable, not TFLite, or a corrupted flatbuffer.
    """
    data = read_tflite_bytes(path)
    from ai_edge_litert import interpreter as litert
    kwargs = {"model_content": data}
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        kwargs["num_threads"] = int(num_threads)
    if custom_ops:
        # Outside the try below: this error is about the environment, not a
        # corrupted file, and must reach the user as it is.
        try:
            import tensorflow_text
        except ImportError as e:
            raise ModelFileError(path, "is a text-in model: its tokenizer ops need "
                                       "`pip install tensorflow-text` (with TensorFlow); "
                                       "without them, score embedder_int8.tflite or "
                                       "model_ids_int8.tflite with kerasbert_lite") from e
    try:
        if custom_ops:
            return litert.InterpreterWithCustomOps(
                custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
                **kwargs)
        return litert.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as e:
        # The runtime's verifier rejects truncated or corrupted flatbuffers.
        raise ModelFileError(path, f"corrupted or unsupported TFLite model ({e})") from e


def signature_runner(interpreter, name, path):
    """The runner of signature `name`, or a `ModelFileError` listing those the file has."""
    signatures = interpreter.get_signature_list()
    if name not in signatures:
        raise ModelFileError(path, f"has no {name!r} signature (it has "
                                   f"{sorted(signatures) or 'none'}); export it with "
                                   "`python -m export.run`")
    try:
        return interpreter.get_signature_runner(name)
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(path, f"cannot prepare signature {name!r} ({e})") from e


def custom_op_names(model_bytes):
    """Names of the custom ops a TFLite model needs (empty for builtin-only models)."""
    # Reads the operator table in place; unpacking the whole model into
    # Python objects would copy every weight buffer.
    from tensorflow.lite.python import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        custom = model.OperatorCodes(i).CustomCode()
        if custom:
            names.add(custom.decode() if isinstance(custom, bytes) else str(custom))
    return sorted(names)


def file_size(path):
    """Bytes on disk of a file, or of all files under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return os.path.getsize(path)
