"""Score sentence pairs (0-5) with any exported TFLite file, text-in ones included.

Usage:
    python -m export.score MODEL "sentence a" "sentence b"
    python -m export.score MODEL "a sentence"                 (sentiment; ids-in files)
    python -m export.score MODEL --pairs pairs.tsv [--out scores.tsv]

The command line of `python -m kerasbert_lite` (see there), plus text-in
files (`model_int8.tflite`, `model_float32.tflite`), which run here on
LiteRT with tf-text's custom ops. Ids-in, embedder and sentiment files, and
export folders, go to `kerasbert_lite.SimilarityScorer`.
"""

import sys


def open_scorer(path, num_threads=None, batch_size=64):
    """The TF scorer for a text-in file (tf-text custom ops), kerasbert_lite's otherwise."""
    from pathlib import Path

    from kerasbert_lite.__main__ import open_lite_scorer
    try:
        from export.tflite_runtime import custom_op_names, read_tflite_bytes
    except ImportError:
        # No TensorFlow: kerasbert_lite runs what LiteRT alone can, and names
        # the file to use for a text-in model.
        return open_lite_scorer(path, num_threads=num_threads, batch_size=batch_size)
    if not Path(path).is_dir():
        try:
            text_in = bool(custom_op_names(read_tflite_bytes(path)))
        except Exception:  # noqa: BLE001  a corrupted flatbuffer: the scorer below names it
            text_in = True
        if text_in:
            from export.similarity_scorer import SimilarityScorer
            return SimilarityScorer(path, num_threads=num_threads, batch_size=batch_size)
    return open_lite_scorer(path, num_threads=num_threads, batch_size=batch_size)


def main(argv=None):
    from kerasbert_lite.__main__ import main as cli
    return cli(argv, open_scorer=open_scorer, prog="python -m export.score",
               description="Score sentence pairs with an exported TFLite file: text-in "
                           "(e.g. exports/em/model_int8.tflite), ids-in, embedder or sentiment.")


if __name__ == "__main__":
    from kerasbert_lite.native_logs import quiet_native_logs
    quiet_native_logs()  # before TensorFlow loads; --verbose keeps its lines
    sys.exit(main())
