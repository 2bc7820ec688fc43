"""`RunFolder`: a training run on disk, read for export (config.json, best.keras, vocab.txt).

The format (names, version, checks) is `training.run_folder`'s; this adds
loading the model as export wants it (float32).
"""

from pathlib import Path

from training import run_folder as rf
from training.run_folder import training_version  # noqa: F401  (RunFolder.describe)


class RunFolder:
    """A training run folder, checked and read lazily.

    Layout (what `training.run` writes): `config.json` (at least `variant`,
    `max_length`, `lowercase`; `num_sentiment_classes` and `model` are read
    when present), `best.keras` (a saved `MultitaskBert`) and `vocab.txt`.
    Every problem is a `FileNotFoundError`/`ValueError` naming the file.

    Args:
        path: the run folder.

    Example:
    >>> run = RunFolder("runs/dps_mse")        # doctest: +SKIP
    >>> run.variant, run.max_length            # doctest: +SKIP
    ('dps_mse', 128)
    >>> model = run.load_model()               # doctest: +SKIP
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: run folder does not exist")
        needed = (rf.CONFIG, rf.BEST_MODEL, rf.VOCAB)
        for name in needed:
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path / name}: missing (a run folder needs "
                                        f"{', '.join(needed[:-1])} and {needed[-1]})")
        self.config_path = self.path / rf.CONFIG
        self.config = rf.read_config(self.path)
        self.variant = str(self.config["variant"])
        self.max_length = int(self.config["max_length"])
        self.lowercase = bool(self.config["lowercase"])
        self.vocab_path = self.path / rf.VOCAB
        self.model_path = self.path / rf.BEST_MODEL

    def vocabulary(self):
        """The run's vocabulary as a list of tokens (checked for BERT's special tokens)."""
        from kerasbert.bert_tokenizer import read_vocabulary
        return read_vocabulary(self.vocab_path)

    def load_model(self):
        """The saved `MultitaskBert` (all kerasbert layers are registered serializable)."""
        import keras

        from kerasbert.multitask_bert import MultitaskBert
        try:
            model = keras.saving.load_model(self.model_path, compile=False)
        except Exception as e:  # a zip/JSON/weights problem: say which file
            raise ValueError(f"{self.model_path}: cannot load the model "
                             f"({type(e).__name__}: {e})") from e
        if not isinstance(model, MultitaskBert):
            raise ValueError(f"{self.model_path}: expected a MultitaskBert, "
                             f"got {type(model).__name__}")
        return float32_model(model)

    def dev_scores(self):
        """The best epoch's dev scores from summary.json (`sts_pearson`, ...), or {}."""
        try:
            best = rf.read_summary(self.path).get("best")
        except (OSError, ValueError, AttributeError):
            return {}
        return {k: float(v) for k, v in best.items()
                if isinstance(v, (int, float))} if isinstance(best, dict) else {}

    def describe(self):
        """The manifest entry of this run."""
        return {
            "path": str(self.path),
            "variant": self.variant,
            "model": self.config.get("model"),
            "max_length": self.max_length,
            "lowercase": self.lowercase,
            # Which training these weights are: results/<row>/metrics.jsonl hashes the same.
            "training": training_version(self.path),
        }

    def __repr__(self):
        return f"RunFolder({str(self.path)!r}, variant={self.variant!r})"


def float32_model(model):
    """`model` computing in float32: itself, or a float32 copy of a mixed-precision one.

    A run trained under mixed_bfloat16 saves its backbone with that policy;
    exports and their verification are float32 (then int8), so such a model
    is rebuilt from its config at float32 and given the same (float32)
    weights.
    """
    from kerasbert.multitask_bert import MultitaskBert
    if model.backbone.get_layer("embeddings").dtype_policy.name == "float32":
        return model
    config = model.get_config()
    config["backbone"] = dict(config["backbone"])
    config["backbone"]["config"] = dict(config["backbone"]["config"], dtype="float32")
    # The preprocessor has no weights; its vocabulary is not in the config.
    config["preprocessor"] = None
    copy = MultitaskBert.from_config(config)
    copy.set_weights(model.get_weights())
    copy.preprocessor = model.preprocessor
    return copy
