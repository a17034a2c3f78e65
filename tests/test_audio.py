"""The conformer, piece by piece and whole, against the reference modules of `Gemma4AudioModel`.

Every example draws a config reaching every switch (see `audio_config_kwargs`), randomises every
parameter and buffer (clip bounds that bite, non-zero `per_dim_scale`), and runs padded batches
whose lengths are mostly not multiples of the attention chunk.

Each piece agrees at the one-feature tolerance, 1e-5. A whole conformer layer and the whole
tower are compositions of pieces and are held to the whole-model tolerance, 1e-4: activation
clamps as tight as 0.5 followed by RMSNorms scale float32 rounding up by the inverse RMS."""

import numpy as np
import pytest
import torch
from audio_reference import (
    audio_config_kwargs,
    calibrate_clip_bounds,
    count_clipped,
    make_audio_config,
    ours,
    reference_audio_model,
    reference_block_mask,
)
from gemma_reference import as_checkpoint, to_np
from hypothesis import given, note
from hypothesis import strategies as st

from minigemma.audio.tower import audio_forward, conformer_layer, feed_forward, light_conv, load_audio, load_conformer_layer
from minigemma.audio.attention import audio_attention, block_mask, load_audio_attention, relative_position_embeddings, rel_shift
from minigemma.audio.config import audio_config_from_dict
from minigemma.audio.subsample import load_subsample, subsample, subsampled_mask
from minigemma.vision.clipped_linear import clipped_linear, load_clipped_linear
from minigemma.errors import ConfigError

TOL = dict(rtol=1e-5, atol=1e-5)  # one feature
MODEL_TOL = dict(rtol=1e-4, atol=1e-4)  # compositions: a conformer layer, the tower


def padded_mask(data, batch: int, frames: int) -> np.ndarray:
    """(batch, frames) mask of real frames: each clip a drawn length, the longest filling the batch."""
    lengths = data.draw(st.lists(st.integers(1, frames), min_size=batch, max_size=batch), label="lengths")
    lengths[data.draw(st.integers(0, batch - 1), label="longest")] = frames
    return np.arange(frames)[None, :] < np.array(lengths)[:, None]


def hidden_states(data, d: int, label: str = "seq"):
    """Random activations (batch, seq, hidden) and a padded frame mask; seq often not a chunk multiple."""
    batch = data.draw(st.integers(1, 3), label="batch")
    seq = data.draw(st.integers(1, 30), label=label)
    seed = data.draw(st.integers(0, 2**16), label="input seed")
    x = np.random.default_rng(seed).standard_normal((batch, seq, d)).astype(np.float32)
    return x, padded_mask(data, batch, seq)


def features_and_mask(data, mels: int, max_frames: int):
    """Random log-mel-like features (batch, frames, mels) with a padded frame mask."""
    batch, frames = data.draw(st.integers(1, 3), label="batch"), data.draw(st.integers(1, max_frames), label="frames")
    mask = padded_mask(data, batch, frames)
    return np.random.default_rng(frames).standard_normal((batch, frames, mels)).astype(np.float32), mask


def setup(drawn, data):
    kwargs, mels = drawn
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"audio config: {kwargs}, mels={mels}")
    model = reference_audio_model(kwargs, seed)
    return model, ours(model.config), as_checkpoint(model, "tower."), mels


@given(drawn=audio_config_kwargs(), data=st.data())
def test_clipped_linear_matches_reference_and_clips(drawn, data):
    kwargs, mels = drawn
    model, cfg, _, _ = setup((dict(kwargs, use_clipped_linears=True), mels), data)
    ref = model.layers[0].feed_forward1.ffw_layer_1
    seed = data.draw(st.integers(0, 2**16), label="input seed")
    x = 2 * np.random.default_rng(seed).standard_normal((2, 40, cfg.hidden_size)).astype(np.float32)
    calibrate_clip_bounds(ref, lambda: ref(torch.tensor(x)))  # bounds inside what it sees: all four bite
    clipped = count_clipped(ref, lambda: ref(torch.tensor(x)))
    assert min(clipped[""]) > 0
    w = load_clipped_linear(as_checkpoint(ref, "f."), "f", cfg.hidden_size, 4 * cfg.hidden_size, True)
    np.testing.assert_allclose(clipped_linear(x, w), to_np(ref(torch.tensor(x))), **TOL)


