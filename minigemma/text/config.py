"""Model configuration: `config.json` in, frozen dataclasses out.

Gemma 4 checkpoints describe themselves in a `config.json` that comes in two layouts and two
dialects, and all four must load:

* layout: `gemma4_text` (a `Gemma4ForCausalLM`, the text config at the top level) or `gemma4`
  (a `Gemma4ForConditionalGeneration`, the text config under `text_config`, beside optional
  `vision_config` / `audio_config`);
* dialect: published checkpoints say `global_head_dim` / `num_global_key_value_heads`, while
  `save_pretrained` in transformers 5.23.0 writes a sparse `per_layer_config`
  (`{"3": {"head_dim": 512}}`) instead.

Gemma 3 checkpoints (`gemma3_text` / `gemma3`) load too: `gemma3.py` translates their config into
the same fields plus a few switches (`norm_offset`, `attention_scaling`, `value_norm`,
`layer_scalar`, ...), each read by the one feature file where Gemma 3 and Gemma 4 differ.

Much of the architecture is *derived*, not stored (layer types, per-layer attention shapes, KV
sharing, RoPE per layer type): `layer_plan.py` derives it exactly as the reference does.

Everything invalid raises `ConfigError` naming the field, what was expected and what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..weights.config_reader import FieldReader, read_json_object
from ..errors import ConfigError
from .gemma3 import GEMMA3_MULTIMODAL, GEMMA3_TEXT, gemma3_multimodal_tokens, gemma3_text_as_gemma4
from .layer_plan import GLOBAL, SLIDING, attention_shapes, kv_sharing, layer_types, rope_params

ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "silu", "relu")
TEXT_MODEL_TYPES = ("gemma4_text", GEMMA3_TEXT)
MULTIMODAL_MODEL_TYPES = ("gemma4", GEMMA3_MULTIMODAL)
TEXT_MODEL_TYPE_OF = {"gemma4": "gemma4_text", GEMMA3_MULTIMODAL: GEMMA3_TEXT}

# Defaults of `Gemma4TextConfig` (transformers 5.23.0): a key absent from config.json takes these.
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_144,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 30,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
    "rope_parameters": None,
    "attention_bias": False,
    "sliding_window": 512,
    "layer_types": None,
    "final_logit_softcapping": None,
    "use_bidirectional_attention": None,
    "vocab_size_per_layer_input": 262_144,
    "hidden_size_per_layer_input": 256,
    "attention_k_eq_v": False,
    "num_kv_shared_layers": 0,
    "enable_moe_block": False,
    "use_double_wide_mlp": False,
    "num_experts": None,
    "top_k_experts": None,
    "moe_intermediate_size": None,
}

# Defaults of `Gemma4Config` for the multimodal special tokens.
MULTIMODAL_TOKEN_DEFAULTS = {
    "image_token_id": 258_880,
    "audio_token_id": 258_881,
    "video_token_id": 258_884,
    "boi_token_id": 255_999,
    "eoi_token_id": 258_882,
    "boa_token_id": 256_000,
    "eoa_token_index": 258_883,
}


@dataclass(frozen=True)
class RopeParams:
    """RoPE of one layer type: `default` rotates every dim pair; `proportional` only the first
    `partial_rotary_factor` of them (the rest get frequency 0); `linear` divides positions by `factor`."""

    rope_type: str
    theta: float
    partial_rotary_factor: float = 1.0
    factor: float = 1.0


@dataclass(frozen=True)
class LayerSpec:
    """Everything that differs from one decoder layer to the next."""

    index: int
    layer_type: str  # SLIDING or GLOBAL
    head_dim: int
    num_kv_heads: int
    kv_sharing: str | None  # None, "store" (a producer others read) or "reuse" (reads its producer)
    kv_producer: int | None  # for "reuse": the layer whose keys/values this one attends to
    k_eq_v: bool  # global layer with `attention_k_eq_v`: values are the (un-normed) key projection
    mlp_intermediate: int  # doubled on KV-shared layers when `use_double_wide_mlp`

    @property
    def is_sliding(self) -> bool:
        return self.layer_type == SLIDING

    @property
    def reuses_kv(self) -> bool:
        return self.kv_sharing == "reuse"


@dataclass(frozen=True)
class TextConfig:
    """The Gemma 4 language model (`Gemma4TextConfig`), with every derived quantity resolved."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_activation: str
    max_position_embeddings: int
    rms_norm_eps: float
    pad_token_id: int | None
    eos_token_id: tuple[int, ...]
    bos_token_id: int | None
    tie_word_embeddings: bool
    attention_bias: bool
    sliding_window: int
    final_logit_softcapping: float | None
    use_bidirectional_attention: str | None
    vocab_size_per_layer_input: int
    hidden_size_per_layer_input: int  # 0: no Per-Layer Embeddings
    attention_k_eq_v: bool
    num_kv_shared_layers: int
    enable_moe_block: bool
    use_double_wide_mlp: bool
    num_experts: int | None
    top_k_experts: int | None
    moe_intermediate_size: int | None
    layer_types: tuple[str, ...]
    rope: dict[str, RopeParams] = field(compare=False)
    layers: tuple[LayerSpec, ...]
    model_type: str = "gemma4_text"
    # What changed from Gemma 3 to Gemma 4, as switches. Defaults are Gemma 4's; `gemma3.py` sets
    # Gemma 3's, and each is read in the one place it matters.
    norm_offset: float = 0.0  # RMSNorm scale is (norm_offset + w): Gemma 3 stores w centred on 0 (1.0)  [norm.py]
    attention_scaling: float = 1.0  # Gemma 3: query_pre_attn_scalar ** -0.5; Gemma 4's q/k norms make it 1  [layer.py]
    value_norm: bool = True  # Gemma 4 RMS-normalises values; Gemma 3 does not  [attention.py]
    layer_scalar: bool = True  # Gemma 4 scales each layer's output by a learned scalar; Gemma 3 has none  [layer.py]
    bidirectional_window_inclusive: bool = True  # see `attention_window`

    @property
    def kv_sharing_modes(self) -> tuple[str | None, ...]:
        return tuple(layer.kv_sharing for layer in self.layers)

    @property
    def has_ple(self) -> bool:
        return self.hidden_size_per_layer_input > 0

    @property
    def attention_window(self) -> int:
        """Keys a sliding-layer query may see. With bidirectional attention (`"all"`) the reference
        halves the window (plus one) and opens it on both sides."""
        if self.use_bidirectional_attention == "all":
            reach = self.sliding_window // 2 + 1
            # Gemma 4 lets a query see keys `reach` positions away; Gemma 3's mask stops one short
            return reach if self.bidirectional_window_inclusive else reach - 1
        return self.sliding_window

    @property
    def image_blocks_all_layers(self) -> bool:
        """The unified model (`unified/config.py`): its reference's forward lets an image's tokens see
        each other on every layer, past the window; Gemma 4's only on sliding layers, within it.  [layer.py]"""
        return self.model_type == "gemma4_unified_text"

    @property
    def is_causal(self) -> bool:
        return self.use_bidirectional_attention != "all"


