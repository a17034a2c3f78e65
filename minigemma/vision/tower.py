"""Gemma 4's image encoder: patches in, soft tokens out (mirrors `Gemma4VisionModel`,
`Gemma4VisionPatchEmbedder`, `Gemma4VisionPooler`, and the image half of
`Gemma4Model.get_image_features`).

    patches (from image.py)           (patches, 3 * patch_size**2), pixels in [0, 1]
    -> 2 * (p - 0.5) @ W_in           linear patch embedding, pixels mapped to [-1, 1]
       + x_table[x] + y_table[y]      learned 2-D position: one table per axis, added
    -> encoder layers                 bidirectional, axial 2-D RoPE (vision_encoder.py)
    -> k x k average pooling          3x3 patches -> one soft token, by grid position
       * sqrt(hidden)
    -> (x - std_bias) * std_scale     "standardize", when the checkpoint has it
    -> embedder                       RMSNorm without scale, projection to the text width

Pooling is what makes images cheap for the language model: a 3x3 block of 16-pixel patches
(48x48 pixels) becomes one token, so a 280-token budget covers about 2520 patches.

The reference pads every image to the full patch budget and masks the padding; we encode each
image's real patches only, which gives the same soft tokens (see `vision_encoder.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights.checkpoint import TensorSource
from ..errors import InputError
from .image import grid_positions
from ..text.multimodal import EmbedderWeights, embed_soft_tokens, load_embedder
from ..text.ops import linear, no_tap
from .config import VisionConfig, vision_config_from_dict
from .encoder import VisionLayerWeights, load_vision_layer, vision_encoder

PAD_POSITION = -1  # grid position (x, y) = (-1, -1) marks a padding patch
PIXEL_CENTER = 0.5  # pixels in [0, 1] are centred and doubled into [-1, 1]
TOWER_PREFIX, EMBEDDER_PREFIX = "model.vision_tower", "model.embed_vision"  # `Gemma4ForConditionalGeneration`


@dataclass(frozen=True)
class VisionWeights:
    input_proj: np.ndarray  # (hidden, 3 * patch_size**2)
    position_table: np.ndarray  # (2, position_embedding_size, hidden): x table, y table
    layers: tuple[VisionLayerWeights, ...]
    std_bias: np.ndarray | None  # (hidden,), with `standardize`
    std_scale: np.ndarray | None
    embedder: EmbedderWeights  # into the text model's space


def load_vision(ckpt: TensorSource, tower: str, embedder: str, cfg: VisionConfig, text_hidden: int) -> VisionWeights:
    """`tower`: the vision model's prefix (`model.vision_tower`); `embedder`: `model.embed_vision`."""
    h = cfg.hidden_size
    std = cfg.standardize
    return VisionWeights(
        input_proj=ckpt.f32(f"{tower}.patch_embedder.input_proj.weight", (h, cfg.patch_pixels)),
        position_table=ckpt.f32(f"{tower}.patch_embedder.position_embedding_table", (2, cfg.position_embedding_size, h)),
        layers=tuple(load_vision_layer(ckpt, f"{tower}.encoder.layers.{i}", cfg) for i in range(cfg.num_hidden_layers)),
        std_bias=ckpt.f32(f"{tower}.std_bias", (h,)) if std else None,
        std_scale=ckpt.f32(f"{tower}.std_scale", (h,)) if std else None,
        embedder=load_embedder(ckpt, embedder, h, text_hidden),
    )


@dataclass(frozen=True)
class VisionTower:
    config: VisionConfig
    weights: VisionWeights


def load_vision_tower(ckpt: TensorSource, raw_config: dict, text_hidden: int) -> VisionTower:
    """The vision tower of a checkpoint whose config.json has a `vision_config`."""
    cfg = vision_config_from_dict(raw_config)
    return VisionTower(cfg, load_vision(ckpt, TOWER_PREFIX, EMBEDDER_PREFIX, cfg, text_hidden))


def embed_patches(pixels: np.ndarray, positions: np.ndarray, w: VisionWeights) -> np.ndarray:
    """Real patches (patches, 3 * patch_size**2) at grid positions (patches, 2) -> (patches, hidden)."""
    x = linear(2 * (pixels - np.float32(PIXEL_CENTER)), w.input_proj)
    return x + (w.position_table[0][positions[:, 0]] + w.position_table[1][positions[:, 1]])


