"""`TFLiteFile`: one .tflite file on the stock LiteRT interpreter, with clear errors."""

import io
import zipfile
from pathlib import Path

import numpy as np

from kerasbert_lite.model_file_error import ModelFileError

# A TFLite flatbuffer carries this file identifier at bytes 4..8.
_TFLITE_IDENTIFIER = b"TFL3"


def read_tflite_bytes(path):
    """The bytes of a TFLite file, after cheap checks that give a readable error."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if path.is_dir():
        raise ModelFileError(path, "is a folder, not a .tflite file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(path, f"cannot be read ({e.strerror or e})") from e
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise ModelFileError(path, "not a TFLite model (no TFL3 flatbuffer identifier; "
                                   "a corrupted file, or another format)")
    return data


def packed_files(data):
    """{name: bytes} of the files packed after a TFLite flatbuffer (TFLite metadata's zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {n: archive.read(n) for n in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


class TFLiteFile:
    """A TFLite file's signatures on `ai_edge_litert.interpreter.Interpreter` (builtin ops).

    Args:
        path: the .tflite file.
        num_threads: CPU threads (None: the runtime's default).
        text_in_hint: the message for a file with string inputs (tf-text ops).

    Example:
    >>> TFLiteFile("missing.tflite")
    Traceback (most recent call last):
    ...
    kerasbert_lite.model_file_error.ModelFileError: missing.tflite: no such file
    """

    def __init__(self, path, num_threads=None, text_in_hint="has string inputs"):
        self.path = Path(path)
        self.data = read_tflite_bytes(self.path)
        from ai_edge_litert import interpreter as litert
        kwargs = {"model_content": self.data}
        if num_threads is not None:
            if int(num_threads) < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            kwargs["num_threads"] = int(num_threads)
        try:
            self.interpreter = litert.Interpreter(**kwargs)
            self.signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(self.path, f"corrupted or unsupported TFLite model ({e})") from e
        self._runners = {}
        for name in self.signatures:
            details = self.runner(name).get_input_details()
            if any(d["dtype"] in (np.bytes_, np.object_, np.str_) for d in details.values()):
                raise ModelFileError(self.path, text_in_hint)

    def runner(self, signature):
        if signature not in self._runners:
            try:
                self._runners[signature] = self.interpreter.get_signature_runner(signature)
            except (ValueError, RuntimeError) as e:
                raise ModelFileError(self.path, f"cannot prepare signature {signature!r} "
                                                f"({e})") from e
        return self._runners[signature]

    def input_length(self, signature):
        """The fixed sequence length (last input dimension) of a signature."""
        details = self.runner(signature).get_input_details()
        return int(next(iter(details.values()))["shape_signature"][-1])

    def run(self, signature, feed):
        try:
            return self.runner(signature)(**feed)
        except RuntimeError as e:
            if "custom op" in str(e):
                raise ModelFileError(self.path, f"needs ops LiteRT lacks ({e})") from e
            raise
