"""Pretrained BERT checkpoints -> `BertBackbone` weights, through one table.

The table below is the whole mapping. Each row is
`(hf_key_pattern, keras_weight_path, transform)`; `{i}` stands for a layer
index. Source keys use Hugging Face names (`BertModel` state dict, without
the `bert.` prefix) in PyTorch (out, in) layout. Google's original TF
checkpoints are renamed into that form first (`google_to_hf_state_dict`), so
both formats go through the same table.

Every source key must match a row or an explicit ignore pattern, and every
Keras weight must be written exactly once; otherwise `load_state_dict` raises
naming the keys. Shapes are checked before anything is assigned.
"""

import re

import numpy as np

# Dense kernels: PyTorch stores (out, in), Keras (in, out).
TRANSPOSE = "transpose"
IDENTITY = "identity"

WEIGHT_MAP = (
    ("embeddings.word_embeddings.weight", "embeddings/token_embedding/embeddings", IDENTITY),
    ("embeddings.position_embeddings.weight", "embeddings/position_embedding/embeddings", IDENTITY),
    ("embeddings.token_type_embeddings.weight", "embeddings/segment_embedding/embeddings", IDENTITY),
    ("embeddings.LayerNorm.weight", "embeddings/layer_norm/gamma", IDENTITY),
    ("embeddings.LayerNorm.bias", "embeddings/layer_norm/beta", IDENTITY),
    ("encoder.layer.{i}.attention.self.query.weight", "transformer_layer_{i}/self_attention/query/kernel", TRANSPOSE),
    ("encoder.layer.{i}.attention.self.query.bias", "transformer_layer_{i}/self_attention/query/bias", IDENTITY),
    ("encoder.layer.{i}.attention.self.key.weight", "transformer_layer_{i}/self_attention/key/kernel", TRANSPOSE),
    ("encoder.layer.{i}.attention.self.key.bias", "transformer_layer_{i}/self_attention/key/bias", IDENTITY),
    ("encoder.layer.{i}.attention.self.value.weight", "transformer_layer_{i}/self_attention/value/kernel", TRANSPOSE),
    ("encoder.layer.{i}.attention.self.value.bias", "transformer_layer_{i}/self_attention/value/bias", IDENTITY),
    ("encoder.layer.{i}.attention.output.dense.weight", "transformer_layer_{i}/self_attention/output/kernel", TRANSPOSE),
    ("encoder.layer.{i}.attention.output.dense.bias", "transformer_layer_{i}/self_attention/output/bias", IDENTITY),
    ("encoder.layer.{i}.attention.output.LayerNorm.weight", "transformer_layer_{i}/attention_layer_norm/gamma", IDENTITY),
    ("encoder.layer.{i}.attention.output.LayerNorm.bias", "transformer_layer_{i}/attention_layer_norm/beta", IDENTITY),
    ("encoder.layer.{i}.intermediate.dense.weight", "transformer_layer_{i}/intermediate_dense/kernel", TRANSPOSE),
    ("encoder.layer.{i}.intermediate.dense.bias", "transformer_layer_{i}/intermediate_dense/bias", IDENTITY),
    ("encoder.layer.{i}.output.dense.weight", "transformer_layer_{i}/output_dense/kernel", TRANSPOSE),
    ("encoder.layer.{i}.output.dense.bias", "transformer_layer_{i}/output_dense/bias", IDENTITY),
    ("encoder.layer.{i}.output.LayerNorm.weight", "transformer_layer_{i}/output_layer_norm/gamma", IDENTITY),
    ("encoder.layer.{i}.output.LayerNorm.bias", "transformer_layer_{i}/output_layer_norm/beta", IDENTITY),
    ("pooler.dense.weight", "pooler_dense/kernel", TRANSPOSE),
    ("pooler.dense.bias", "pooler_dense/bias", IDENTITY),
)

# Keys that are known and deliberately not loaded: a buffer HF saves, the
# pre-training heads (MLM / next sentence) and optimizer state in Google's
# pre-training checkpoints. Anything else unmatched is an error.
IGNORED_KEYS = (
    r"embeddings\.position_ids",
    r"cls\..*",
    r"global_step",
    r".*adam_[mv]",
)

_LEGACY_SUFFIXES = ((".gamma", ".weight"), (".beta", ".bias"))


