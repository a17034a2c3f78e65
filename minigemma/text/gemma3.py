"""Gemma 3: the same feature files, a few switches (mirrors `Gemma3TextConfig` and
`transformers/models/gemma3/modeling_gemma3.py`).

Gemma 4's text stack grew out of Gemma 3's: 5:1 sliding/global layers, q/k norms, GQA, GeGLU,
four norms per layer, a scaled tied embedding. So minigemma runs Gemma 3 checkpoints
(`gemma3_text`: `Gemma3ForCausalLM`; `gemma3`: the text half of `Gemma3ForConditionalGeneration`)
by restating a Gemma 3 config in Gemma 4's terms plus these switches, each read in one place:

| Gemma 3 | Gemma 4 | switch (`TextConfig`) | read in |
| --- | --- | --- | --- |
| RMSNorm scale applied as `1 + w` (`w` stored centred on 0) | `w` as stored | `norm_offset` 1.0 / 0.0 | `norm.norm_weight` |
| scores scaled by `query_pre_attn_scalar ** -0.5` | 1.0 (the q/k norms keep scores in range) | `attention_scaling` | `layer.self_attention` |
| values used as projected | values RMS-normalised (no scale) | `value_norm` False / True | `attention.project_keys_values` |
| no per-layer output scale | `layer_scalar` | `layer_scalar` False / True | `layer.decoder_layer` |
| last layer type as listed | last layer forced global | `last_global` (parse only) | `layer_plan.layer_types` |
| bidirectional window: `abs(distance) < w // 2 + 1` | `<=` | `bidirectional_window_inclusive` | `TextConfig.attention_window` |

and, with no switch because they only change *numbers* the Gemma 4 code already reads:

* RoPE: every layer rotates all its dims (`default`, no partial rotary); global layers use
  `rope_theta` (1M), with `rope_scaling` (`linear`, factor 8 on the 4B-27B models) applied to
  them only; sliding layers use `rope_local_base_freq` (10k);
* one head dim and one KV head count for every layer (no `global_head_dim`);
* no Per-Layer Embeddings, no MoE, no KV sharing, no `attention_k_eq_v`, no double-wide MLP;
* `attn_logit_softcapping` (a Gemma 2 leftover) is read by the config but never applied by the
  reference's `Gemma3Attention`, so it is ignored here too; `final_logit_softcapping` applies in
  `Gemma3ForCausalLM` only (the image-text model's head never caps).
"""

from __future__ import annotations

from ..weights.config_reader import FieldReader
from ..errors import ConfigError
from .layer_plan import DEFAULT_SLIDING_WINDOW_PATTERN, GLOBAL, SLIDING, layer_types

GEMMA3_TEXT = "gemma3_text"
GEMMA3_MULTIMODAL = "gemma3"
# the RoPE bases Gemma3TextConfig falls back on: global layers, and sliding ("local") layers
DEFAULT_ROPE_THETA = {GLOBAL: 1_000_000.0, SLIDING: 10_000.0}

# Defaults of `Gemma3TextConfig` (transformers 5.23.0) that differ from, or are absent in, Gemma 4's.
GEMMA3_TEXT_DEFAULTS = {
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "sliding_window": 4096,
    "query_pre_attn_scalar": 256,
    "use_bidirectional_attention": False,
}

# Defaults of `Gemma3Config` for its image tokens (it spells them `*_index`).
GEMMA3_MULTIMODAL_TOKEN_DEFAULTS = {
    "image_token_id": ("image_token_index", 262_144),
    "boi_token_id": ("boi_token_index", 255_999),
    "eoi_token_id": ("eoi_token_index", 256_000),
}

# Gemma 4 features Gemma 3 does not have, turned off.
WITHOUT_GEMMA4_FEATURES = {
    "hidden_size_per_layer_input": 0,  # no Per-Layer Embeddings
    "enable_moe_block": False,
    "num_kv_shared_layers": 0,
    "attention_k_eq_v": False,
    "use_double_wide_mlp": False,
    "per_layer_config": {},  # every layer has `head_dim` and `num_key_value_heads`
}


