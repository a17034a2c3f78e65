"""The unified model against `Gemma4UnifiedForConditionalGeneration` (transformers 5.23.0), on drawn
configs with every parameter random (LayerNorm weights and biases, the position table, norm
weights, `layer_scalar`):

* config: both dialects (as `save_pretrained` writes it; as published, with `global_head_dim` /
  `num_global_key_value_heads`) resolve to the reference's layer shapes; bad fields are ConfigErrors;
* pieces at 1e-5: the vision embedder (`get_image_features`) and the audio embedder
  (`get_audio_features`, padding frames dropped);
* whole model at 1e-4, loaded from `save_pretrained`: text only; images of odd aspect ratios with
  bidirectional attention inside each image (on every layer, as the reference's forward does);
  audio clips of different lengths padded in a batch; an image and a clip in one prompt.
"""

import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from unified_reference import (
    reference_unified_model,
    to_np,
    unified_audio_kwargs,
    unified_text_kwargs,
    unified_vision_kwargs,
)
from vision_reference import MULTIMODAL_TOKENS, token_ids

import minigemma
from minigemma.errors import ConfigError, InputError
from minigemma.unified.audio import extract_frames
from minigemma.unified.config import unified_config_from_dict
from minigemma.unified.image import preprocess

BUDGET = 70


def saved(ref) -> minigemma.Model:
    d = tempfile.mkdtemp(prefix="unified-")
    ref.save_pretrained(d)
    return minigemma.load(d)


def reference_logits(ref, ids, **media):
    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in media.items()}
    with torch.no_grad():
        # output_hidden_states: keeps `_maybe_slice_kv_shared_inputs` out of the way, as for Gemma 4
        out = ref(input_ids=torch.from_numpy(np.atleast_2d(ids)), use_cache=False, output_hidden_states=True, **tensors)
    return to_np(out.logits)


def mm_types(ids, tokens) -> np.ndarray:
    """`mm_token_type_ids` as the processor writes it (the reference's bidirectional mask reads it)."""
    types = np.zeros_like(ids)
    for name, kind in (("image_token_id", 1), ("video_token_id", 2), ("audio_token_id", 3)):
        types[ids == tokens[name]] = kind
    return types


def text_ids(rng, vocab, n):
    return [int(i) for i in rng.integers(0, vocab - MULTIMODAL_TOKENS, n)]


def layer_shapes(cfg):
    return [(layer.head_dim, layer.num_kv_heads) for layer in cfg.layers]


@given(unified_text_kwargs(), unified_vision_kwargs(), unified_audio_kwargs())
@settings(max_examples=5)
def test_config_dialects_resolve_as_the_reference(text, vision, audio):
    from transformers import Gemma4UnifiedConfig

    ref = Gemma4UnifiedConfig(text_config=text, vision_config=vision, audio_config=audio)
    expected = [(ref.text_config.per_layer_config[i].head_dim, ref.text_config.per_layer_config[i].num_key_value_heads)
                for i in range(ref.text_config.num_hidden_layers)]
    saved_dialect = ref.to_dict()
    published = dict(saved_dialect, text_config=dict(text, model_type="gemma4_unified_text"))  # global_head_dim, no per_layer_config
    assert "per_layer_config" in saved_dialect["text_config"] and "per_layer_config" not in published["text_config"]
    for raw in (saved_dialect, published):
        ours = unified_config_from_dict(raw)
        assert layer_shapes(ours.text) == expected
        assert ours.text.layer_types == tuple(ref.text_config.layer_types)
        assert ours.text.sliding_window == ref.text_config.sliding_window
        assert ours.text.use_bidirectional_attention == ref.text_config.use_bidirectional_attention
        assert not ours.text.has_ple and not ours.text.enable_moe_block
        assert ours.vision.model_patch_size == ref.vision_config.model_patch_size
        assert ours.audio.samples_per_token == ref.audio_config.audio_samples_per_token


def test_config_defaults_and_mistakes():
    from transformers import Gemma4UnifiedConfig

    ref = Gemma4UnifiedConfig()  # the 12B's defaults, from a config.json that names none
    ours = unified_config_from_dict({"model_type": "gemma4_unified", "text_config": {}, "vision_config": {}, "audio_config": {}})
    t = ref.text_config
    assert (ours.text.sliding_window, ours.text.max_position_embeddings, ours.text.use_bidirectional_attention) == (
        t.sliding_window, t.max_position_embeddings, t.use_bidirectional_attention)
    assert (ours.vision.mm_embed_dim, ours.vision.mm_posemb_size, ours.vision.patch_pixels) == (3840, 1120, 6912)
    assert ours.tokens["video_token_id"] == ref.video_token_id
    base = {"model_type": "gemma4_unified", "text_config": {"num_hidden_layers": 2}}
    for patch, message in [
        ({"vision_config": {"mm_embed_dim": 8, "output_proj_dims": 9}}, "vision_config.output_proj_dims: expected mm_embed_dim=8"),
        ({"audio_config": {"audio_embed_dim": 640, "audio_samples_per_token": 320}}, "audio_config.audio_samples_per_token"),
        ({"vision_config": {"patch_size": 0}}, "vision_config.patch_size: expected a positive integer"),
        ({"text_config": {"num_hidden_layers": 2, "enable_moe_block": True}}, "text_config.enable_moe_block: the unified model has no"),
        ({"vision_config": []}, "vision_config: expected an object"),
    ]:
        with pytest.raises(ConfigError, match=message):
            unified_config_from_dict({**base, **patch})