@given(drawn=audio_config_kwargs(), data=st.data())
def test_subsampling_matches_reference(drawn, data):
    model, cfg, ckpt, mels = setup(drawn, data)
    features, mask = features_and_mask(data, mels, max_frames=45)
    with torch.no_grad():
        ref, ref_mask = model.subsample_conv_projection(torch.tensor(features), torch.tensor(mask))
    got, got_mask = subsample(features, mask, load_subsample(ckpt, "tower.subsample_conv_projection", cfg), cfg)
    np.testing.assert_array_equal(got_mask, ref_mask.numpy())
    np.testing.assert_array_equal(got_mask, subsampled_mask(mask))  # the processor's token count
    np.testing.assert_allclose(got, to_np(ref), **TOL)


@given(drawn=audio_config_kwargs(), data=st.data())
def test_relative_positions_and_block_mask_match_reference(drawn, data):
    model, cfg, _, _ = setup(drawn, data)
    x, mask = hidden_states(data, cfg.hidden_size)
    expected = to_np(model.rel_pos_enc(torch.tensor(x)))  # (1, positions, hidden)
    np.testing.assert_allclose(relative_position_embeddings(cfg), expected[0], **TOL)
    ref = reference_block_mask(model, torch.tensor(x), torch.tensor(mask))[:, 0].numpy()  # (b, blocks, chunk, context)
    np.testing.assert_array_equal(block_mask(mask, cfg), ref == 0)


@given(drawn=audio_config_kwargs(), data=st.data())
def test_chunked_attention_matches_reference(drawn, data):
    model, cfg, ckpt, _ = setup(drawn, data)
    x, mask = hidden_states(data, cfg.hidden_size)
    ref_attn = model.layers[0].self_attn
    assert (ref_attn.per_dim_scale != 0).all()
    with torch.no_grad():
        positions = model.rel_pos_enc(torch.tensor(x))
        expected, _ = ref_attn(torch.tensor(x), positions, reference_block_mask(model, torch.tensor(x), torch.tensor(mask)))
    w = load_audio_attention(ckpt, "tower.layers.0.self_attn", cfg)
    got = audio_attention(x, relative_position_embeddings(cfg), block_mask(mask, cfg), w, cfg)
    np.testing.assert_allclose(got, to_np(expected), **TOL)


@given(drawn=audio_config_kwargs(), data=st.data())
def test_light_conv_and_feed_forward_match_reference(drawn, data):
    model, cfg, ckpt, _ = setup(drawn, data)
    x, _ = hidden_states(data, cfg.hidden_size)
    layer = load_conformer_layer(ckpt, "tower.layers.0", cfg)
    ref = model.layers[0]
    with torch.no_grad():
        expected_conv = to_np(ref.lconv1d(torch.tensor(x)))
        expected_ff = to_np(ref.feed_forward1(torch.tensor(x)))
    np.testing.assert_allclose(light_conv(x, layer.lconv, cfg), expected_conv, **TOL)
    np.testing.assert_allclose(feed_forward(x, layer.feed_forward1, cfg), expected_ff, **TOL)


@given(drawn=audio_config_kwargs(), data=st.data())
def test_conformer_layer_matches_reference(drawn, data):
    model, cfg, ckpt, _ = setup(drawn, data)
    x, mask = hidden_states(data, cfg.hidden_size)
    with torch.no_grad():
        positions = model.rel_pos_enc(torch.tensor(x))
        expected = model.layers[0](torch.tensor(x), reference_block_mask(model, torch.tensor(x), torch.tensor(mask)), positions)
    got = conformer_layer(x, relative_position_embeddings(cfg), block_mask(mask, cfg), load_conformer_layer(ckpt, "tower.layers.0", cfg), cfg)
    np.testing.assert_allclose(got, to_np(expected), **MODEL_TOL)


