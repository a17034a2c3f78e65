"""The unified model's eyes: no encoder, one embedder (mirrors `Gemma4UnifiedVisionEmbedder` and
`Gemma4UnifiedModel.get_image_features` / `get_video_features`).

Where Gemma 4's edge models run a SigLIP-style tower (16 layers of attention over 16-pixel
patches, then 3x3 pooling), the 12B model reads each merged 48 x 48-pixel patch (6912 raw values,
see `image.py`) as one soft token, through a handful of norms and two matrices:

    patch (6912,) -> LayerNorm -> Dense (mm_embed_dim) -> LayerNorm
                  -> + x-table[x] + y-table[y]          (factorised 2-D position, one table per axis)
                  -> LayerNorm -> RMSNorm (no scale) -> Linear (text hidden)

All of the "seeing" is left to the decoder, which attends over the image tokens bidirectionally.
The LayerNorms are `torch.nn.LayerNorm` with weight and bias at eps 1e-5 (not the config's RMS eps).
Padding patches (position (-1, -1)) are dropped before the text model sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..text.multimodal import EmbedderWeights, embed_soft_tokens, load_embedder
from ..text.ops import linear, no_tap
from ..weights.checkpoint import TensorSource
from .config import LAYER_NORM_EPS, UnifiedVisionConfig
from .image import UnifiedImageInputs, preprocess

# Checkpoint files (published, and as `save_pretrained` writes them through transformers'
# `conversion_mapping.py`) keep the original names; the reference's modules (and their
# `state_dict`) use the second set. Both load.
FILE_NAMES = {"patch": "model.vision_embedder", "projection": "model.embed_vision"}
MODULE_NAMES = {"patch": "model.embed_vision", "projection": "model.embed_vision.multimodal_embedder"}
PAD_POSITION = -1


@dataclass(frozen=True)
class LayerNormWeights:
    weight: np.ndarray  # (dim,)
    bias: np.ndarray  # (dim,)


@dataclass(frozen=True)
class VisionEmbedderWeights:
    patch_ln1: LayerNormWeights  # over the raw patch (patch_pixels,)
    patch_dense: np.ndarray  # (mm_embed_dim, patch_pixels)
    patch_dense_bias: np.ndarray  # (mm_embed_dim,)
    patch_ln2: LayerNormWeights
    pos_embedding: np.ndarray  # (mm_posemb_size, 2, mm_embed_dim): [:, 0] the x table, [:, 1] the y table
    pos_norm: LayerNormWeights
    embedder: EmbedderWeights  # RMSNorm (no scale) -> Linear into the text model


def load_layer_norm(ckpt: TensorSource, name: str, dim: int) -> LayerNormWeights:
    return LayerNormWeights(ckpt.f32(f"{name}.weight", (dim,)), ckpt.f32(f"{name}.bias", (dim,)))


def holds(ckpt: TensorSource, name: str) -> bool:
    """Whether a checkpoint has `name`; sources that make tensors on demand (random weights,
    shape recorders) hold every name, under the module names."""
    try:
        return name in ckpt
    except TypeError:
        return False


def load_vision_embedder(ckpt: TensorSource, cfg: UnifiedVisionConfig, text_hidden: int) -> VisionEmbedderWeights:
    names = FILE_NAMES if holds(ckpt, f"{FILE_NAMES['patch']}.pos_embedding") else MODULE_NAMES
    at, d, p = names["patch"], cfg.mm_embed_dim, cfg.patch_pixels
    return VisionEmbedderWeights(
        patch_ln1=load_layer_norm(ckpt, f"{at}.patch_ln1", p),
        patch_dense=ckpt.f32(f"{at}.patch_dense.weight", (d, p)),
        patch_dense_bias=ckpt.f32(f"{at}.patch_dense.bias", (d,)),
        patch_ln2=load_layer_norm(ckpt, f"{at}.patch_ln2", d),
        pos_embedding=ckpt.f32(f"{at}.pos_embedding", (cfg.mm_posemb_size, 2, d)),
        pos_norm=load_layer_norm(ckpt, f"{at}.pos_norm", d),
        embedder=load_embedder(ckpt, names["projection"], d, text_hidden),
    )


def layer_norm(x: np.ndarray, w: LayerNormWeights, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """Subtract the mean, divide by the standard deviation (biased), then scale and shift."""
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(variance + np.float32(eps)) * w.weight + w.bias


def position_embedding(positions: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(patches, 2) grid (x, y) -> x-table[x] + y-table[y]: (patches, mm_embed_dim)."""
    return table[positions[:, 0], 0] + table[positions[:, 1], 1]


