"""`--model RUN`: start from a trained run's fine-tuned encoder instead of a checkpoint.

A 3-layer student taken from layers 0, 2 and 4 of a distilled 6-layer
student starts closer to what it must learn than one taken from the
pretrained MiniLM. `--model` therefore also accepts a run folder
(`config.json`, `best.keras`, `vocab.txt`): its encoder is written as a
Hugging Face folder (`kerasbert.save_pretrained`) into a scratch folder and
read back by `kerasbert.from_pretrained`, so `--student-layers` and every
check of a checkpoint apply unchanged. Only the encoder is taken; the heads
start fresh, as from any checkpoint.
"""

import logging
from pathlib import Path

from training import run_folder as rf

logger = logging.getLogger(__name__)


def is_run_folder(model):
    """Whether `--model` names a run folder (config.json, best.keras and vocab.txt)."""
    if model is None:
        return False
    path = Path(model).expanduser()
    return all((path / name).is_file() for name in (rf.CONFIG, rf.BEST_MODEL, rf.VOCAB))


def checkpoint_folder(model, scratch):
    """The folder (or name) `kerasbert.from_pretrained` should read for `--model`.

    `model` itself for a checkpoint, a hub name or None; for a run folder,
    its fine-tuned encoder written as a Hugging Face folder inside `scratch`.

    Args:
        model: `--model`.
        scratch: a writable folder that outlives the `from_pretrained` call.

    Example::

        with tempfile.TemporaryDirectory() as scratch:
            backbone, tokenizer = kerasbert.from_pretrained(
                checkpoint_folder("runs/distill_cosine_nce_cal", scratch), layers=(0, 2, 4))
    """
    if not is_run_folder(model):
        return model
    import keras

    import kerasbert
    from kerasbert.bert_tokenizer import read_vocabulary

    path = Path(model).expanduser()
    config = rf.read_config(path)
    try:
        trained = keras.saving.load_model(path / rf.BEST_MODEL, compile=False)
    except Exception as e:  # a zip/JSON/weights problem: say which file
        raise ValueError(f"{path / rf.BEST_MODEL}: cannot load the model for --model "
                         f"({type(e).__name__}: {e})") from e
    tokenizer = kerasbert.BertTokenizer(read_vocabulary(path / rf.VOCAB),
                                        lowercase=bool(config["lowercase"]),
                                        max_length=int(config["max_length"]))
    folder = Path(scratch) / "encoder"
    kerasbert.save_pretrained(trained.backbone, tokenizer, folder)
    logger.info("encoder: the fine-tuned encoder of run %s (%d layers)", path,
                trained.backbone.bert_config.num_layers)
    return str(folder)
