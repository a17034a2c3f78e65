"""Building blocks for comparing minigemma's vision tower with the reference.

* `vision_config_kwargs`: a hypothesis strategy for small `Gemma4VisionConfig` keyword arguments
  reaching every switch (GQA, clipped linears, standardize, pooling kernel, patch size, theta);
* `patch_grids`: drawn images as the processor would emit them: real patches row by row at their
  (x, y) positions, padded with zero patches at (-1, -1);
* `reference_multimodal_model`: a randomised `Gemma4ForConditionalGeneration` with a vision tower,
  its multimodal token ids inside the small test vocabulary;
* `image_prompt`: token ids with `<|image>` + n x `<|image|>` + `<image|>` per image.
"""

from __future__ import annotations

import numpy as np
from gemma_reference import make_text_config, randomize
from hypothesis import strategies as st
from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4VisionConfig

MULTIMODAL_TOKENS = 5  # image, boi, eoi, audio, video: the top ids of the test vocabulary


@st.composite
def vision_config_kwargs(draw, clipped=None, standardize=None):
    heads = draw(st.sampled_from([1, 2, 4]))
    return dict(
        hidden_size=draw(st.sampled_from([16, 24, 32])),  # 8 wide: RMSNorm of tiny MLP outputs magnifies float32 rounding past 1e-5
        intermediate_size=draw(st.sampled_from([16, 24, 40])),
        num_hidden_layers=draw(st.integers(1, 2)),
        num_attention_heads=heads,
        num_key_value_heads=draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0])),
        head_dim=draw(st.sampled_from([4, 8, 12])),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        rope_parameters={"rope_type": "axial", "rope_theta": draw(st.sampled_from([100.0, 10_000.0]))},
        pooling_kernel_size=draw(st.sampled_from([2, 3])),  # k=1: the reference pooler keeps the padding instead (a bug)
        patch_size=draw(st.sampled_from([2, 3, 4])),
        position_embedding_size=draw(st.sampled_from([24, 64])),
        use_clipped_linears=draw(st.booleans()) if clipped is None else clipped,
        standardize=draw(st.booleans()) if standardize is None else standardize,
    )


def make_vision_config(kwargs: dict) -> Gemma4VisionConfig:
    cfg = Gemma4VisionConfig(**kwargs)
    cfg._attn_implementation = "eager"
    return cfg


@st.composite
def patch_grids(draw, k: int, patch_pixels: int, max_side: int, images=st.integers(1, 3)):
    """(pixel_values, positions, shapes): images of drawn (rows, cols) patch grids, multiples of
    k, padded to a common patch count with some spare padding."""
    shapes = [
        (k * draw(st.integers(1, max_side // k)), k * draw(st.integers(1, max_side // k)))
        for _ in range(draw(images))
    ]
    total = max(r * c for r, c in shapes) + k * k * draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    pixels = np.zeros((len(shapes), total, patch_pixels), np.float32)
    positions = np.full((len(shapes), total, 2), -1, np.int64)
    for i, (rows, cols) in enumerate(shapes):
        y, x = np.divmod(np.arange(rows * cols), cols)
        positions[i, : rows * cols] = np.stack([x, y], -1)
        pixels[i, : rows * cols] = rng.random((rows * cols, patch_pixels), dtype=np.float32)
    return pixels, positions, shapes


def token_ids(vocab_size: int) -> dict:
    top = vocab_size - 1
    return dict(image_token_id=top, boi_token_id=top - 1, eoi_token_id=top - 2, audio_token_id=top - 3, video_token_id=top - 4)


def reference_multimodal_model(text_kwargs: dict, vision_kwargs: dict, seed: int = 0):
    text = make_text_config(text_kwargs)
    cfg = Gemma4Config(
        text_config=text.to_dict(), vision_config=vision_kwargs, audio_config=None, **token_ids(text_kwargs["vocab_size"])
    )
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    return randomize(Gemma4ForConditionalGeneration(cfg), seed).eval()


def image_prompt(rng, vocab_size: int, soft_tokens: list[int], text_len: int = 5) -> np.ndarray:
    """Text, then each image as <|image> + n x <|image|> + <image|> followed by more text."""
    t = token_ids(vocab_size)
    text_vocab = vocab_size - MULTIMODAL_TOKENS

    def text():
        return list(rng.integers(0, text_vocab, text_len))

    ids = text()
    for n in soft_tokens:
        ids += [t["boi_token_id"]] + [t["image_token_id"]] * n + [t["eoi_token_id"]] + text()
    return np.array(ids, dtype=np.int64)