def embed_patches(pixels: np.ndarray, positions: np.ndarray, w: VisionEmbedderWeights, cfg: UnifiedVisionConfig,
                  tap=no_tap) -> np.ndarray:
    """Real merged patches (patches, patch_pixels) at (x, y) (patches, 2) -> soft tokens (patches, text_hidden)."""
    h = layer_norm(pixels, w.patch_ln1)
    h = layer_norm(linear(h, w.patch_dense, w.patch_dense_bias), w.patch_ln2)
    tap("patch_embed", h)
    h = layer_norm(h + position_embedding(positions, w.pos_embedding), w.pos_norm)
    tap("out", h)  # the reference's `last_hidden_state`
    tokens = embed_soft_tokens(h, w.embedder, cfg.rms_norm_eps)
    tap("soft_tokens", tokens)
    return tokens


def check_patches(pixel_values, position_ids, cfg: UnifiedVisionConfig, names=("pixel_values", "image_position_ids")):
    """Shapes and positions as the processor emits them: (n, patches, patch_pixels) floats and
    (n, patches, 2) integers, each real position inside the position table."""
    pixels_name, positions_name = names
    if pixel_values is None or position_ids is None:
        missing = positions_name if pixel_values is not None else pixels_name
        raise InputError(f"{missing}: required (pass both {pixels_name} and {positions_name})")
    pixels = np.asarray(pixel_values)
    positions = np.asarray(position_ids)
    if pixels.ndim != 3 or pixels.shape[-1] != cfg.patch_pixels or not np.issubdtype(pixels.dtype, np.floating):
        raise InputError(
            f"{pixels_name}: expected floats of shape (n, patches, {cfg.patch_pixels}) (3 x merged patch side "
            f"{cfg.model_patch_size} squared), found {pixels.dtype} {pixels.shape}"
        )
    if positions.shape != pixels.shape[:2] + (2,) or not np.issubdtype(positions.dtype, np.integer):
        raise InputError(f"{positions_name}: expected integers of shape {pixels.shape[:2] + (2,)}, found {positions.dtype} {positions.shape}")
    real = np.all(positions != PAD_POSITION, axis=-1)
    bad = positions[real][(positions[real] < 0).any(-1) | (positions[real] >= cfg.mm_posemb_size).any(-1)]
    if len(bad):
        raise InputError(
            f"{positions_name}: position {bad[0].tolist()} outside the position table's [0, {cfg.mm_posemb_size}) "
            "(only (-1, -1) marks padding)"
        )
    if not np.all(np.isfinite(pixels)):
        raise InputError(f"{pixels_name}: found NaN or infinity")
    return pixels.astype(np.float32, copy=False), positions.astype(np.int64, copy=False), real


@dataclass(frozen=True)
class UnifiedVision:
    """What `Model.vision` holds for a unified checkpoint: the embedder, its config, and how
    images are preprocessed for it (`image.py`)."""

    config: UnifiedVisionConfig
    weights: VisionEmbedderWeights

    def encode(self, pixel_values, position_ids, tap=no_tap, names=("pixel_values", "image_position_ids")) -> np.ndarray:
        """Processor outputs (n, patches, ...) -> the soft tokens of every real patch, in order:
        (real patches, text_hidden). Padding (-1, -1) patches are dropped, as the reference does."""
        pixels, positions, real = check_patches(pixel_values, position_ids, self.config, names)
        return embed_patches(pixels[real], positions[real], self.weights, self.config, tap)

    def preprocess(self, images, max_soft_tokens: int, video: bool = False) -> UnifiedImageInputs:
        """Images (or a video's frames) preprocessed for this embedder (`image.py`)."""
        return preprocess(images, max_soft_tokens, self.config.patch_size, self.config.pooling_kernel_size, video)


def load_unified_vision(ckpt: TensorSource, cfg: UnifiedVisionConfig, text_hidden: int) -> UnifiedVision:
    return UnifiedVision(cfg, load_vision_embedder(ckpt, cfg, text_hidden))
