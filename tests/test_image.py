"""Image preprocessing against the reference PIL image processor (`Gemma4ImageProcessorPil`):
drawn sizes and aspect ratios (tall, wide, tiny, huge), every soft-token budget, every colour
mode Pillow decodes (transparency composited onto white), image files; positions and soft-token
counts exact, pixels at 1e-6. And the user mistakes: unreadable files, bad budgets, bad arrays."""

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

from minigemma import InputError
from minigemma.vision.image import SUPPORTED_SOFT_TOKENS, preprocess

PIXEL_TOL = 1e-6

SIZES = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12)),  # tiny: upscaled
    st.tuples(st.integers(200, 3000), st.integers(1, 60)),  # tall
    st.tuples(st.integers(1, 60), st.integers(200, 3000)),  # wide
    st.tuples(st.integers(1500, 2600), st.integers(1500, 2600)),  # huge: downscaled
    st.tuples(st.integers(13, 700), st.integers(13, 700)),  # ordinary
)
MODES = ("RGB", "RGBA", "L", "LA", "P", "P+transparency", "I;16")


def drawn_image(rng, height: int, width: int, mode: str) -> Image.Image:
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgba[..., :3])
    if mode in ("RGBA", "LA"):
        return Image.fromarray(rgba).convert(mode)  # alpha spans 0..255: composited onto white
    if mode == "L":
        return Image.fromarray(rgba[..., 0])
    if mode == "I;16":
        return Image.fromarray(rgba[..., 0].astype(np.uint16) * 257)
    image = Image.fromarray(rgba[..., :3]).convert("P")
    if mode == "P+transparency":
        image.info["transparency"] = int(np.asarray(image)[0, 0])
    return image


def reference(images, budget: int):
    out = Gemma4ImageProcessorPil(max_soft_tokens=budget)(images=images, return_tensors="np")
    return out["pixel_values"], out["image_position_ids"], [int(n) for n in out["num_soft_tokens_per_image"]]


def assert_same(ours, ref):
    pixels, positions, counts = ref
    assert ours.num_soft_tokens_per_image == counts
    assert ours.image_position_ids.dtype == np.int64 and ours.pixel_values.dtype == np.float32
    np.testing.assert_array_equal(ours.image_position_ids, positions)
    assert ours.pixel_values.shape == pixels.shape
    assert np.abs(ours.pixel_values - pixels).max() <= PIXEL_TOL  # (assert_allclose is slow on 10^7 values)


@pytest.mark.parametrize("budget", SUPPORTED_SOFT_TOKENS)
@settings(max_examples=6)
@given(sizes=st.lists(SIZES, min_size=1, max_size=2), seed=st.integers(0, 2**16))
def test_preprocessing_matches_reference(budget, sizes, seed):
    """A batch of drawn sizes (each padded to the budget) at every soft-token budget."""
    rng = np.random.default_rng(seed)
    note(f"sizes (height, width): {sizes}")
    images = [drawn_image(rng, h, w, "RGB") for h, w in sizes]
    ours = preprocess(images, budget)
    assert_same(ours, reference(images, budget))
    assert ours.pixel_values.shape == (len(sizes), budget * 9, 3 * 16 * 16)
    for n, pos in zip(ours.num_soft_tokens_per_image, ours.image_position_ids):
        real = pos[(pos != -1).any(-1)]
        assert 0 < n <= budget and n == len(real) // 9  # 3x3 patches per soft token


@given(mode=st.sampled_from(MODES), size=SIZES, budget=st.sampled_from(SUPPORTED_SOFT_TOKENS), seed=st.integers(0, 2**16))
def test_colour_modes_match_reference(mode, size, budget, seed):
    note(f"mode {mode}, size {size}")
    image = drawn_image(np.random.default_rng(seed), *size, mode)
    assert_same(preprocess(image, budget), reference([image], budget))


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGBA"), ("PNG", "P+transparency"), ("JPEG", "RGB"), ("WEBP", "RGB"), ("GIF", "P")])
def test_image_files_match_reference(tmp_path, fmt, mode):
    path = tmp_path / f"picture.{fmt.lower()}"
    drawn_image(np.random.default_rng(1), 90, 140, mode).save(path, format=fmt)
    ours = preprocess(str(path), 140)
    with Image.open(path) as im:
        assert_same(ours, reference([im], 140))


def test_uint8_arrays_match_reference():
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 200), (321, 17)]]
    assert_same(preprocess(arrays, 70), reference(arrays, 70))


def test_unreadable_or_missing_files_are_input_errors(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    png = tmp_path / "cut.png"
    drawn_image(np.random.default_rng(0), 64, 64, "RGB").save(png)
    png.write_bytes(png.read_bytes()[:200])  # truncated
    for path in (text, png, tmp_path / "missing.png", tmp_path):
        with pytest.raises(InputError, match=str(path)):
            preprocess(str(path))


@pytest.mark.parametrize("budget", [0, 100, 281, 2240, "280"])
def test_unsupported_budget_is_an_input_error(budget):
    with pytest.raises(InputError, match=r"max_soft_tokens: expected one of \(70, 140, 280, 560, 1120\)"):
        preprocess(np.zeros((8, 8, 3), np.uint8), budget)


@pytest.mark.parametrize(
    "array", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8), np.zeros((5, 5, 3), np.float32), np.zeros((5, 5, 4), np.uint8)]
)
def test_bad_arrays_are_input_errors(array):
    with pytest.raises(InputError, match="image: expected"):
        preprocess(array)


def test_no_images_is_an_input_error():
    with pytest.raises(InputError, match="images: expected at least one image"):
        preprocess([])


def test_prompt_expansion_matches_the_processor():
    """`Gemma4Processor.replace_image_token` (run on a stand-in processor) gives each mark's text."""
    from types import SimpleNamespace

    from transformers.models.gemma4.processing_gemma4 import Gemma4Processor

    from minigemma.text.multimodal import expand_image_marks

    marks = dict(image="<|image|>", boi="<|image>", eoi="<image|>")
    stand_in = SimpleNamespace(boi_token=marks["boi"], image_token=marks["image"], eoi_token=marks["eoi"])
    counts = [2, 3]
    expected = [Gemma4Processor.replace_image_token(stand_in, {"num_soft_tokens_per_image": counts}, i) for i in range(2)]
    got = expand_image_marks("A <|image|> and <|image|>.", counts, **marks)
    assert got == f"A {expected[0]} and {expected[1]}."
    assert expand_image_marks("Describe.", [1], **marks).endswith("<image|>\n\nDescribe.")  # no mark: images first
    assert expand_image_marks("No images.", [], **marks) == "No images."
    with pytest.raises(InputError, match=r"prompt: 2 image marks '<\|image\|>', but 1 image given"):
        expand_image_marks("<|image|><|image|>", [4], **marks)
