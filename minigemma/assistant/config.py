"""The assistant's configuration (mirrors `Gemma4AssistantConfig` and `Gemma4UnifiedAssistantConfig`).

Every Gemma 4 model ships with an *assistant*: a small drafter for speculative decoding
(multi-token prediction, MTP). Its `config.json` wraps an ordinary Gemma 4 text config (the
drafter's own few decoder layers) and adds what ties it to its target:

* `backbone_hidden_size`: the target's hidden size; the drafter reads the target's last hidden
  state and writes one back for its next step (`projections.py`);
* `use_ordered_embeddings`, `num_centroids`, `centroid_intermediate_top_k`: the ordered-embedding
  head, which scores only the tokens of a few clusters of the vocabulary (`ordered_head.py`).

The text config is constrained, as the reference's `validate_architecture` demands: no Per-Layer
Embeddings, no MoE, no double-wide MLP, and *every* layer KV-shared (`num_kv_shared_layers` =
`num_hidden_layers`, set when absent): the drafter computes no keys or values at all, it attends
to the target's (`decoder.py`). The reference's own `kv_sharing_modes` cannot express that (it
wants a producer layer inside the model); here each layer is marked `reuse` and reads the target's
last layer of its type.

`gemma4_unified_assistant` (the 12B's drafter) is the same model over a `gemma4_unified_text`
config, whose defaults differ (no PLE, window 1024); both load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..errors import ConfigError
from ..text.config import TextConfig, text_config_from_dict
from ..weights.config_reader import FieldReader, read_json_object

DEFAULT_BACKBONE = {"gemma4_assistant": 1536, "gemma4_unified_assistant": 3840}
ASSISTANT_DEFAULTS = {
    "use_ordered_embeddings": False,
    "num_centroids": 2048,
    "centroid_intermediate_top_k": 32,
    "tie_word_embeddings": True,
}
# `Gemma4UnifiedTextConfig` defaults where they differ from `Gemma4TextConfig`'s (transformers 5.23.0)
UNIFIED_TEXT_DEFAULTS = {
    "hidden_size_per_layer_input": 0,
    "sliding_window": 1024,
    "max_position_embeddings": 262_144,
    "use_bidirectional_attention": "vision",
}
FORBIDDEN = {  # text-config switches the reference's `validate_architecture` requires off
    "hidden_size_per_layer_input": "Per-Layer Embeddings",
    "enable_moe_block": "MoE",
    "use_double_wide_mlp": "double-wide MLP",
}


@dataclass(frozen=True)
class AssistantConfig:
    """A drafter: its decoder stack (`text`, every layer reading the target's keys/values) and head."""

    model_type: str  # "gemma4_assistant" or "gemma4_unified_assistant"
    text: TextConfig
    backbone_hidden_size: int
    use_ordered_embeddings: bool
    num_centroids: int
    centroid_intermediate_top_k: int
    tie_word_embeddings: bool

    @property
    def tokens_per_centroid(self) -> int:
        return self.text.vocab_size // self.num_centroids


def load_assistant_config(path: str | os.PathLike) -> AssistantConfig:
    """Read an assistant's `config.json` (a checkpoint directory or the file)."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise ConfigError(f"{file}: no config.json found (expected an assistant checkpoint directory)")
    try:
        return assistant_config_from_dict(read_json_object(file))
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None


def assistant_config_from_dict(raw: dict) -> AssistantConfig:
    model_type = raw.get("model_type")
    if model_type not in DEFAULT_BACKBONE:
        raise ConfigError(f"model_type: expected one of {sorted(DEFAULT_BACKBONE)} (an assistant), found {model_type!r}")
    text_raw = raw.get("text_config")
    if not isinstance(text_raw, dict):
        raise ConfigError(f"text_config: expected an object, found {type(text_raw).__name__}")
    if model_type == "gemma4_unified_assistant":
        text_raw = {**UNIFIED_TEXT_DEFAULTS, **text_raw}
    c = {**ASSISTANT_DEFAULTS, "backbone_hidden_size": DEFAULT_BACKBONE[model_type], **raw}
    r = FieldReader(c)
    cfg = AssistantConfig(
        model_type=model_type,
        text=drafter_text_config(text_raw),
        backbone_hidden_size=r.positive_int("backbone_hidden_size"),
        use_ordered_embeddings=r.boolean("use_ordered_embeddings"),
        num_centroids=r.positive_int("num_centroids"),
        centroid_intermediate_top_k=r.positive_int("centroid_intermediate_top_k"),
        tie_word_embeddings=r.boolean("tie_word_embeddings"),
    )
    if cfg.use_ordered_embeddings:
        vocab, n = cfg.text.vocab_size, cfg.num_centroids
        if vocab % n:
            raise ConfigError(f"num_centroids: expected a divisor of vocab_size={vocab} (equal clusters), found {n}")
        if cfg.centroid_intermediate_top_k > n:
            raise ConfigError(
                f"centroid_intermediate_top_k: expected at most num_centroids={n}, found {cfg.centroid_intermediate_top_k}"
            )
    return cfg


def drafter_text_config(text_raw: dict) -> TextConfig:
    """The drafter's decoder stack: a Gemma 4 text config with every layer marked `reuse`."""
    where = "text_config."
    for name, feature in FORBIDDEN.items():
        if text_raw.get(name):
            raise ConfigError(f"{where}{name}: an assistant has no {feature}, expected 0/false, found {text_raw[name]!r}")
    n_layers = text_raw.get("num_hidden_layers", 30)
    shared = text_raw.get("num_kv_shared_layers") or n_layers  # the reference fills it in when absent
    if shared != n_layers:
        raise ConfigError(
            f"{where}num_kv_shared_layers: every layer of an assistant reads the target's keys/values, "
            f"expected {n_layers} (num_hidden_layers), found {shared}"
        )
    plain = text_config_from_dict({**text_raw, "num_kv_shared_layers": 0, "hidden_size_per_layer_input": 0}, where)
    # each layer reads what `decoder.target_kv` files under its own index: the target's keys/values
    layers = tuple(replace(s, kv_sharing="reuse", kv_producer=s.index) for s in plain.layers)
    return replace(plain, layers=layers, num_kv_shared_layers=n_layers)