@dataclass(frozen=True)
class ModelConfig:
    """A whole checkpoint: the text model, plus the raw sub-configs of any vision / audio tower."""

    model_type: str  # "gemma4_text" or "gemma4"
    text: TextConfig
    vision: dict | None = field(default=None, compare=False)
    audio: dict | None = field(default=None, compare=False)
    tokens: dict[str, int] = field(default_factory=dict, compare=False)  # multimodal special ids
    raw: dict = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# reading


def load_config(path: str | os.PathLike) -> ModelConfig:
    """Read `config.json` from a checkpoint directory (or the file itself)."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise ConfigError(f"{file}: no config.json found (expected a Hugging Face checkpoint directory)")
    raw = read_json_object(file)
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None


def config_from_dict(raw: dict) -> ModelConfig:
    """Parse a `config.json` dictionary of either layout."""
    model_type = raw.get("model_type")
    if model_type in TEXT_MODEL_TYPES:
        return ModelConfig(model_type=model_type, text=text_config_from_dict(raw, model_type=model_type), raw=raw)
    if model_type in MULTIMODAL_MODEL_TYPES:
        text_raw = raw.get("text_config") or {}
        if not isinstance(text_raw, dict):
            raise ConfigError(f"text_config: expected an object, found {type(text_raw).__name__}")
        vision = raw.get("vision_config")
        if model_type == GEMMA3_MULTIMODAL:
            tokens = gemma3_multimodal_tokens(raw)
            vision = None  # Gemma 3's SigLIP tower is not Gemma 4's: minigemma runs its text model only
        else:
            tokens = {k: raw.get(k, v) for k, v in MULTIMODAL_TOKEN_DEFAULTS.items()}
        return ModelConfig(
            model_type=model_type,
            text=text_config_from_dict(text_raw, "text_config.", model_type),
            vision=vision,
            audio=raw.get("audio_config"),
            tokens=tokens,
            raw=raw,
        )
    supported = ", ".join(TEXT_MODEL_TYPES + MULTIMODAL_MODEL_TYPES)
    raise ConfigError(f"model_type: expected one of {supported}, found {model_type!r}")


def text_config_from_dict(raw: dict, where: str = "", model_type: str = "gemma4_text") -> TextConfig:
    """Resolve a text config dict into a `TextConfig`, deriving what the reference derives.
    `model_type`: the checkpoint's (the text config of a `gemma4` / `gemma3` model is read the same).
    A Gemma 3 config is first restated in Gemma 4's terms, plus its switches (`gemma3.py`)."""
    text_type = TEXT_MODEL_TYPE_OF.get(model_type, model_type)
    switches, last_global = {}, True
    if text_type == GEMMA3_TEXT:
        raw, switches = gemma3_text_as_gemma4(raw, where, multimodal=model_type == GEMMA3_MULTIMODAL)
        last_global = False  # Gemma 3 does not force its last layer global
    c = {k: raw.get(k, v) for k, v in TEXT_DEFAULTS.items()}
    r = FieldReader(c, where)

    n_layers = r.positive_int("num_hidden_layers")
    hidden = r.positive_int("hidden_size")
    n_heads = r.positive_int("num_attention_heads")
    n_kv = r.positive_int("num_key_value_heads")
    head_dim = r.positive_int("head_dim")
    vocab = r.positive_int("vocab_size")
    k_eq_v = r.boolean("attention_k_eq_v")
    bidirectional = r.choice("use_bidirectional_attention", (None, "vision", "all"))
    # bidirectional models store the window as 2 * (half-window - 1), which may be 0
    window = r.int_in_range("sliding_window", 0 if bidirectional == "all" else 1, 2**62)
    activation = r.choice("hidden_activation", ACTIVATIONS)

    types = layer_types(c["layer_types"], n_layers, where, last_global=last_global)
    rope = {t: RopeParams(*p) for t, p in rope_params(c["rope_parameters"], types, where).items()}
    head_dims, kv_heads = attention_shapes(raw, c, types, where)
    for i, (d, kv) in enumerate(zip(head_dims, kv_heads)):
        if n_heads % kv:
            raise ConfigError(
                f"{where}num_key_value_heads: layer {i} has {kv} KV heads, which does not divide "
                f"num_attention_heads={n_heads}"
            )
    for layer_type in set(types):  # RoPE tables are built once per layer type
        dims = {head_dims[i] for i, t in enumerate(types) if t == layer_type}
        if len(dims) > 1:
            raise ConfigError(f"{where}per_layer_config: {layer_type} layers must share one head_dim, found {sorted(dims)}")

    n_shared = r.int_in_range("num_kv_shared_layers", 0, n_layers - 1)
    modes, producers = kv_sharing(types, n_shared, where)

    moe = r.boolean("enable_moe_block")
    n_experts = top_k = moe_inter = None
    if moe:
        n_experts = r.positive_int("num_experts")
        top_k = r.int_in_range("top_k_experts", 1, n_experts)
        moe_inter = r.positive_int("moe_intermediate_size")

    intermediate = r.positive_int("intermediate_size")
    double_wide = r.boolean("use_double_wide_mlp")
    ple = c["hidden_size_per_layer_input"] or 0  # 0 / None / missing turns PLE off, as `if ...:` does
    if ple:
        ple = r.positive_int("hidden_size_per_layer_input")
    softcap = c["final_logit_softcapping"]
    if softcap is not None:
        softcap = r.positive_float("final_logit_softcapping")
    eos = c["eos_token_id"]
    eos = tuple(eos) if isinstance(eos, list | tuple) else (() if eos is None else (eos,))

    layers = tuple(
        LayerSpec(
            index=i,
            layer_type=t,
            head_dim=head_dims[i],
            num_kv_heads=kv_heads[i],
            kv_sharing=modes[i],
            kv_producer=producers[i],
            k_eq_v=k_eq_v and t == GLOBAL,
            mlp_intermediate=intermediate * (2 if double_wide and modes[i] == "reuse" else 1),
        )
        for i, t in enumerate(types)
    )
    return TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        hidden_activation=activation,
        max_position_embeddings=r.positive_int("max_position_embeddings"),
        rms_norm_eps=r.positive_float("rms_norm_eps"),
        pad_token_id=c["pad_token_id"],
        eos_token_id=eos,
        bos_token_id=c["bos_token_id"],
        tie_word_embeddings=r.boolean("tie_word_embeddings"),
        attention_bias=r.boolean("attention_bias"),
        sliding_window=window,
        final_logit_softcapping=softcap,
        use_bidirectional_attention=bidirectional,
        vocab_size_per_layer_input=r.positive_int("vocab_size_per_layer_input") if ple else c["vocab_size_per_layer_input"],
        hidden_size_per_layer_input=ple,
        attention_k_eq_v=k_eq_v,
        num_kv_shared_layers=n_shared,
        enable_moe_block=moe,
        use_double_wide_mlp=double_wide,
        num_experts=n_experts,
        top_k_experts=top_k,
        moe_intermediate_size=moe_inter,
        layer_types=tuple(types),
        rope=rope,
        layers=layers,
        model_type=text_type,
        **switches,
    )
