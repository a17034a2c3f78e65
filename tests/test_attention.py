"""Attention against `Gemma4TextAttention` (GQA, q/k/v norms, scaling 1.0, sliding vs global
masks, `attention_k_eq_v`, per-layer head dims, KV-shared layers), on drawn configs and
sequence lengths shorter and longer than the sliding window, every parameter random."""

import numpy as np
import torch
from gemma_reference import as_checkpoint, make_text_config, our_text_config, randomize, text_config_kwargs, to_np
from hypothesis import given, note
from hypothesis import strategies as st
from transformers.cache_utils import KVSharingDict
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.gemma4.modeling_gemma4 import Gemma4TextAttention, Gemma4TextRotaryEmbedding

from minigemma.text.attention import attend, attention_mask, load_attention
from minigemma.text.layer import ForwardContext, self_attention
from minigemma.text.model import rope_for_positions

TOL = dict(rtol=1e-5, atol=1e-5)


def reference_masks(cfg, x, position_ids):
    kw = dict(config=cfg, inputs_embeds=x, attention_mask=None, past_key_values=None, position_ids=position_ids)
    return {"full_attention": create_causal_mask(**kw), "sliding_attention": create_sliding_window_causal_mask(**kw)}


@given(kwargs=text_config_kwargs(), data=st.data())
def test_attention_block_matches_reference(kwargs, data):
    cfg = make_text_config(kwargs)
    ours = our_text_config(cfg)
    layer = data.draw(st.integers(0, cfg.num_hidden_layers - 1), label="layer")
    seq = data.draw(st.integers(1, 3 * cfg.sliding_window + 2), label="seq")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    spec = ours.layers[layer]
    note(f"config: {kwargs}\nlayer: {spec}")

    ref = randomize(Gemma4TextAttention(cfg, layer), seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, seq, cfg.hidden_size, generator=g)
    pos = torch.arange(seq)[None]
    cos, sin = Gemma4TextRotaryEmbedding(cfg)(x, pos, spec.layer_type)
    mask = reference_masks(cfg, x, pos)[spec.layer_type]

    ctx = ForwardContext(positions=np.arange(seq), rope=rope_for_positions(np.arange(seq), ours))
    shared = KVSharingDict()
    if spec.reuses_kv:  # a KV-shared layer reads keys/values produced elsewhere: give it some
        producer = ours.layers[spec.kv_producer]
        k = torch.randn(1, producer.num_kv_heads, seq, producer.head_dim, generator=g)
        v = torch.randn(1, producer.num_kv_heads, seq, producer.head_dim, generator=g)
        shared[spec.layer_type] = (k, v)
        ctx.shared_kv[spec.kv_producer] = (to_np(k[0].transpose(0, 1)), to_np(v[0].transpose(0, 1)), np.arange(seq))

    with torch.no_grad():
        expected, _ = ref(x, (cos, sin), mask, shared)
    weights = load_attention(as_checkpoint(ref, "attn."), "attn", spec, ours)
    got = self_attention(x[0].numpy(), weights, spec, ours, ctx, tap=lambda n, v: None)
    np.testing.assert_allclose(got, to_np(expected[0]), **TOL)

    if spec.kv_sharing == "store":  # a producer leaves exactly the reference's keys/values behind
        k_ref, v_ref = shared[spec.layer_type]
        k_ours, v_ours, k_pos = ctx.shared_kv[layer]
        np.testing.assert_allclose(k_ours, to_np(k_ref[0].transpose(0, 1)), **TOL)
        np.testing.assert_allclose(v_ours, to_np(v_ref[0].transpose(0, 1)), **TOL)
        np.testing.assert_array_equal(k_pos, np.arange(seq))


@given(
    q_len=st.integers(1, 20),
    past=st.integers(0, 20),
    window=st.one_of(st.none(), st.integers(1, 10)),
    causal=st.booleans(),
)
def test_attention_mask_matches_reference_mask_functions(q_len, past, window, causal):
    """Our position-based masks equal the reference's index-based mask functions, including a
    query block that starts after cached keys (as in decoding) and bidirectional windows."""
    from transformers.masking_utils import (
        bidirectional_mask_function,
        causal_mask_function,
        sliding_window_bidirectional_mask_function,
        sliding_window_causal_mask_function,
    )

    if causal:
        fn = causal_mask_function if window is None else sliding_window_causal_mask_function(window)
    else:
        fn = bidirectional_mask_function if window is None else sliding_window_bidirectional_mask_function(window)
    q_pos, k_pos = np.arange(past, past + q_len), np.arange(past + q_len)
    b = torch.tensor(0)  # the mask functions take tensor indices
    expected = np.array([[bool(fn(b, b, torch.tensor(q), torch.tensor(k))) for k in k_pos] for q in q_pos])
    np.testing.assert_array_equal(attention_mask(q_pos, k_pos, window, causal), expected)


@given(
    heads_kv=st.sampled_from([(1, 1), (2, 1), (4, 2), (8, 2), (6, 3)]),
    q_len=st.integers(1, 9),
    k_len=st.integers(1, 12),
    d=st.sampled_from([1, 4, 16]),
    seed=st.integers(0, 999),
)
def test_gqa_equals_repeated_kv_multi_head_attention(heads_kv, q_len, k_len, d, seed):
    """GQA without repeating K/V equals the reference's repeat_kv + eager attention."""
    from transformers.models.gemma4.modeling_gemma4 import eager_attention_forward

    heads, kv = heads_kv
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, q_len, d, generator=g)
    k = torch.randn(1, kv, k_len, d, generator=g)
    v = torch.randn(1, kv, k_len, d, generator=g)
    visible = torch.rand(q_len, k_len, generator=g) < 0.7
    visible[:, 0] = True  # every query sees at least one key
    additive = torch.where(visible, 0.0, torch.finfo(torch.float32).min)[None, None]

    class Module(torch.nn.Module):
        num_key_value_groups = heads // kv
        training = False

    expected, _ = eager_attention_forward(Module(), q, k, v, additive, scaling=1.0)
    got = attend(to_np(q[0].transpose(0, 1)), to_np(k[0].transpose(0, 1)), to_np(v[0].transpose(0, 1)), visible.numpy())
    np.testing.assert_allclose(got, to_np(expected[0]), **TOL)