def _compile(pattern):
    return re.compile(re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_RULES = tuple((_compile(src), dst, t) for src, dst, t in WEIGHT_MAP)
_IGNORED = tuple(re.compile(p + "$") for p in IGNORED_KEYS)
# Keras path -> the checkpoint key that should have filled it, for error messages.
_REVERSE = tuple((_compile(dst), src) for src, dst, _ in WEIGHT_MAP)


def _expected_source_key(path):
    for pattern, src in _REVERSE:
        m = pattern.match(path)
        if m:
            return src.format(i=m.group("i")) if "{i}" in src else src
    return "?"


def normalize_hf_key(key):
    """Strips the `bert.` prefix of task models and maps old gamma/beta names."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if "LayerNorm" in key:
        for old, new in _LEGACY_SUFFIXES:
            if key.endswith(old):
                key = key[: -len(old)] + new
    return key


def plan_conversion(state_dict, backbone):
    """Matches every source key to a Keras weight.

    Returns a list of `(hf_key, keras_variable, transform)`; raises
    `ValueError` listing unmatched source keys, unwritten or twice-written
    Keras weights and shape mismatches.
    """
    variables = {v.path: v for v in backbone.weights}
    plan, unmatched, written = [], [], {}
    for raw_key in sorted(state_dict):
        key = normalize_hf_key(raw_key)
        if any(p.match(key) for p in _IGNORED):
            continue
        for pattern, dst, transform in _RULES:
            m = pattern.match(key)
            if m:
                path = dst.format(i=m.group("i")) if "{i}" in dst else dst
                if path not in variables:
                    unmatched.append(f"{raw_key} -> {path} (no such Keras weight)")
                elif path in written:
                    unmatched.append(f"{raw_key} -> {path} (already written by {written[path]})")
                else:
                    written[path] = raw_key
                    plan.append((raw_key, variables[path], transform))
                break
        else:
            unmatched.append(raw_key)

    missing = sorted(set(variables) - set(written))
    bad_shapes = []
    for raw_key, variable, transform in plan:
        shape = tuple(np.shape(state_dict[raw_key]))
        if transform == TRANSPOSE:
            shape = shape[::-1]
        if shape != tuple(variable.shape):
            bad_shapes.append(f"{raw_key}: checkpoint {shape} vs Keras {tuple(variable.shape)} at {variable.path}")
    problems = []
    if unmatched:
        problems.append("source keys not in the weight map: " + ", ".join(unmatched))
    if missing:
        problems.append("Keras weights with no source key: " + ", ".join(
            f"{path} (expected {_expected_source_key(path)})" for path in missing))
    if bad_shapes:
        problems.append("shape mismatches: " + "; ".join(bad_shapes))
    if problems:
        raise ValueError("checkpoint does not match the backbone:\n  " + "\n  ".join(problems))
    return plan


def load_state_dict(backbone, state_dict):
    """Assigns an HF-named state dict (numpy arrays) to `backbone`, all or nothing."""
    plan = plan_conversion(state_dict, backbone)
    for raw_key, variable, transform in plan:
        value = np.asarray(state_dict[raw_key], dtype=np.float32)
        if transform == TRANSPOSE:
            value = value.T
        variable.assign(value.astype(variable.dtype))
    return backbone


_LAYER_KEY = re.compile(r"^((?:bert\.)?encoder\.layer\.)(\d+)(\..*)$")


def select_layers(state_dict, layers, num_layers):
    """Keeps the encoder blocks `layers` of a checkpoint, renumbered 0, 1, ...

    DistilBERT-style initialisation of a shallower student: layers (0, 2, 4)
    of a 6-layer encoder become its layers 0, 1, 2; embeddings and pooler are
    kept. Every block key is either renumbered or dropped here, so the
    weight table still has to account for all that remains.

    Args:
        state_dict: HF-named state dict (as `read_checkpoint` returns).
        layers: source layer indices, strictly increasing.
        num_layers: the checkpoint's layer count, to check the indices.

    Returns:
        A new state dict with `len(layers)` encoder blocks.

    Example:
    >>> sd = {f"encoder.layer.{i}.output.dense.bias": i for i in range(6)}
    >>> sd["pooler.dense.bias"] = -1
    >>> sorted(select_layers(sd, (0, 2, 4), 6).items())
    [('encoder.layer.0.output.dense.bias', 0), ('encoder.layer.1.output.dense.bias', 2), \
('encoder.layer.2.output.dense.bias', 4), ('pooler.dense.bias', -1)]
    """
    layers = tuple(int(i) for i in layers)
    if not layers:
        raise ValueError("select at least one encoder layer")
    if list(layers) != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= num_layers:
        raise ValueError(f"layers must be strictly increasing indices in 0..{num_layers - 1}, "
                         f"got {list(layers)}")
    new_index = {old: new for new, old in enumerate(layers)}
    out = {}
    for key, value in state_dict.items():
        m = _LAYER_KEY.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(2)) in new_index:
            out[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = value
    return out


def google_to_hf_state_dict(tf_variables):
    """Renames Google BERT TF-checkpoint variables into HF keys and (out, in) layout.

    `tf_variables` maps names like `bert/encoder/layer_3/attention/self/query/kernel`
    to arrays. Kernels are transposed to PyTorch layout so the one table applies.
    Names outside `bert/` (pre-training heads, optimizer state) keep their form
    and are caught by `IGNORED_KEYS` or reported as unmatched.
    """
    out = {}
    for name, value in tf_variables.items():
        if not name.startswith("bert/"):
            out[name.replace("/", ".")] = value
            continue
        key = name[len("bert/"):]
        key = re.sub(r"layer_(\d+)", r"layer.\1", key).replace("/", ".")
        value = np.asarray(value)
        if key.endswith(".kernel"):
            key, value = key[: -len(".kernel")] + ".weight", value.T
        elif key.endswith("_embeddings"):
            key += ".weight"
        out[key] = value
    return out
