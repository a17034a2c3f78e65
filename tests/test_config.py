"""Config parsing and derivation against `Gemma4TextConfig` / `Gemma4Config`: for drawn configs in
both layouts and both dialects, our layer types, KV sharing modes, per-layer head dims and KV heads
and RoPE parameters equal the reference's; every invalid field is a ConfigError naming it."""

import json

import pytest
from gemma_reference import GLOBAL, SLIDING, text_config_kwargs
from hypothesis import given, note
from hypothesis import strategies as st
from transformers import Gemma4Config, Gemma4TextConfig

from minigemma import ConfigError
from minigemma.text.config import config_from_dict, load_config


def assert_same_derivation(ours, ref: Gemma4TextConfig):
    assert list(ours.layer_types) == list(ref.layer_types)
    assert list(ours.kv_sharing_modes) == list(ref.kv_sharing_modes)
    for spec in ours.layers:
        layer_ref = ref.per_layer_config[spec.index]
        assert spec.head_dim == layer_ref.head_dim, spec
        assert spec.num_kv_heads == layer_ref.num_key_value_heads, spec
    for layer_type, params in ours.rope.items():
        ref_params = ref.rope_parameters[layer_type]
        assert params.rope_type == ref_params["rope_type"]
        assert params.theta == ref_params["rope_theta"]
        if params.rope_type == "proportional":
            assert params.partial_rotary_factor == ref_params.get("partial_rotary_factor", 1.0)


def published_dialect(kwargs: dict) -> dict:
    """config.json as published checkpoints write it: global_head_dim / num_global_key_value_heads."""
    out = {k: v for k, v in kwargs.items() if v is not None or k == "num_global_key_value_heads"}
    return dict(out, model_type="gemma4_text")


@given(
    kwargs=text_config_kwargs(max_layers=14),
    default_layer_types=st.booleans(),
    default_rope=st.booleans(),
    drop_global_head_dim=st.booleans(),
    layout=st.sampled_from(["gemma4_text", "gemma4"]),
)
def test_derivation_matches_reference_in_both_dialects(kwargs, default_layer_types, default_rope, drop_global_head_dim, layout):
    if default_layer_types:  # the reference's 5:1 default; KV sharing must still find producers
        kwargs = dict(kwargs, layer_types=None, num_kv_shared_layers=0)
    if default_rope:
        kwargs = dict(kwargs, rope_parameters=None)
    if drop_global_head_dim:  # absent: the reference defaults to 512
        kwargs = {k: v for k, v in kwargs.items() if k != "global_head_dim"}
    note(f"config: {kwargs}")
    ref = Gemma4TextConfig(**kwargs)

    published = published_dialect(kwargs)  # dialect 1: what the hub's config.json says
    saved = ref.to_dict()  # dialect 2: what save_pretrained writes (per_layer_config)
    assert "per_layer_config" in saved and "global_head_dim" not in saved
    for raw in (published, saved):
        if layout == "gemma4":
            raw = Gemma4Config(text_config=raw, vision_config=None, audio_config=None).to_dict() if raw is saved else {
                "model_type": "gemma4", "text_config": raw}
        parsed = config_from_dict(raw)
        assert parsed.model_type == layout
        assert_same_derivation(parsed.text, ref)


def test_e2b_published_config_derives_the_released_layout():
    """E2B: 35 layers in a 4:1 pattern, the last 20 sharing KV, double-wide MLPs there."""
    types = ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(35)]
    raw = dict(model_type="gemma4_text", num_hidden_layers=35, hidden_size=1536, intermediate_size=6144,
               num_attention_heads=8, num_key_value_heads=1, head_dim=256, global_head_dim=512,
               num_kv_shared_layers=20, use_double_wide_mlp=True, layer_types=types)
    ours = config_from_dict(raw).text
    ref = Gemma4TextConfig(**{k: v for k, v in raw.items() if k != "model_type"})
    assert_same_derivation(ours, ref)
    assert [s.mlp_intermediate for s in ours.layers] == [6144] * 15 + [12288] * 20
    assert {s.kv_producer for s in ours.layers if s.reuses_kv} == {13, 14}


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("hidden_size", 0, "hidden_size: expected a positive integer, found 0"),
        ("num_hidden_layers", "4", "num_hidden_layers: expected a positive integer, found '4'"),
        ("layer_types", ["sliding_attention"], "layer_types: expected a list of 2 entries"),
        ("layer_types", ["sliding_attention", "chunked"], "layer_types: expected entries in"),
        ("num_key_value_heads", 3, "does not divide num_attention_heads=4"),
        ("num_kv_shared_layers", 1, "num_kv_shared_layers: 1 shared layers leave no earlier full_attention layer"),
        ("num_kv_shared_layers", 5, "num_kv_shared_layers: expected an integer in [0, 1]"),
        ("hidden_activation", "swish", "hidden_activation: expected one of"),
        ("final_logit_softcapping", -1.0, "final_logit_softcapping: expected a positive number"),
        ("rope_parameters", {"full_attention": {"rope_type": "yarn", "rope_theta": 1.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1.0}},
         "rope_parameters.full_attention.rope_type: expected one of"),
        ("per_layer_config", {"7": {"head_dim": 8}}, "per_layer_config: layer index 7 outside [0, 2)"),
        ("per_layer_config", {"1": {"intermediate_size": 8}}, "per_layer_config.1: minigemma supports overriding"),
        ("enable_moe_block", True, "num_experts: expected a positive integer, found None"),
        ("attention_k_eq_v", "yes", "attention_k_eq_v: expected true or false"),
    ],
)
def test_invalid_field_is_a_config_error_naming_it(tmp_path, field, value, expected):
    raw = dict(model_type="gemma4_text", num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               layer_types=["sliding_attention", "full_attention"])
    raw[field] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)
    assert expected in str(e.value)


def test_nested_text_config_errors_name_the_path():
    with pytest.raises(ConfigError, match=r"text_config\.hidden_size: expected a positive integer"):
        config_from_dict({"model_type": "gemma4", "text_config": {"hidden_size": -3}})


def test_unknown_model_type_and_unreadable_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match=r"model_type: expected one of gemma4_text, gemma3_text, gemma4, gemma3, found 'llama'"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read JSON"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="no config.json found"):
        load_config(tmp_path / "elsewhere")


def test_last_layer_is_forced_global_like_the_reference():
    kwargs = dict(num_hidden_layers=3, layer_types=[SLIDING, GLOBAL, SLIDING])
    ref = Gemma4TextConfig(**kwargs)
    ours = config_from_dict(dict(kwargs, model_type="gemma4_text")).text
    assert list(ours.layer_types) == list(ref.layer_types) == [SLIDING, GLOBAL, GLOBAL]
