"""The vision tower piece by piece against the reference modules, on drawn shapes and configs with
every parameter randomised (position tables, clip bounds tight enough to clip, standardize
bias/scale): clipped linear, patch embedder, axial 2-D RoPE, encoder, pooler, the whole tower
with its embedder; and the vision config parser."""

import numpy as np
import pytest
import torch
from gemma_reference import as_checkpoint, randomize, to_np
from hypothesis import given, note
from hypothesis import strategies as st
from transformers.models.gemma4.modeling_gemma4 import (
    Gemma4ClippableLinear,
    Gemma4VisionEncoder,
    Gemma4VisionEncoderLayer,
    Gemma4VisionPatchEmbedder,
    Gemma4VisionPooler,
    Gemma4VisionRotaryEmbedding,
    apply_multidimensional_rope,
)
from vision_reference import make_vision_config, patch_grids, reference_multimodal_model, vision_config_kwargs

from minigemma import ConfigError
from minigemma.vision.clipped_linear import clipped_linear, load_clipped_linear
from minigemma.vision.tower import embed_patches, encode_images, load_vision_tower, pool
from minigemma.vision.config import vision_config_from_dict
from minigemma.vision.encoder import (
    apply_axial_rope,
    axial_rope_tables,
    load_vision_layer,
    vision_encoder,
    vision_layer,
)

TOL = dict(rtol=1e-5, atol=1e-5)  # one feature
TOL_STACK = dict(rtol=1e-4, atol=1e-4)  # several layers: float32 rounding compounds as in whole models
TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, global_head_dim=8, hidden_size_per_layer_input=0)


def real(pixels_or_h, positions):
    """The rows of one image that are real patches (not padding)."""
    return pixels_or_h[np.any(positions != -1, axis=-1)]