def gemma3_text_as_gemma4(raw: dict, where: str = "", multimodal: bool = False) -> tuple[dict, dict]:
    """A Gemma 3 text config restated as a Gemma 4 one, and the `TextConfig` switches that say
    where the two differ. `multimodal`: the text config of a `gemma3` (image-text) model."""
    c = {**GEMMA3_TEXT_DEFAULTS, **raw}
    r = FieldReader(c, where)
    n_layers = r.positive_int("num_hidden_layers")
    bidirectional = bool(r.choice("use_bidirectional_attention", (None, False, True)))
    if bidirectional and multimodal:
        # `Gemma3Model` builds causal masks for text whatever this says (with the window already
        # halved for bidirectional use): a combination no Gemma 3 ships, so refuse it
        r.fail("use_bidirectional_attention", "false in a gemma3 image-text model (the reference ignores it there)", True)
    if multimodal:
        c["final_logit_softcapping"] = None  # `Gemma3ForConditionalGeneration` never applies it
    pattern = r.positive_int("sliding_window_pattern") if "sliding_window_pattern" in c else DEFAULT_SLIDING_WINDOW_PATTERN
    types = layer_types(c.get("layer_types"), n_layers, where, pattern=pattern, last_global=False)
    c.update(WITHOUT_GEMMA4_FEATURES)
    c.update(
        vocab_size_per_layer_input=c["vocab_size"],
        layer_types=types,
        rope_parameters=gemma3_rope_parameters(c, where),
        use_bidirectional_attention="all" if bidirectional else None,
    )
    switches = dict(
        norm_offset=1.0,
        attention_scaling=r.positive_float("query_pre_attn_scalar") ** -0.5,
        value_norm=False,
        layer_scalar=False,
        bidirectional_window_inclusive=False,
    )
    return c, switches


def gemma3_rope_parameters(c: dict, where: str) -> dict:
    """RoPE per layer type, resolved as `Gemma3TextConfig.convert_rope_params_to_dict` does it.

    Two spellings meet here: `save_pretrained` in transformers 5 writes `rope_parameters` keyed by
    layer type; published checkpoints say `rope_theta` (global layers), `rope_local_base_freq`
    (sliding layers) and `rope_scaling` (global layers only, e.g. `{"rope_type": "linear", "factor": 8.0}`)."""
    given = c.get("rope_parameters")
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"{where}rope_parameters: expected an object keyed by layer type, found {given!r}")
    rope = {t: dict(p) if isinstance(p, dict) else {"rope_type": "default"} for t, p in (given or {}).items()}
    scaling = c.get("rope_scaling")
    if scaling is not None:
        if not isinstance(scaling, dict):
            raise ConfigError(f"{where}rope_scaling: expected an object such as {{'rope_type': 'linear', 'factor': 8.0}}, found {scaling!r}")
        scaling = dict(scaling)
        if "type" in scaling:  # the older spelling
            scaling.setdefault("rope_type", scaling.pop("type"))
        rope.setdefault(GLOBAL, {"rope_type": "default"}).update(scaling)
    legacy_theta = {GLOBAL: c.get("rope_theta"), SLIDING: c.get("rope_local_base_freq")}
    for layer_type in (GLOBAL, SLIDING):
        params = rope.setdefault(layer_type, {"rope_type": "default"})
        params.setdefault("rope_type", "default")
        theta = legacy_theta[layer_type]
        params.setdefault("rope_theta", DEFAULT_ROPE_THETA[layer_type] if theta is None else theta)
    return rope


def gemma3_multimodal_tokens(raw: dict) -> dict[str, int]:
    """The image token ids of a `gemma3` config, under the names Gemma 4's config uses."""
    return {name: raw.get(key, default) for name, (key, default) in GEMMA3_MULTIMODAL_TOKEN_DEFAULTS.items()}
