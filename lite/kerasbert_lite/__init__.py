"""kerasbert-lite: kerasbert's exported models on LiteRT, without TensorFlow.

- `SimilarityScorer(path).score(a, b)`, `.embed(texts)`, `.sentiment(texts)`
  on an export's `embedder_*.tflite` / `sentiment_*.tflite` /
  `model_ids_*.tflite` files, or the export folder;
- `python -m kerasbert_lite FILE "a" "b"` (or `--pairs pairs.tsv`);
- `WordPieceTokenizer`: the ids kerasbert's in-graph tokenizer gives, in pure Python.
"""

from kerasbert_lite.model_file_error import ModelFileError
from kerasbert_lite.similarity_scorer import SimilarityScorer
from kerasbert_lite.wordpiece import WordPieceTokenizer

__all__ = ["SimilarityScorer", "WordPieceTokenizer", "ModelFileError"]
__version__ = "0.1.0"
