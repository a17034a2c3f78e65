"""Gemma 3 through the Gemma 4 feature files: random reference models of drawn Gemma 3 configs
(every switch), saved with `save_pretrained` in both layouts, loaded by `minigemma.load`, logits
compared at 1e-4, by a whole forward and through the KV cache token by token; the published
config dialect; the norm offset against `Gemma3RMSNorm`; bad configs name their field."""

import json
import tempfile

import numpy as np
import pytest
import torch
from gemma3_reference import gemma3_config_kwargs, reference_gemma3_model
from gemma_reference import SLIDING, drawn_ids, randomize, reference_logits
from hypothesis import given, note, settings
from hypothesis import strategies as st
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

import minigemma
from minigemma.text.config import load_config
from minigemma.text.norm import norm_weight, rms_norm

TOL = dict(rtol=1e-4, atol=1e-4)


@settings(max_examples=25)
@given(kwargs=gemma3_config_kwargs(), layout=st.sampled_from(["causal", "conditional"]), data=st.data())
def test_forward_matches_reference_on_drawn_gemma3_configs(kwargs, layout, data):
    if layout == "conditional":  # minigemma refuses it there (see test_bad_gemma3_config_names_the_field)
        kwargs = dict(kwargs, use_bidirectional_attention=False)
    ids, seed = drawn_ids(data, kwargs, layout)
    ref = reference_gemma3_model(kwargs, layout, seed)
    expected = reference_logits(ref, ids)
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        model = minigemma.load(d)
        assert model.config.text.model_type == "gemma3_text"
        got = model.forward(ids)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, **TOL)
        if not kwargs["use_bidirectional_attention"]:  # through the KV cache: a prefill, then one token at a time
            seq = ids.shape[1]
            cache, split = model.new_cache(), max(1, seq // 2)
            steps = [model.extend(ids[0, :split], cache)] + [model.extend(ids[0, i : i + 1], cache) for i in range(split, seq)]
            np.testing.assert_allclose(np.concatenate(steps), expected[0], **TOL)


@settings(max_examples=8)
@given(kwargs=gemma3_config_kwargs(max_layers=3), layout=st.sampled_from(["causal", "conditional"]), data=st.data())
def test_every_traced_name_matches_the_reference_hooks_on_gemma3(kwargs, layout, data):
    """`trace` on Gemma 3: the same names the reference's hooks capture on `Gemma3ForCausalLM` /
    `Gemma3ForConditionalGeneration` (no PLE, MoE or v-norm, so none of their names), equal at 1e-4."""
    from minigemma.verify import reference as reference_trace

    if layout == "conditional":
        kwargs = dict(kwargs, use_bidirectional_attention=False)
    seq = data.draw(st.integers(1, 2 * kwargs["sliding_window"] + 3), label="seq")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}\nlayout: {layout}")
    ref = reference_gemma3_model(kwargs, layout, seed)
    ids = np.random.default_rng(seed).integers(0, kwargs["vocab_size"], seq)
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = minigemma.load(d).trace(ids)
    theirs = reference_trace.capture(ref, ids)
    assert list(ours) == list(theirs)  # the same names, in forward order
    assert not any(".ple." in n or ".moe." in n or n.startswith("ple.") for n in ours)
    for name, expected in theirs.items():
        assert ours[name].shape == expected.shape, name
        np.testing.assert_allclose(ours[name], expected, err_msg=name, **TOL)


PUBLISHED = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=7, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=24, sliding_window=3, final_logit_softcapping=None,
    rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    },
)


def test_published_gemma3_config_dialect_loads(tmp_path):
    """Published Gemma 3 checkpoints (e.g. gemma-3-4b) say `rope_theta`, `rope_local_base_freq`,
    `rope_scaling` and `sliding_window_pattern` instead of `rope_parameters` and `layer_types`;
    rewriting a saved config.json that way must give the same model."""
    ref = reference_gemma3_model(dict(PUBLISHED, tie_word_embeddings=True), "causal", seed=4)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["layer_types"][-1] == SLIDING  # 7 layers, pattern 6: the last layer stays sliding
    for key in ("rope_parameters", "layer_types", "_sliding_window_pattern"):
        del cfg[key]
    cfg.update(rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rope_scaling={"type": "linear", "factor": 8.0},
               sliding_window_pattern=6)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    text = load_config(tmp_path).text
    assert text.rope["full_attention"].factor == 8.0 and text.rope["sliding_attention"].theta == 10_000.0
    ids = np.arange(19) % 128
    np.testing.assert_allclose(minigemma.load(tmp_path).forward(ids), reference_logits(ref, ids), **TOL)


def test_gemma3_switches_in_the_config(tmp_path):
    """What the Gemma 3 config turns on and off, read as the reference's modules read it."""
    ref = reference_gemma3_model(dict(PUBLISHED, tie_word_embeddings=True), "causal", seed=1)
    ref.save_pretrained(tmp_path)
    text = load_config(tmp_path).text
    attn = ref.model.layers[0].self_attn
    assert text.attention_scaling == attn.scaling == 24**-0.5
    assert (text.norm_offset, text.value_norm, text.layer_scalar) == (1.0, False, False)
    assert not text.has_ple and not text.enable_moe_block and text.num_kv_shared_layers == 0
    assert text.layer_types == tuple(ref.config.layer_types)


@given(dim=st.sampled_from([4, 16, 33]), eps=st.sampled_from([1e-6, 1e-5]), seed=st.integers(0, 2**16))
def test_rms_norm_with_offset_matches_gemma3_rmsnorm(dim, eps, seed):
    """Gemma 3's `x * (1 + w)`: our offset folded into the weight at load time gives the same."""
    norm = randomize(Gemma3RMSNorm(dim, eps=eps), seed)
    x = torch.randn(5, dim, generator=torch.Generator().manual_seed(seed)) * 3
    w = norm_weight(norm.weight.detach().numpy(), 1.0)
    np.testing.assert_allclose(rms_norm(x.numpy(), w, eps), norm(x).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field, value", [("query_pre_attn_scalar", 0), ("use_bidirectional_attention", "all"),
                                          ("sliding_window_pattern", 0), ("rope_scaling", 8.0)])
def test_bad_gemma3_config_names_the_field(tmp_path, field, value):
    ref = reference_gemma3_model(dict(PUBLISHED, tie_word_embeddings=True), "causal", seed=2)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    if field == "sliding_window_pattern":
        del cfg["layer_types"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(minigemma.ConfigError, match=field):
        minigemma.load(tmp_path)


def test_bidirectional_gemma3_image_text_model_is_refused(tmp_path):
    """`Gemma3Model` masks text causally whatever its text config says: minigemma refuses to guess."""
    ref = reference_gemma3_model(dict(PUBLISHED, tie_word_embeddings=True), "conditional", seed=3)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["use_bidirectional_attention"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(minigemma.ConfigError, match="text_config.use_bidirectional_attention"):
        minigemma.load(tmp_path)
