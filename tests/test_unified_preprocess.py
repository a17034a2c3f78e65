"""The unified model's preprocessing equals the reference's, value for value (0.0 difference):

* images: `Gemma4UnifiedImageProcessor._preprocess`, step by step with the reference's own functions
  (`get_aspect_ratio_preserving_size`, `convert_image_to_patches`, the (x, y) grid, `patches_merge`,
  `pad_along_first_dim`), on drawn image sizes (thin, tall, wide, already at the budget's size),
  budgets, patch sizes and merge kernels. The resize is the one step not the reference's own: it
  calls torchvision, which does not load beside torch 2.13.0, so both sides resize with Pillow's
  bicubic (minigemma's choice, as Gemma 4's PIL processor resizes); the rescale is the reference's
  `uint8 tensor * (1 / 255)`;
* audio: `Gemma4UnifiedAudioFeatureExtractor` itself on drawn batches of clips (lengths on and off
  the frame size, float and integer samples): frames and mask.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from PIL import Image
from unified_reference import reference_image_helpers

from minigemma.errors import InputError
from minigemma.unified.audio import extract_frames
from minigemma.unified.image import preprocess

REF = reference_image_helpers()
BUDGETS = (70, 140, 280, 560, 1120)


def reference_preprocess(rgb: np.ndarray, max_soft_tokens: int, patch_size: int, k: int, video: bool = False):
    """`Gemma4UnifiedImageProcessor._preprocess` for one image (`Gemma4UnifiedVideoProcessor` for
    one frame: its rescale is fused into a normalisation by std 255), resized with Pillow."""
    height, width = rgb.shape[:2]
    h, w = REF.get_aspect_ratio_preserving_size(height, width, patch_size, max_soft_tokens * k**2, k)
    if (h, w) != (height, width):
        rgb = np.array(Image.fromarray(rgb).resize((w, h), resample=Image.Resampling.BICUBIC))
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    image = image.to(torch.float32).div_(255.0) if video else image * (1 / 255)
    teacher = REF.convert_image_to_patches(image, patch_size)
    grid = torch.meshgrid(torch.arange(w // patch_size), torch.arange(h // patch_size), indexing="xy")
    positions = torch.stack(grid, dim=-1).reshape(teacher.shape[0], 2)
    merged, merged_positions = REF.patches_merge(teacher[None], positions[None], teacher.shape[0] // k**2)
    count = merged.shape[1]
    merged, merged_positions = REF.pad_along_first_dim(merged[0], merged_positions[0], max_soft_tokens)
    return merged.numpy(), merged_positions.numpy(), count


@st.composite
def images(draw):
    patch, k = draw(st.sampled_from([2, 4, 16])), draw(st.sampled_from([1, 2, 3]))
    budget = draw(st.sampled_from(BUDGETS if patch < 16 else (70, 140)))
    side = patch * k
    shape = draw(st.sampled_from(["any", "thin", "tall", "exact"]))
    if shape == "exact":  # already the budget's size: no resize
        h, w = side * draw(st.integers(1, 4)), side * draw(st.integers(1, 4))
    elif shape == "thin":
        h, w = draw(st.integers(1, 3)), draw(st.integers(40, 400))
    elif shape == "tall":
        h, w = draw(st.integers(40, 400)), draw(st.integers(1, 3))
    else:
        h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), budget, patch, k


@given(st.lists(images(), min_size=1, max_size=3), st.booleans())
def test_image_preprocessing_equals_reference(drawn, video):
    budget, patch, k = drawn[0][1:]
    rgbs = [rgb for rgb, *_ in drawn]
    note(f"shapes {[r.shape for r in rgbs]} budget {budget} patch {patch} k {k} video {video}")
    ours = preprocess(rgbs, budget, patch, k, video=video)
    for i, rgb in enumerate(rgbs):
        pixels, positions, count = reference_preprocess(rgb, budget, patch, k, video)
        assert ours.num_soft_tokens_per_image[i] == count
        assert ours.pixel_values.dtype == pixels.dtype and ours.image_position_ids.dtype == positions.dtype
        np.testing.assert_array_equal(ours.pixel_values[i], pixels)
        np.testing.assert_array_equal(ours.image_position_ids[i], positions)


def test_image_and_video_rescale_differ_as_the_reference_processors_do():
    """The image processor multiplies by 1/255, the video processor divides by 255: the last bit
    differs for some byte values, and each side keeps its own."""
    rgb = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)
    still = preprocess(rgb, 70, 16, 1).pixel_values
    frame = preprocess(rgb, 70, 16, 1, video=True).pixel_values
    assert np.any(still != frame) and np.abs(still - frame).max() < 1e-7


def test_bad_budget_and_image():
    with pytest.raises(InputError, match="max_soft_tokens: expected one of"):
        preprocess(np.zeros((8, 8, 3), np.uint8), 100)
    with pytest.raises(InputError, match="image: expected"):
        preprocess(np.zeros((8, 8), np.uint8))


@given(
    st.lists(st.tuples(st.integers(1, 3000), st.sampled_from(["float32", "float64", "int16"])), min_size=1, max_size=3),
    st.sampled_from([640, 160, 7]),
    st.integers(0, 2**16),
)
def test_audio_framing_equals_reference_extractor(clips, samples_per_token, seed):
    from transformers.models.gemma4_unified.feature_extraction_gemma4_unified import Gemma4UnifiedAudioFeatureExtractor

    rng = np.random.default_rng(seed)
    waves = [
        (rng.standard_normal(n) * 0.3).astype(dtype) if dtype != "int16" else rng.integers(-3000, 3000, n).astype(np.int16)
        for n, dtype in clips
    ]
    ref = Gemma4UnifiedAudioFeatureExtractor(feature_size=samples_per_token, audio_samples_per_token=samples_per_token)
    expected = ref(waves, return_tensors="np")
    features, mask = extract_frames(waves, samples_per_token)
    assert features.dtype == expected["input_features"].dtype and mask.dtype == expected["input_features_mask"].dtype
    np.testing.assert_array_equal(features, expected["input_features"])
    np.testing.assert_array_equal(mask, expected["input_features_mask"])
    assert list(mask.sum(axis=1)) == [-(-n // samples_per_token) for n, _ in clips]  # ceil(n / 640) tokens per clip


def test_bad_clips():
    with pytest.raises(InputError, match="audio clip 0: expected a non-empty 1-D array"):
        extract_frames([np.zeros(0)], 640)
    with pytest.raises(InputError, match="clip b: found NaN"):
        extract_frames([np.ones(5), np.array([np.nan])], 640, ["clip a", "clip b"])