# Clamps of 0.5 are left to the piece and layer tests: through a whole tower, every RMSNorm of
# clamped (small) values scales rounding up, and the reference itself then moves by ~30x what its
# input moved, layer after layer.
@given(drawn=audio_config_kwargs(clamps=(1e10, 2.0)), data=st.data())
def test_audio_tower_matches_reference(drawn, data):
    model, cfg, ckpt, mels = setup(drawn, data)
    # padding frames hold garbage, not zeros: the tower must ignore them by itself
    features, mask = features_and_mask(data, mels, max_frames=60)
    with torch.no_grad():
        out = model(torch.tensor(features), torch.tensor(mask))
    got, got_mask = audio_forward(features, mask, load_audio(ckpt, "tower", cfg), cfg)
    np.testing.assert_array_equal(got_mask, out.attention_mask.numpy())
    # the frames that become soft tokens; padding frames are dropped (there, with every input
    # zeroed, tight clamps and RMSNorms of near-zero vectors magnify rounding without bound)
    np.testing.assert_allclose(got[got_mask], to_np(out.last_hidden_state)[got_mask], **MODEL_TOL)


def test_every_clip_bound_bites_and_the_tower_still_matches():
    """Bounds calibrated to each clipped linear's own activations: every one of the tower clamps
    its input and its output on both sides, and the tower still matches the reference, so all 4
    bounds of all 20 clipped linears are read and applied where they belong."""
    kwargs = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[8, 3],
        attention_chunk_size=5, attention_context_left=4, attention_context_right=1, output_proj_dims=12,
    )
    model = reference_audio_model(kwargs, seed=7)
    cfg = ours(model.config)
    mask = np.arange(50)[None, :] < np.array([[50], [37]])
    features = np.random.default_rng(0).standard_normal((2, 50, 8)).astype(np.float32)
    run = lambda: model(torch.tensor(features), torch.tensor(mask))  # noqa: E731
    calibrate_clip_bounds(model, run)
    with torch.no_grad():
        clipped = count_clipped(model, run)
        expected = to_np(run().last_hidden_state)
    assert len(clipped) == 2 * 10  # per layer: q, k, v, post, 2 feed-forwards x 2, linear_start, linear_end
    assert all(min(counts) > 0 for counts in clipped.values()), clipped
    got, _ = audio_forward(features, mask, load_audio(as_checkpoint(model, "tower."), "tower", cfg), cfg)
    np.testing.assert_allclose(got, expected, **MODEL_TOL)


def test_rel_shift_aligns_distances():
    """Row i of the shifted scores moves right by i: column j holds position j - i (zero where
    no position exists), the Transformer-XL alignment."""
    chunk, context, positions = 3, 5, 4
    x = np.arange(1, chunk * positions + 1, dtype=np.float32).reshape(chunk, positions)
    shifted = rel_shift(x, context)
    for i in range(chunk):
        for j in range(context):
            expected = x[i, j - i] if 0 <= j - i < positions else 0.0
            assert shifted[i, j] == expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", 10),  # not a multiple of the 4 heads
        ("num_attention_heads", 0),
        ("subsampling_conv_channels", [8]),
        ("hidden_act", "swish-ish"),
        ("attention_logit_cap", 0.0),
        ("attention_context_right", -1),
        ("use_clipped_linears", "yes"),
    ],
)
def test_bad_audio_config_names_the_field(field, value):
    raw = dict(make_audio_config(dict(hidden_size=16, num_attention_heads=4)).to_dict(), **{field: value})
    with pytest.raises(ConfigError, match=f"audio_config.{field}"):
        audio_config_from_dict(raw)