@given(n_in=st.integers(1, 24), n_out=st.integers(1, 24), rows=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_clipped_linear_matches_reference(n_in, n_out, rows, seed):
    ref = randomize(Gemma4ClippableLinear(make_vision_config({"use_clipped_linears": True}), n_in, n_out), seed)
    x = torch.randn(rows, n_in, generator=torch.Generator().manual_seed(seed)) * 2
    w = load_clipped_linear(as_checkpoint(ref, "p."), "p", n_in, n_out, clipped=True)
    lo, hi = float(ref.input_min), float(ref.input_max)
    note(f"input bounds {lo, hi}")
    # the bounds really bite: some inputs lie outside them
    assert ((x < lo) | (x > hi)).any()
    with torch.no_grad():
        np.testing.assert_allclose(clipped_linear(to_np(x), w), to_np(ref(x)), **TOL)


def test_unclipped_linear_has_no_bounds():
    ref = randomize(Gemma4ClippableLinear(make_vision_config({"use_clipped_linears": False}), 5, 3), 1)
    w = load_clipped_linear(as_checkpoint(ref, "p."), "p", 5, 3, clipped=False)
    x = torch.randn(4, 5) * 10
    assert w.bounds is None
    with torch.no_grad():
        np.testing.assert_allclose(clipped_linear(to_np(x), w), to_np(ref(x)), **TOL)


def tower_weights(ref_model, kwargs):
    """Our VisionWeights read from the randomised reference (same code path as a file)."""
    text_hidden = ref_model.config.text_config.hidden_size
    return load_vision_tower(as_checkpoint(ref_model), kwargs, text_hidden)


@given(kwargs=vision_config_kwargs(), data=st.data())
def test_patch_embedder_matches_reference(kwargs, data):
    cfg = make_vision_config(kwargs)
    k = cfg.pooling_kernel_size
    pixels, positions, shapes = data.draw(patch_grids(k, 3 * cfg.patch_size**2, min(12, cfg.position_embedding_size)))
    note(f"config: {kwargs}\nimages (rows, cols): {shapes}")
    ref = randomize(Gemma4VisionPatchEmbedder(cfg), data.draw(st.integers(0, 2**16)))
    padding = torch.from_numpy((positions == -1).all(-1))
    with torch.no_grad():
        expected = to_np(ref(torch.from_numpy(pixels), torch.from_numpy(positions), padding))
    ckpt = as_checkpoint(ref, "t.patch_embedder.")
    from minigemma.vision.tower import VisionWeights

    w = VisionWeights(ckpt.f32("t.patch_embedder.input_proj.weight"), ckpt.f32("t.patch_embedder.position_embedding_table"),
                      (), None, None, None)
    for i in range(len(shapes)):
        got = embed_patches(real(pixels[i], positions[i]), real(positions[i], positions[i]), w)
        np.testing.assert_allclose(got, real(expected[i], positions[i]), **TOL)


@given(kwargs=vision_config_kwargs(), data=st.data())
def test_axial_rope_matches_reference(kwargs, data):
    cfg = make_vision_config(kwargs)
    n = data.draw(st.integers(1, 40), label="patches")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    positions = rng.integers(0, 50, (n, 2))
    x = rng.standard_normal((n, cfg.num_attention_heads, cfg.head_dim)).astype(np.float32)
    note(f"config: {kwargs}")
    rotary = Gemma4VisionRotaryEmbedding(cfg)
    pos_t = torch.from_numpy(positions)[None]
    x_t = torch.from_numpy(x)[None]
    cos, sin = rotary(x_t, pos_t)
    expected = to_np(apply_multidimensional_rope(x_t, cos, sin, pos_t))[0]
    got = apply_axial_rope(x, axial_rope_tables(positions, cfg.head_dim, kwargs["rope_parameters"]["rope_theta"]))
    np.testing.assert_allclose(got, expected, **TOL)


@given(kwargs=vision_config_kwargs(), data=st.data())
def test_encoder_layer_matches_reference(kwargs, data):
    """One layer: GQA, q/k/v norms, axial RoPE, clipped linears, GeGLU, sandwich norms."""
    cfg = make_vision_config(kwargs)
    n = data.draw(st.integers(1, 40), label="patches")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}")
    ref = randomize(Gemma4VisionEncoderLayer(cfg, 0), seed)
    g = torch.Generator().manual_seed(seed + 7)
    x = torch.randn(1, n, cfg.hidden_size, generator=g)
    positions = torch.randint(0, 20, (1, n, 2), generator=g)
    rope = Gemma4VisionRotaryEmbedding(cfg)(x, positions)
    with torch.no_grad():
        expected = to_np(ref(x, position_embeddings=rope, attention_mask=None, position_ids=positions))[0]
    ours = vision_config_from_dict(kwargs)
    w = load_vision_layer(as_checkpoint(ref, "l."), "l", ours)
    pos = positions[0].numpy()
    got = vision_layer(x[0].numpy(), w, ours, axial_rope_tables(pos, ours.head_dim, ours.rope_theta))
    np.testing.assert_allclose(got, expected, **TOL)


@given(kwargs=vision_config_kwargs(), data=st.data())
def test_encoder_matches_reference(kwargs, data):
    """All encoder layers; the reference masks padding patches, we never see them: the real
    patches must agree."""
    cfg = make_vision_config(kwargs)
    pixels, positions, shapes = data.draw(patch_grids(cfg.pooling_kernel_size, cfg.hidden_size, 9, images=st.just(1)))
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}\nimage (rows, cols): {shapes}")
    ref = randomize(Gemma4VisionEncoder(cfg), seed)
    h = pixels * 4 - 2  # any hidden states: stand-ins of the patch embeddings
    valid = torch.from_numpy((positions != -1).any(-1))
    with torch.no_grad():
        expected = to_np(ref(torch.from_numpy(h), valid, torch.from_numpy(positions)).last_hidden_state)[0]
    ckpt = as_checkpoint(ref, "enc.")
    ours = vision_config_from_dict(kwargs)
    layers = [load_vision_layer(ckpt, f"enc.layers.{i}", ours) for i in range(ours.num_hidden_layers)]
    got = vision_encoder(real(h[0], positions[0]), real(positions[0], positions[0]), layers, ours)
    np.testing.assert_allclose(got, real(expected, positions[0]), **TOL_STACK)


