"""Whole models: random reference models of drawn configs (every switch), saved with
`save_pretrained` in both layouts, loaded by `minigemma.load`, logits compared at 1e-4.
Plus a bf16 checkpoint, a sharded one, batches, and sequences far longer than the window."""

import json
import os
import tempfile

import numpy as np
import pytest
import torch
from gemma_reference import drawn_ids, reference_logits, reference_text_model, text_config_kwargs
from hypothesis import given, settings
from hypothesis import strategies as st

from transformers import Gemma4ForCausalLM

import minigemma

TOL = dict(rtol=1e-4, atol=1e-4)


@settings(max_examples=25)
@given(
    kwargs=text_config_kwargs(),
    layout=st.sampled_from(["causal", "conditional"]),
    bidirectional=st.sampled_from([None, None, None, "all"]),
    data=st.data(),
)
def test_forward_matches_reference_on_drawn_configs(kwargs, layout, bidirectional, data):
    kwargs = dict(kwargs, use_bidirectional_attention=bidirectional)
    ids, seed = drawn_ids(data, kwargs, layout)
    ref = reference_text_model(kwargs, layout, seed)
    expected = reference_logits(ref, ids)
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        model = minigemma.load(d)
        got = model.forward(ids)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, **TOL)
        np.testing.assert_allclose(model.forward(ids[0]), expected[0], **TOL)  # 1-D input: (seq, vocab)


EVERYTHING_ON = dict(
    vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=5, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, global_head_dim=16, num_global_key_value_heads=1, attention_k_eq_v=True,
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"],
    sliding_window=4, num_kv_shared_layers=2, use_double_wide_mlp=True, hidden_size_per_layer_input=8,
    vocab_size_per_layer_input=128, enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=8,
    final_logit_softcapping=30.0,
)


def test_bf16_checkpoint_matches_reference_loading_it(tmp_path):
    """A checkpoint stored in bf16: we widen the raw bits exactly as torch does."""
    ref = reference_text_model(EVERYTHING_ON, "causal", seed=3)
    ref.to(torch.bfloat16).save_pretrained(tmp_path)
    header_len = int.from_bytes(open(tmp_path / "model.safetensors", "rb").read(8), "little")
    header = json.loads(open(tmp_path / "model.safetensors", "rb").read(8 + header_len)[8:])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    # the reference as a user gets it: the bf16 file loaded in float32 (a `ref.float()` would
    # keep bf16-rounded copies of non-persistent buffers such as the RoPE frequencies)
    ref = Gemma4ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    ids = np.arange(23) % 128
    np.testing.assert_allclose(minigemma.load(tmp_path).forward(ids), reference_logits(ref, ids), **TOL)


@pytest.mark.parametrize("layout", ["causal", "conditional"])
def test_sharded_checkpoint_matches_reference(tmp_path, layout):
    ref = reference_text_model(EVERYTHING_ON, layout, seed=5)
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists()
    ids = np.array([[5, 9, 3, 100, 27, 1, 0, 64, 64, 2, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    np.testing.assert_allclose(minigemma.load(tmp_path).forward(ids), reference_logits(ref, ids), **TOL)


def test_published_config_dialect_loads(tmp_path):
    """Published checkpoints say global_head_dim / num_global_key_value_heads instead of
    per_layer_config; rewriting a saved config.json that way must give the same model."""
    ref = reference_text_model(EVERYTHING_ON, "causal", seed=9)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["per_layer_config"]
    cfg.update(global_head_dim=16, num_global_key_value_heads=1)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ids = np.arange(17) % 128
    np.testing.assert_allclose(minigemma.load(tmp_path).forward(ids), reference_logits(ref, ids), **TOL)


def test_untied_head(tmp_path):
    kwargs = dict(EVERYTHING_ON, tie_word_embeddings=False)
    ref = reference_text_model(kwargs, "causal", seed=11)
    assert ref.lm_head.weight.data_ptr() != ref.model.embed_tokens.weight.data_ptr()
    ref.save_pretrained(tmp_path)
    ids = np.arange(9)
    np.testing.assert_allclose(minigemma.load(tmp_path).forward(ids), reference_logits(ref, ids), **TOL)