@st.composite
def merged_grids(draw, vision):
    """pixel_values / image_position_ids as the processor emits them: images of drawn grids, row by
    row, padded to a common length with zero patches at (-1, -1)."""
    pixels_per_patch = 3 * (vision["patch_size"] * vision["pooling_kernel_size"]) ** 2
    limit = vision["mm_posemb_size"]
    shapes = [(draw(st.integers(1, 6)), draw(st.integers(1, min(limit, 12)))) for _ in range(draw(st.integers(1, 3)))]
    shapes[0] = (shapes[0][0], min(limit, draw(st.sampled_from([shapes[0][1], limit]))))  # reach the table's last row
    total = max(r * c for r, c in shapes) + draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    pixels = np.zeros((len(shapes), total, pixels_per_patch), np.float32)
    positions = np.full((len(shapes), total, 2), -1, np.int64)
    for i, (rows, cols) in enumerate(shapes):
        y, x = np.divmod(np.arange(rows * cols), cols)
        positions[i, : rows * cols] = np.stack([x, y], -1)
        pixels[i, : rows * cols] = rng.random((rows * cols, pixels_per_patch), dtype=np.float32)
    return pixels, positions


@given(unified_vision_kwargs(), st.data())
@settings(max_examples=8)
def test_vision_embedder_equals_reference(vision, data):
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                num_key_value_heads=1, head_dim=8, global_head_dim=8)
    ref = reference_unified_model(text, vision, None, seed=data.draw(st.integers(0, 99)))
    pixels, positions = data.draw(merged_grids(vision))
    note(f"vision {vision} shapes {pixels.shape}")
    with torch.no_grad():
        out = ref.model.get_image_features(torch.from_numpy(pixels), torch.from_numpy(positions))
    from gemma_reference import as_checkpoint

    from minigemma.unified.vision import load_unified_vision

    ours = load_unified_vision(as_checkpoint(ref), unified_config_from_dict(ref.config.to_dict()).vision, 16)
    named = {}
    tokens = ours.encode(pixels, positions, tap=lambda n, v: named.setdefault(n, v))
    np.testing.assert_allclose(tokens, to_np(torch.cat(out.pooler_output)), rtol=1e-5, atol=1e-5)
    real = np.all(positions != -1, axis=-1)
    np.testing.assert_allclose(named["out"], to_np(out.last_hidden_state)[real], rtol=1e-5, atol=1e-5)
    bad = positions.copy()
    bad[0, 0] = (vision["mm_posemb_size"], 0)
    with pytest.raises(InputError, match=r"image_position_ids: position \[\d+, 0\] outside the position table"):
        ours.encode(pixels, bad)


@given(unified_audio_kwargs(), st.lists(st.integers(1, 5000), min_size=1, max_size=3), st.integers(0, 2**16))
@settings(max_examples=6)
def test_audio_embedder_equals_reference(audio, lengths, seed):
    from gemma_reference import as_checkpoint

    from minigemma.unified.audio import load_unified_audio

    text = dict(vocab_size=64, hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                num_key_value_heads=1, head_dim=8, global_head_dim=8)
    ref = reference_unified_model(text, None, audio, seed=seed % 100)
    rng = np.random.default_rng(seed)
    features, mask = extract_frames([rng.standard_normal(n).astype(np.float32) for n in lengths], audio["audio_embed_dim"])
    with torch.no_grad():
        out = ref.model.get_audio_features(torch.from_numpy(features), torch.from_numpy(mask))
    expected = to_np(out.pooler_output[out.attention_mask])
    ours = load_unified_audio(as_checkpoint(ref), unified_config_from_dict(ref.config.to_dict()).audio, 16)
    np.testing.assert_allclose(ours.encode(features, mask), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="input_features: expected frames of"):
        ours.encode(features[..., :-1], mask)


@given(unified_text_kwargs(), st.integers(1, 2), st.integers(1, 30), st.integers(0, 2**16))
@settings(max_examples=6)
def test_text_only_logits_equal_reference(text, batch, seq, seed):
    text = dict(text, vocab_size=max(text["vocab_size"], 64))
    ref = reference_unified_model(text, None, None, seed=seed % 100)
    model = saved(ref)
    ids = np.random.default_rng(seed).integers(0, text["vocab_size"] - MULTIMODAL_TOKENS, (batch, seq))
    note(f"text {text}")
    np.testing.assert_allclose(model.forward(ids), reference_logits(ref, ids), rtol=1e-4, atol=1e-4)


