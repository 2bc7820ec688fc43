"""`BertConfig`: the architecture hyper-parameters of a BERT encoder."""

import dataclasses
import json
import os

# Hugging Face `config.json` (and Google's `bert_config.json`, which uses the
# same names) -> our field names.
_HF_KEYS = {
    "vocab_size": "vocabulary_size",
    "hidden_size": "hidden_dim",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_dim",
    "max_position_embeddings": "max_sequence_length",
    "type_vocab_size": "num_segments",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "layer_norm_eps": "layer_norm_epsilon",
    "hidden_act": "activation",
    "do_lower_case": "lowercase",
}
_SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder, mirroring Hugging Face's `config.json`.

    Args:
        vocabulary_size: number of WordPiece tokens.
        hidden_dim: width of every token vector (H).
        num_layers: number of transformer encoder blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        intermediate_dim: width of the feed-forward layer.
        max_sequence_length: number of learned position embeddings.
        num_segments: number of segment (token type) embeddings.
        dropout: dropout on embeddings and block outputs.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: epsilon of every LayerNorm.
        activation: feed-forward activation (`gelu` is BERT's exact erf GELU).
        lowercase: whether the vocabulary is uncased (tokenizer lower-cases
            and strips accents).

    Example:
    >>> config = BertConfig.tiny()
    >>> config.head_dim
    8
    >>> BertConfig.from_dict({"vocab_size": 99, "hidden_size": 32,
    ...                       "num_attention_heads": 4}).hidden_dim
    32
    """

    vocabulary_size: int = 30522
    hidden_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_dim: int = 3072
    max_sequence_length: int = 512
    num_segments: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_epsilon: float = 1e-12
    activation: str = "gelu"
    lowercase: bool = True

    def __post_init__(self):
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.activation not in _SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"activation {self.activation!r} is not supported; "
                f"expected one of {_SUPPORTED_ACTIVATIONS}"
            )

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    @classmethod
    def tiny(cls, **overrides):
        """The test preset: vocab 99, hidden 32, 2 layers, 4 heads."""
        fields = dict(
            vocabulary_size=99,
            hidden_dim=32,
            num_layers=2,
            num_heads=4,
            intermediate_dim=37,
            max_sequence_length=64,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_dict(cls, hf_config):
        """Builds a config from an HF / Google config dict; unknown keys are ignored."""
        if hf_config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                "only absolute position embeddings are supported, got "
                f"{hf_config['position_embedding_type']!r}"
            )
        fields = {ours: hf_config[theirs] for theirs, ours in _HF_KEYS.items()
                  if theirs in hf_config}
        return cls(**fields)

    @classmethod
    def from_json_file(cls, path):
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data)

    def to_dict(self):
        """The HF `config.json` form of this config."""
        ours_to_hf = {ours: theirs for theirs, ours in _HF_KEYS.items()}
        out = {ours_to_hf[k]: v for k, v in dataclasses.asdict(self).items()}
        out.update(model_type="bert", position_embedding_type="absolute")
        return out

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(self.to_dict(), f, indent=2)
