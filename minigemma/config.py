"""Model configuration: `config.json` in, frozen dataclasses out.

Gemma 4 checkpoints describe themselves in a `config.json` that comes in two layouts and two
dialects, and all four must load:

* layout: `gemma4_text` (a `Gemma4ForCausalLM`, the text config at the top level) or `gemma4`
  (a `Gemma4ForConditionalGeneration`, the text config under `text_config`, beside optional
  `vision_config` / `audio_config`);
* dialect: published checkpoints say `global_head_dim` / `num_global_key_value_heads`, while
  `save_pretrained` in transformers 5.23.0 writes a sparse `per_layer_config`
  (`{"3": {"head_dim": 512}}`) instead.

Much of the architecture is *derived*, not stored, and this file derives it exactly as the
reference does (`Gemma4TextConfig.__post_init__` and `.kv_sharing_modes` in
`transformers/models/gemma4/configuration_gemma4.py`):

* `layer_types`: default pattern of five sliding layers then one global (5:1); the last layer is
  always forced to global attention;
* per-layer attention shape: global layers take `global_head_dim` (default 512) and, only when
  `attention_k_eq_v` is set, `num_global_key_value_heads`;
* `kv_sharing_modes`: the last `num_kv_shared_layers` layers `reuse` the keys/values of the last
  earlier layer of the same type, which is marked `store`;
* RoPE parameters per layer type: `default` RoPE (theta 10k) on sliding layers, `proportional`
  partial-rotary RoPE (theta 1M, a quarter of the dims rotated) on global layers.

Everything invalid raises `ConfigError` naming the field, what was expected and what was found.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

SLIDING = "sliding_attention"
GLOBAL = "full_attention"
LAYER_TYPES = (SLIDING, GLOBAL)
DEFAULT_SLIDING_WINDOW_PATTERN = 6  # five sliding layers, then one global: the 5:1 pattern
DEFAULT_GLOBAL_HEAD_DIM = 512
DEFAULT_ROPE = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
ROPE_TYPES = ("default", "proportional", "linear")
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "silu", "relu")
PER_LAYER_OVERRIDES = ("head_dim", "num_key_value_heads")  # what the reference reads per layer
TEXT_MODEL_TYPES = ("gemma4_text",)
MULTIMODAL_MODEL_TYPES = ("gemma4",)

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
            return self.sliding_window // 2 + 1
        return self.sliding_window

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
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{file}: cannot read JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a JSON object, found {type(raw).__name__}")
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None


def config_from_dict(raw: dict) -> ModelConfig:
    """Parse a `config.json` dictionary of either layout."""
    model_type = raw.get("model_type")
    if model_type in TEXT_MODEL_TYPES:
        return ModelConfig(model_type=model_type, text=text_config_from_dict(raw), raw=raw)
    if model_type in MULTIMODAL_MODEL_TYPES:
        text_raw = raw.get("text_config") or {}
        if not isinstance(text_raw, dict):
            raise ConfigError(f"text_config: expected an object, found {type(text_raw).__name__}")
        tokens = {k: raw.get(k, v) for k, v in MULTIMODAL_TOKEN_DEFAULTS.items()}
        return ModelConfig(
            model_type=model_type,
            text=text_config_from_dict(text_raw, where="text_config."),
            vision=raw.get("vision_config"),
            audio=raw.get("audio_config"),
            tokens=tokens,
            raw=raw,
        )
    supported = ", ".join(TEXT_MODEL_TYPES + MULTIMODAL_MODEL_TYPES)
    raise ConfigError(f"model_type: expected one of {supported}, found {model_type!r}")


def text_config_from_dict(raw: dict, where: str = "") -> TextConfig:
    """Resolve a text config dict into a `TextConfig`, deriving what the reference derives."""
    c = {k: raw.get(k, v) for k, v in TEXT_DEFAULTS.items()}
    r = _Reader(c, where)

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

    layer_types = _layer_types(c["layer_types"], n_layers, where)
    rope = _rope_params(c["rope_parameters"], layer_types, where)
    head_dims, kv_heads = _per_layer_attention_shapes(raw, c, layer_types, where)
    for i, (d, kv) in enumerate(zip(head_dims, kv_heads)):
        if n_heads % kv:
            raise ConfigError(
                f"{where}num_key_value_heads: layer {i} has {kv} KV heads, which does not divide "
                f"num_attention_heads={n_heads}"
            )
    for layer_type in set(layer_types):  # RoPE tables are built once per layer type
        dims = {head_dims[i] for i, t in enumerate(layer_types) if t == layer_type}
        if len(dims) > 1:
            raise ConfigError(f"{where}per_layer_config: {layer_type} layers must share one head_dim, found {sorted(dims)}")

    n_shared = r.int_in_range("num_kv_shared_layers", 0, n_layers - 1)
    modes, producers = _kv_sharing(layer_types, n_shared, where)

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
        for i, t in enumerate(layer_types)
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
        layer_types=tuple(layer_types),
        rope=rope,
        layers=layers,
    )


# --------------------------------------------------------------------------------------------
# derivations (each mirrors one step of the reference's __post_init__)


def _layer_types(value, n_layers: int, where: str) -> list[str]:
    if value is None:
        pattern = DEFAULT_SLIDING_WINDOW_PATTERN
        types = [SLIDING if (i + 1) % pattern else GLOBAL for i in range(n_layers)]
    else:
        if not isinstance(value, list | tuple) or len(value) != n_layers:
            found = len(value) if isinstance(value, list | tuple) else repr(value)
            raise ConfigError(f"{where}layer_types: expected a list of {n_layers} entries (num_hidden_layers), found {found}")
        bad = [t for t in value if t not in LAYER_TYPES]
        if bad:
            raise ConfigError(f"{where}layer_types: expected entries in {LAYER_TYPES}, found {bad[0]!r}")
        types = list(value)
    types[-1] = GLOBAL  # the last layer always attends to the whole context
    return types


def _rope_params(value, layer_types: list[str], where: str) -> dict[str, RopeParams]:
    value = DEFAULT_ROPE if value is None else value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}rope_parameters: expected an object keyed by layer type, found {value!r}")
    rope = {}
    for layer_type in sorted(set(layer_types)):
        p = value.get(layer_type)
        name = f"{where}rope_parameters.{layer_type}"
        if not isinstance(p, dict):
            raise ConfigError(f"{name}: expected an object with rope_type and rope_theta, found {p!r}")
        rope_type = p.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ConfigError(f"{name}.rope_type: expected one of {ROPE_TYPES}, found {rope_type!r}")
        theta = p.get("rope_theta")
        if not _is_number(theta) or theta <= 0:
            raise ConfigError(f"{name}.rope_theta: expected a positive number, found {theta!r}")
        partial = p.get("partial_rotary_factor", 1.0) if rope_type == "proportional" else 1.0
        factor = p.get("factor", 1.0) if rope_type in ("proportional", "linear") else 1.0
        if not _is_number(partial) or not 0 <= partial <= 1:
            raise ConfigError(f"{name}.partial_rotary_factor: expected a number in [0, 1], found {partial!r}")
        if not _is_number(factor) or factor <= 0:
            raise ConfigError(f"{name}.factor: expected a positive number, found {factor!r}")
        rope[layer_type] = RopeParams(rope_type, float(theta), float(partial), float(factor))
    return rope


def _per_layer_attention_shapes(raw: dict, c: dict, layer_types: list[str], where: str):
    """Head dim and KV heads of every layer: the global value, overridden per layer.

    Published dialect: `global_head_dim` (default 512) for every global layer, and
    `num_global_key_value_heads` too, but only when `attention_k_eq_v` is set.
    `save_pretrained` dialect: an explicit, sparse `per_layer_config` (it wins when present)."""
    n = len(layer_types)
    if "per_layer_config" in raw and raw["per_layer_config"] is not None:
        plc = raw["per_layer_config"]
        if not isinstance(plc, dict):
            raise ConfigError(f"{where}per_layer_config: expected an object keyed by layer index, found {plc!r}")
        overrides = {}
        for key, value in plc.items():
            try:
                idx = int(key)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}per_layer_config: expected integer layer indices, found {key!r}") from None
            if not 0 <= idx < n:
                raise ConfigError(f"{where}per_layer_config: layer index {idx} outside [0, {n})")
            if not isinstance(value, dict):
                raise ConfigError(f"{where}per_layer_config.{key}: expected an object, found {value!r}")
            unknown = sorted(set(value) - set(PER_LAYER_OVERRIDES))
            if unknown:
                raise ConfigError(
                    f"{where}per_layer_config.{key}: minigemma supports overriding {PER_LAYER_OVERRIDES}, found {unknown}"
                )
            overrides[idx] = value
    else:
        global_head_dim = raw.get("global_head_dim", DEFAULT_GLOBAL_HEAD_DIM)
        global_kv = raw.get("num_global_key_value_heads")
        layer_override = {"head_dim": global_head_dim}
        if c["attention_k_eq_v"] and global_kv is not None:
            layer_override["num_key_value_heads"] = global_kv
        overrides = {i: layer_override for i, t in enumerate(layer_types) if t == GLOBAL}

    head_dims, kv_heads = [], []
    for i in range(n):
        o = overrides.get(i, {})
        head_dims.append(o.get("head_dim", c["head_dim"]))
        kv_heads.append(o.get("num_key_value_heads", c["num_key_value_heads"]))
        for name, v in (("head_dim", head_dims[-1]), ("num_key_value_heads", kv_heads[-1])):
            if not _is_int(v) or v <= 0:
                raise ConfigError(f"{where}{name}: layer {i} needs a positive integer, found {v!r}")
    return head_dims, kv_heads


def _kv_sharing(layer_types: list[str], n_shared: int, where: str):
    """`Gemma4TextConfig.kv_sharing_modes`: the last `n_shared` layers reuse the keys/values of the
    last non-shared layer of their own type, which stores them."""
    n = len(layer_types)
    modes: list[str | None] = [None] * n
    producers: list[int | None] = [None] * n
    if n_shared == 0:
        return modes, producers
    first_shared = n - n_shared
    unshared = layer_types[:first_shared]
    if set(unshared) != set(layer_types):
        missing = sorted(set(layer_types) - set(unshared))
        raise ConfigError(
            f"{where}num_kv_shared_layers: {n_shared} shared layers leave no earlier {missing[0]} layer to "
            "produce their keys/values"
        )
    last_of_type = {t: max(i for i, u in enumerate(unshared) if u == t) for t in set(layer_types)}
    for i in range(first_shared, n):
        modes[i] = "reuse"
        producers[i] = last_of_type[layer_types[i]]
    for producer in last_of_type.values():
        modes[producer] = "store"
    return modes, producers


# --------------------------------------------------------------------------------------------
# validation helpers


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _Reader:
    """Typed access to config fields, each failure a `ConfigError` naming the field."""

    def __init__(self, values: dict, where: str):
        self.values, self.where = values, where

    def _fail(self, name, expected, found):
        raise ConfigError(f"{self.where}{name}: expected {expected}, found {found!r}")

    def positive_int(self, name: str) -> int:
        v = self.values[name]
        if not _is_int(v) or v <= 0:
            self._fail(name, "a positive integer", v)
        return v

    def int_in_range(self, name: str, lo: int, hi: int) -> int:
        v = self.values[name]
        if not _is_int(v) or not lo <= v <= hi:
            self._fail(name, f"an integer in [{lo}, {hi}]", v)
        return v

    def positive_float(self, name: str) -> float:
        v = self.values[name]
        if not _is_number(v) or v <= 0:
            self._fail(name, "a positive number", v)
        return float(v)

    def boolean(self, name: str) -> bool:
        v = self.values[name]
        if not isinstance(v, bool):
            self._fail(name, "true or false", v)
        return v

    def choice(self, name: str, options):
        v = self.values[name]
        if v not in options:
            self._fail(name, f"one of {options}", v)
        return v
