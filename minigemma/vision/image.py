"""Image preprocessing: a picture in, patches and their grid positions out (mirrors
`Gemma4ImageProcessorPil`, `image_processing_pil_gemma4.py`).

Gemma 4 keeps an image's aspect ratio instead of squashing it into a square. With a budget of
`max_soft_tokens` (70, 140, 280, 560 or 1120) and `k x k` pooling, the encoder may see at most
`max_soft_tokens * k**2` patches of `patch_size**2` pixels, so:

1. resize (bicubic, Pillow) to the largest size of the same aspect ratio whose patch count fits
   the budget and whose sides are multiples of `k * patch_size` (so the patch grid pools evenly);
2. rescale pixels from [0, 255] to [0, 1] (no mean/std normalisation: the encoder's patch
   embedder maps them to [-1, 1] itself);
3. cut into patches, row by row, each patch flattened as (row, column, channel);
4. give each patch its (x, y) grid position, and pad to the full budget with zero patches at
   position (-1, -1), so a batch of images of different shapes stacks into one array.

The image yields `(patch rows / k) * (patch columns / k)` soft tokens: `num_soft_tokens_per_image`,
the number of `<|image|>` placeholders its prompt needs.

Pillow is a runtime dependency of minigemma: it decodes the files (JPEG, PNG, WebP, ...), and its
bicubic resize is the one the reference uses, so pixels agree exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

SUPPORTED_SOFT_TOKENS = (70, 140, 280, 560, 1120)
DEFAULT_SOFT_TOKENS = 280
PATCH_SIZE = 16
POOLING_KERNEL_SIZE = 3
PIXEL_SCALE = 1 / 255  # uint8 -> [0, 1]
PAD_POSITION = -1  # (x, y) of padding patches
WHITE = (255, 255, 255, 255)  # transparent pixels are composited onto white


@dataclass(frozen=True)
class ImageInputs:
    """What the encoder takes, named and shaped as the Hugging Face processor emits them."""

    pixel_values: np.ndarray  # (images, max_patches, 3 * patch_size**2) float32 in [0, 1]
    image_position_ids: np.ndarray  # (images, max_patches, 2) int64 (x, y); (-1, -1) = padding
    num_soft_tokens_per_image: list[int]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file, or raise an InputError naming it."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            return im
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{os.fspath(path)}: cannot read an image from this file ({e})") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> (height, width, 3) uint8; transparency is composited onto white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba)
    return np.array(image.convert("RGB"))


def target_size(height: int, width: int, patch_size: int, max_patches: int, k: int) -> tuple[int, int]:
    """The largest (height, width) of about the same aspect ratio with at most `max_patches`
    patches and both sides multiples of `k * patch_size` (`get_aspect_ratio_preserving_size`)."""
    side = k * patch_size
    factor = math.sqrt(max_patches * patch_size**2 / (height * width))  # area scale to fill the budget
    h, w = math.floor(factor * height / side) * side, math.floor(factor * width / side) * side
    # A very thin image rounds its short side to 0: give it one pooled row, and as many pooled
    # columns as its aspect ratio asks, at most the whole budget in one row.
    longest = (max_patches // k**2) * side
    if h == 0:
        h, w = side, min(math.floor(width / height) * side, longest)
    elif w == 0:
        h, w = min(math.floor(height / width) * side, longest), side
    return h, w


def patchify(image: np.ndarray, patch_size: int) -> np.ndarray:
    """(channels, height, width) -> (patches, patch_size * patch_size * channels), patches row by
    row, each flattened as (pixel row, pixel column, channel)."""
    c, h, w = image.shape
    grid = image.reshape(c, h // patch_size, patch_size, w // patch_size, patch_size)
    return grid.transpose(1, 3, 2, 4, 0).reshape((h // patch_size) * (w // patch_size), -1)


def grid_positions(rows: int, cols: int) -> np.ndarray:
    """(x, y) of each patch of a rows x cols grid, row by row: (rows * cols, 2) int64."""
    y, x = np.divmod(np.arange(rows * cols), cols)
    return np.stack([x, y], axis=-1).astype(np.int64)


def preprocess_one(image, max_patches: int, patch_size: int, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One image -> (padded patches, padded positions, soft-token count)."""
    rgb = check_array(to_rgb(image) if isinstance(image, Image.Image) else image)
    height, width = rgb.shape[:2]
    h, w = target_size(height, width, patch_size, max_patches, k)
    if (h, w) != (height, width):
        rgb = np.array(Image.fromarray(rgb).resize((w, h), resample=Image.Resampling.BICUBIC))
    pixels = (rgb.astype(np.float64) * PIXEL_SCALE).astype(np.float32).transpose(2, 0, 1)  # (3, h, w)
    patches = patchify(pixels, patch_size)  # (rows * cols, 3 * patch_size**2)
    positions = grid_positions(h // patch_size, w // patch_size)
    soft_tokens = len(patches) // k**2
    pad = max_patches - len(patches)
    patches = np.pad(patches, ((0, pad), (0, 0)))
    positions = np.pad(positions, ((0, pad), (0, 0)), constant_values=PAD_POSITION)
    return patches, positions, soft_tokens


def check_array(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"image: expected a Pillow image or a (height, width, 3) uint8 array, found {arr.dtype} {arr.shape}")
    if arr.size == 0:
        raise InputError(f"image: expected at least one pixel, found an empty image of shape {arr.shape}")
    return arr


def image_list(images, max_soft_tokens: int) -> list:
    """One image or several (paths loaded, Pillow images and arrays as given) -> a non-empty list,
    after checking `max_soft_tokens` is a size the processor supports."""
    if max_soft_tokens not in SUPPORTED_SOFT_TOKENS:
        raise InputError(f"max_soft_tokens: expected one of {SUPPORTED_SOFT_TOKENS}, found {max_soft_tokens!r}")
    if isinstance(images, str | os.PathLike | Image.Image | np.ndarray):
        images = [images]
    if len(images) == 0:
        raise InputError("images: expected at least one image, found none")
    return [load_image(im) if isinstance(im, str | os.PathLike) else im for im in images]


def preprocess(
    images,
    max_soft_tokens: int = DEFAULT_SOFT_TOKENS,
    patch_size: int = PATCH_SIZE,
    pooling_kernel_size: int = POOLING_KERNEL_SIZE,
) -> ImageInputs:
    """Images (file paths, Pillow images or (h, w, 3) uint8 arrays) -> encoder inputs."""
    max_patches = max_soft_tokens * pooling_kernel_size**2
    done = [preprocess_one(im, max_patches, patch_size, pooling_kernel_size) for im in image_list(images, max_soft_tokens)]
    return ImageInputs(
        pixel_values=np.stack([p for p, _, _ in done]),
        image_position_ids=np.stack([q for _, q, _ in done]),
        num_soft_tokens_per_image=[n for _, _, n in done],
    )