def pool(h: np.ndarray, rows: int, cols: int, k: int) -> np.ndarray:
    """Average each k x k block of the patch grid into one soft token, scaled by sqrt(hidden).

    h: (rows * cols, hidden), patches row by row -> (rows/k * cols/k, hidden), tokens row by row."""
    hidden = h.shape[1]
    blocks = h.reshape(rows // k, k, cols // k, k, hidden)  # (block row, row in block, block col, col in block)
    return blocks.mean(axis=(1, 3)).reshape(-1, hidden) * np.float32(hidden**0.5)


def encode_image(pixels: np.ndarray, positions: np.ndarray, w: VisionWeights, cfg: VisionConfig, tap=no_tap) -> np.ndarray:
    """One image's real patches, row by row -> its soft tokens in the text model's space (tokens, text_hidden)."""
    h = embed_patches(pixels, positions, w)
    tap("vision.patch_embed", h)
    h = vision_encoder(h, positions, w.layers, cfg, tap)
    cols, rows = positions[-1] + 1  # patches come row by row: the last is the bottom-right one
    tokens = pool(h, rows, cols, cfg.pooling_kernel_size)
    tap("vision.pooled", tokens)
    if cfg.standardize:
        tokens = (tokens - w.std_bias) * w.std_scale
    tap("vision.out", tokens)
    tokens = embed_soft_tokens(tokens, w.embedder, cfg.rms_norm_eps)
    tap("vision.soft_tokens", tokens)
    return tokens


def encode_images(pixel_values, image_position_ids, w: VisionWeights, cfg: VisionConfig, tap=no_tap) -> np.ndarray:
    """Processor outputs (images, max_patches, ...) -> every image's soft tokens, in order:
    (total soft tokens, text_hidden). A named step's values of all images are tapped once,
    one image after another on axis 0."""
    pixels, positions = check_image_inputs(pixel_values, image_position_ids, cfg)
    tokens, named = [], {}

    def collect(name, value):
        named.setdefault(name, []).append(value)

    for img_pixels, img_positions in zip(pixels, positions):
        real = np.any(img_positions != PAD_POSITION, axis=-1)
        tokens.append(encode_image(img_pixels[real], img_positions[real], w, cfg, collect))
    for name, values in named.items():
        tap(name, np.concatenate(values))
    return np.concatenate(tokens)


def check_image_inputs(pixel_values, image_position_ids, cfg: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Validate what the processor would emit: shapes, and for each image a complete patch grid
    whose sides are multiples of the pooling kernel and fit the position tables, in row order."""
    if pixel_values is None or image_position_ids is None:
        missing = "image_position_ids" if pixel_values is not None else "pixel_values"
        raise InputError(f"{missing}: required with images (pass both pixel_values and image_position_ids)")
    pixels = np.asarray(pixel_values)
    positions = np.asarray(image_position_ids)
    if pixels.ndim != 3 or pixels.shape[-1] != cfg.patch_pixels or not np.issubdtype(pixels.dtype, np.floating):
        raise InputError(
            f"pixel_values: expected floats of shape (images, patches, {cfg.patch_pixels}) "
            f"(3 * patch_size {cfg.patch_size} ** 2), found {pixels.dtype} {pixels.shape}"
        )
    if positions.shape != pixels.shape[:2] + (2,) or not np.issubdtype(positions.dtype, np.integer):
        raise InputError(f"image_position_ids: expected integers of shape {pixels.shape[:2] + (2,)}, found {positions.dtype} {positions.shape}")
    for i, pos in enumerate(positions):
        check_grid(pos, cfg, f"image_position_ids[{i}]")
    return pixels.astype(np.float32, copy=False), positions.astype(np.int64, copy=False)


def check_grid(positions: np.ndarray, cfg: VisionConfig, name: str) -> None:
    k = cfg.pooling_kernel_size
    pad = np.all(positions == PAD_POSITION, axis=-1)
    real = positions[~pad]
    if len(real) == 0:
        raise InputError(f"{name}: no real patches (every position is the padding (-1, -1))")
    if real.min() < 0:
        raise InputError(f"{name}: negative grid position {real[real.min(axis=1) < 0][0].tolist()}; only (-1, -1) marks padding")
    cols, rows = real.max(axis=0) + 1
    if rows < k or cols < k:
        raise InputError(
            f"{name}: a {rows} x {cols} patch grid is smaller than one pooled {k} x {k} block "
            f"(each soft token pools {k} x {k} patches)"
        )
    if rows % k or cols % k:
        raise InputError(f"{name}: a {rows} x {cols} patch grid; both sides must be multiples of the pooling kernel {k}")
    if max(rows, cols) > cfg.position_embedding_size:
        raise InputError(
            f"{name}: the image is {cols} x {rows} patches, but this model reads at most {cfg.position_embedding_size} "
            "patches a side; give a less elongated image, or fewer soft tokens (--max-soft-tokens)"
        )
    if len(real) != rows * cols or np.any(real != grid_positions(rows, cols)):
        raise InputError(
            f"{name}: the {len(real)} real patches must cover the {rows} x {cols} grid row by row, "
            "as the image processor emits them"
        )
