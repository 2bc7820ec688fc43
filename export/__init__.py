"""Shipping kerasbert ensembles: SavedModel and text-in / ids-in TFLite export.

- `python -m export.run --runs runs/a runs/b --out exports/em` writes the
  export folder (see `export.exporter`) and verifies it;
- `SentenceModel.from_run("runs/dps_mse")` / `.from_export("exports/em")`:
  `encode`, `similarity`, `paraphrase`, `sentiment` on raw strings;
- `SimilarityScorer("exports/em/model_int8.tflite").score("a", "b")` scores
  sentence pairs on the LiteRT runtime (`python -m export.score` on the
  command line).

Submodules are imported on use: `import export` stays cheap.
"""


def __getattr__(name):
    # Lazy: the scorer pulls in TensorFlow, which a `--help` should not wait for.
    if name == "SimilarityScorer":
        from export.similarity_scorer import SimilarityScorer
        return SimilarityScorer
    if name == "SentenceModel":
        from export.sentence_model import SentenceModel
        return SentenceModel
    if name == "MultitaskEnsemble":
        from export.multitask_ensemble import MultitaskEnsemble
        return MultitaskEnsemble
    if name == "ModelFileError":
        from kerasbert_lite.model_file_error import ModelFileError
        return ModelFileError
    raise AttributeError(f"module 'export' has no attribute {name!r}")


__all__ = ["SentenceModel", "SimilarityScorer", "MultitaskEnsemble", "ModelFileError"]