TEXT = dict(
    vocab_size=96, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
    num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=5, final_logit_softcapping=30.0,
    layer_types=["sliding_attention", "full_attention", "full_attention"], use_bidirectional_attention="vision",
    attention_k_eq_v=True, num_global_key_value_heads=1,
)
VISION = dict(patch_size=2, pooling_kernel_size=2, mm_embed_dim=20, output_proj_dims=20, mm_posemb_size=80)
AUDIO = dict(audio_embed_dim=24)


@pytest.fixture(scope="module")
def model_and_reference():
    ref = reference_unified_model(TEXT, VISION, AUDIO, seed=5)
    return ref, saved(ref)


BOA, EOA = 3, 4  # the audio brackets are ordinary tokens to the model: any text ids do


def with_media(rng, pieces, vocab=TEXT["vocab_size"]):
    """Token ids: text, then for each (begin, placeholder, count, end) its run, then text."""
    ids = text_ids(rng, vocab, 4)
    for begin, token, n, end in pieces:
        ids += [begin] + [token] * n + [end] + text_ids(rng, vocab, 3)
    return np.array(ids, dtype=np.int64)


def test_images_of_odd_aspect_ratios_equal_reference(model_and_reference):
    """Three images (tall, wide, thin), each longer than the sliding window: their tokens see each
    other both ways (mm_token_type_ids tells the reference so); ours derives it from the placeholders."""
    ref, model = model_and_reference
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(50, 13, 3), (9, 61, 3), (2, 90, 3)]]
    inputs = preprocess(images, BUDGET, VISION["patch_size"], VISION["pooling_kernel_size"])
    t = token_ids(TEXT["vocab_size"])
    ids = with_media(rng, [(t["boi_token_id"], t["image_token_id"], n, t["eoi_token_id"]) for n in inputs.num_soft_tokens_per_image])
    media = dict(pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids)
    expected = reference_logits(ref, ids, **media, mm_token_type_ids=mm_types(ids, t)[None])[0]
    np.testing.assert_allclose(model.forward(ids, **media), expected, rtol=1e-4, atol=1e-4)
    # the bidirectional blocks matter here: without them the reference differs
    causal = reference_logits(ref, ids, **media)[0]
    assert np.abs(causal - expected).max() > 1e-3


def test_audio_clips_padded_in_a_batch_equal_reference(model_and_reference):
    ref, model = model_and_reference
    rng = np.random.default_rng(2)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (100, 31, 240)]
    features, mask = extract_frames(clips, AUDIO["audio_embed_dim"])
    counts = mask.sum(axis=1)
    t = token_ids(TEXT["vocab_size"])
    rows = [with_media(rng, [(BOA, t["audio_token_id"], n, EOA)]) for n in counts]
    width = max(len(r) for r in rows)
    ids = np.stack([np.concatenate([r, np.array(text_ids(rng, TEXT["vocab_size"], width - len(r)), np.int64)]) for r in rows])
    media = dict(input_features=features, input_features_mask=mask)
    np.testing.assert_allclose(model.forward(ids, **media), reference_logits(ref, ids, **media), rtol=1e-4, atol=1e-4)


def test_image_and_audio_in_one_prompt_equal_reference(model_and_reference):
    ref, model = model_and_reference
    rng = np.random.default_rng(3)
    inputs = preprocess([rng.integers(0, 256, (30, 17, 3), dtype=np.uint8)], BUDGET, 2, 2)
    features, mask = extract_frames([rng.standard_normal(150).astype(np.float32)], AUDIO["audio_embed_dim"])
    t = token_ids(TEXT["vocab_size"])
    ids = with_media(rng, [(t["boi_token_id"], t["image_token_id"], inputs.num_soft_tokens_per_image[0], t["eoi_token_id"]),
                           (BOA, t["audio_token_id"], int(mask.sum()), EOA)])
    media = dict(pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids,
                 input_features=features, input_features_mask=mask)
    expected = reference_logits(ref, ids, **media, mm_token_type_ids=mm_types(ids, t)[None])[0]
    np.testing.assert_allclose(model.forward(ids, **media), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.forward(ids, **media, mm_token_type_ids=mm_types(ids, t)), expected, rtol=1e-4, atol=1e-4)


def test_unified_input_mistakes(model_and_reference):
    _, model = model_and_reference
    t = token_ids(TEXT["vocab_size"])
    ids = np.array([1, t["image_token_id"], 2])
    with pytest.raises(InputError, match="1 image placeholder tokens .* but no image was given"):
        model.forward(ids)
    with pytest.raises(InputError, match="pixel_values: expected floats of shape"):
        model.forward(ids, pixel_values=np.zeros((1, 1, 5), np.float32), image_position_ids=np.zeros((1, 1, 2), np.int64))
    with pytest.raises(InputError, match="the image encoder produced 2 soft tokens"):
        model.forward(ids, pixel_values=np.zeros((1, 2, 48), np.float32), image_position_ids=np.array([[[0, 0], [1, 0]]]))
