"""Image preprocessing for the unified model (mirrors `Gemma4UnifiedImageProcessor`:
`image_processing_gemma4_unified.py`, with `patches_merge`).

The same first steps as Gemma 4's (`vision/image.py`): keep the aspect ratio, resize (bicubic)
to the largest size whose 16-pixel patch count fits `max_soft_tokens * k**2` with sides multiples
of `k * 16`, rescale to [0, 1]. Then, instead of handing 16-pixel patches to an encoder that pools
k x k of them into one soft token, the processor merges each k x k block of small patches into
one 48 x 48 "model patch" up front (`patches_merge`): the merged patch is just the block's pixels,
row by row, channel last, so it equals cutting the image into (k * 16)-pixel patches directly.
Its position is the block's (x, y) on the merged grid. Patches and positions are padded to
`max_soft_tokens` rows with zeros and (-1, -1).

Differences from the reference, said plainly: the reference resizes with torchvision's
antialiased bicubic on uint8 tensors (`tvF.resize`), which does not load beside the pinned
torch 2.13.0; minigemma resizes with Pillow's bicubic, as Gemma 4's own PIL processor
(`Gemma4ImageProcessorPil`) does. Everything after the resize (rescale, patchify, merge,
positions, padding) equals the reference's functions exactly (tests/test_unified_preprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..vision.image import (
    PAD_POSITION,
    check_array,
    grid_positions,
    image_list,
    patchify,
    target_size,
    to_rgb,
)

PIXEL_SCALE = np.float32(1 / 255)  # the image processor multiplies the uint8 tensor by a float32 scalar
# The video processor fuses rescale and its (identity) normalisation into one division by
# std 255: the same value but for the last bit of 126 of the 256 byte values.
VIDEO_PIXEL_STD = np.float32(255)


@dataclass(frozen=True)
class UnifiedImageInputs:
    pixel_values: np.ndarray  # (images, max_soft_tokens, 3 * (k * patch_size)**2) float32 in [0, 1]
    image_position_ids: np.ndarray  # (images, max_soft_tokens, 2) int64 (x, y) on the merged grid; (-1, -1) padding
    num_soft_tokens_per_image: list[int]


def resized_rgb(image, max_patches: int, patch_size: int, k: int) -> np.ndarray:
    """A Pillow image or (h, w, 3) uint8 array -> (h', w', 3) uint8 at the budget's size."""
    rgb = check_array(to_rgb(image) if isinstance(image, Image.Image) else image)
    height, width = rgb.shape[:2]
    h, w = target_size(height, width, patch_size, max_patches, k)
    if (h, w) != (height, width):
        rgb = np.array(Image.fromarray(rgb).resize((w, h), resample=Image.Resampling.BICUBIC))
    return rgb


def merged_patches(pixels: np.ndarray, patch_size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, h, w) float -> (merged patches (n, 3 * (k * patch_size)**2), their (x, y) (n, 2)):
    what `patches_merge` makes of the 16-pixel patches, cut directly at k * patch_size."""
    side = k * patch_size
    rows, cols = pixels.shape[1] // side, pixels.shape[2] // side
    return patchify(pixels, side), grid_positions(rows, cols)


def pad_rows(patches: np.ndarray, positions: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    pad = length - len(patches)
    return np.pad(patches, ((0, pad), (0, 0))), np.pad(positions, ((0, pad), (0, 0)), constant_values=PAD_POSITION)


def rescale(rgb: np.ndarray, video: bool = False) -> np.ndarray:
    """(h, w, 3) uint8 -> (3, h, w) float32 in [0, 1]: `x * (1 / 255)` for images, `x / 255` for video frames."""
    x = rgb.transpose(2, 0, 1).astype(np.float32)
    return x / VIDEO_PIXEL_STD if video else x * PIXEL_SCALE


def preprocess(images, max_soft_tokens: int = 280, patch_size: int = 16, pooling_kernel_size: int = 3,
               video: bool = False) -> UnifiedImageInputs:
    """Images (file paths, Pillow images or (h, w, 3) uint8 arrays) -> the unified model's inputs.
    `video`: the frames of a video (`Gemma4UnifiedVideoProcessor`: the same steps, pixels divided by 255)."""
    k = pooling_kernel_size
    pixels, positions, counts = [], [], []
    for im in image_list(images, max_soft_tokens):
        rgb = resized_rgb(im, max_soft_tokens * k**2, patch_size, k)
        pixels_01 = rescale(rgb, video)  # (3, h, w) in [0, 1]
        patches, pos = merged_patches(pixels_01, patch_size, k)
        counts.append(len(patches))
        patches, pos = pad_rows(patches, pos, max_soft_tokens)
        pixels.append(patches)
        positions.append(pos)
    return UnifiedImageInputs(np.stack(pixels), np.stack(positions), counts)
