"""RMSNorm and the dual RoPE against `Gemma4RMSNorm`, `Gemma4TextRotaryEmbedding` and
`apply_rotary_pos_emb`, on drawn shapes and random parameters."""

import numpy as np
import torch
from gemma_reference import make_text_config, our_text_config, text_config_kwargs, to_np
from hypothesis import given, note
from hypothesis import strategies as st
from transformers.models.gemma4.modeling_gemma4 import Gemma4RMSNorm, Gemma4TextRotaryEmbedding, apply_rotary_pos_emb

from minigemma.text.norm import rms_norm
from minigemma.text.rope import apply_rope, inverse_frequencies, rope_tables

TOL = dict(rtol=1e-5, atol=1e-5)


@given(
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    dim=st.integers(1, 64),
    with_scale=st.booleans(),
    eps=st.sampled_from([1e-6, 1e-5, 1e-2]),
    seed=st.integers(0, 2**16),
)
def test_rms_norm_matches_reference(shape, dim, with_scale, eps, seed):
    g = torch.Generator().manual_seed(seed)
    ref = Gemma4RMSNorm(dim, eps=eps, with_scale=with_scale)
    if with_scale:
        with torch.no_grad():
            ref.weight.copy_(torch.randn(dim, generator=g))  # random, not the initial ones
    x = torch.randn(*shape, dim, generator=g) * 3
    ours = rms_norm(x.numpy(), to_np(ref.weight) if with_scale else None, eps)
    np.testing.assert_allclose(ours, to_np(ref(x)), **TOL)


@given(kwargs=text_config_kwargs(), positions=st.lists(st.integers(0, 5000), min_size=1, max_size=12), seed=st.integers(0, 99))
def test_dual_rope_tables_match_reference(kwargs, positions, seed):
    cfg = make_text_config(kwargs)
    ours_cfg = our_text_config(cfg)
    note(f"config: {kwargs}")
    ref = Gemma4TextRotaryEmbedding(cfg)
    pos = torch.tensor([positions])
    for layer_type, params in ours_cfg.rope.items():
        head_dim = next(s.head_dim for s in ours_cfg.layers if s.layer_type == layer_type)
        inv = inverse_frequencies(params, head_dim)
        np.testing.assert_allclose(inv, to_np(getattr(ref, f"{layer_type}_inv_freq")), rtol=1e-6, atol=0)
        cos_ref, sin_ref = ref(torch.zeros(1), pos, layer_type)
        cos, sin = rope_tables(np.array(positions), inv)
        np.testing.assert_allclose(cos, to_np(cos_ref[0]), **TOL)
        np.testing.assert_allclose(sin, to_np(sin_ref[0]), **TOL)

        # and rotating a (seq, heads, head_dim) tensor by them
        x = torch.randn(1, len(positions), 3, head_dim, generator=torch.Generator().manual_seed(seed))
        rotated_ref = apply_rotary_pos_emb(x, cos_ref, sin_ref, unsqueeze_dim=2)
        np.testing.assert_allclose(apply_rope(x[0].numpy(), cos, sin), to_np(rotated_ref[0]), **TOL)


def test_proportional_rope_rotates_only_its_fraction():
    """Global layers: with partial_rotary_factor 1/4 only the first quarter of the pairs turn;
    the rest pass through unrotated, carrying pure content."""
    from minigemma.text.config import RopeParams

    inv = inverse_frequencies(RopeParams("proportional", 1e6, 0.25), head_dim=32)
    assert (inv[:4] > 0).all() and (inv[4:] == 0).all()
    cos, sin = rope_tables(np.arange(50), inv)
    x = np.random.default_rng(0).standard_normal((50, 1, 32)).astype(np.float32)
    y = apply_rope(x, cos, sin)
    unrotated = np.r_[4:16, 20:32]
    np.testing.assert_array_equal(y[..., unrotated], x[..., unrotated])
    assert not np.allclose(y[1:, :, :4], x[1:, :, :4])