@given(k=st.sampled_from([2, 3]), hidden=st.sampled_from([4, 16]), data=st.data())
def test_pooler_matches_reference(k, hidden, data):
    pixels, positions, shapes = data.draw(patch_grids(k, hidden, 12, images=st.just(1)))
    total = positions.shape[1]
    total -= total % (k * k)  # the reference pools max_patches / k**2 outputs
    pixels, positions = pixels[:, :total], positions[:, :total]
    note(f"k={k} image (rows, cols): {shapes}")
    ref = Gemma4VisionPooler(make_vision_config({"hidden_size": hidden}))
    padding = torch.from_numpy((positions == -1).all(-1))
    out, mask = ref(torch.from_numpy(pixels), torch.from_numpy(positions), padding, total // (k * k))
    rows, cols = shapes[0]
    got = pool(real(pixels[0], positions[0]), rows, cols, k)
    np.testing.assert_allclose(got, to_np(out[mask]), **TOL)


@given(kwargs=vision_config_kwargs(), data=st.data())
def test_vision_tower_and_embedder_match_reference(kwargs, data):
    """Patch embedder, encoder, pooler, standardize and embedder: `get_image_features` of a batch
    of images of different shapes (each padded to the batch's patch count)."""
    k = kwargs["pooling_kernel_size"]
    pixels, positions, shapes = data.draw(patch_grids(k, 3 * kwargs["patch_size"] ** 2, 12))
    pixels, positions = pixels[:, : positions.shape[1] // k**2 * k**2], positions[:, : positions.shape[1] // k**2 * k**2]
    note(f"config: {kwargs}\nimages (rows, cols): {shapes}")
    ref = reference_multimodal_model(TEXT, kwargs, data.draw(st.integers(0, 2**16), label="seed"))
    with torch.no_grad():
        out = ref.model.get_image_features(torch.from_numpy(pixels), torch.from_numpy(positions), return_dict=True)
    expected = np.concatenate([to_np(t) for t in out.pooler_output])
    tower = tower_weights(ref, kwargs)
    got = encode_images(pixels, positions, tower.weights, tower.config)
    assert got.shape == expected.shape == (sum(r * c for r, c in shapes) // k**2, TEXT["hidden_size"])
    np.testing.assert_allclose(got, expected, **TOL_STACK)


def test_vision_config_defaults_match_reference():
    from vision_reference import Gemma4VisionConfig

    ref = Gemma4VisionConfig()
    ours = vision_config_from_dict({})
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "head_dim", "hidden_activation", "rms_norm_eps", "pooling_kernel_size", "patch_size",
                  "position_embedding_size", "use_clipped_linears", "standardize"):
        assert getattr(ours, field) == getattr(ref, field), field
    assert ours.rope_theta == ref.rope_parameters["rope_theta"]


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("head_dim", 6, "vision_config.head_dim"),
        ("num_key_value_heads", 3, "vision_config.num_key_value_heads"),
        ("rope_parameters", {"rope_type": "default", "rope_theta": 100.0}, "vision_config.rope_parameters"),
        ("rope_parameters", {"rope_type": "axial", "rope_theta": -1}, "vision_config.rope_parameters.rope_theta"),
        ("pooling_kernel_size", 0, "vision_config.pooling_kernel_size"),
        ("use_clipped_linears", "yes", "vision_config.use_clipped_linears"),
        ("hidden_activation", "swish", "vision_config.hidden_activation"),
    ],
)
def test_bad_vision_config_names_the_field(field, value, says):
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        vision_config_from_dict({"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, field: value})
