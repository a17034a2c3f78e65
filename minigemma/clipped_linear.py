"""Clipped linear layers (mirrors `Gemma4ClippableLinear`), shared by the vision and audio towers.

A linear layer whose input and output are clamped to ranges stored in the checkpoint:

    y = clamp(clamp(x, input_min, input_max) @ W.T, output_min, output_max)

The encoders were trained with these bounds (quantisation-friendly activation ranges), so the
released weights only behave as trained when the same clamps are applied. With
`use_clipped_linears` off the layer is a plain bias-free linear and the checkpoint has no bounds.
The weight lives under `{prefix}.linear.weight`, the four bounds are scalars beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checkpoint import TensorSource
from .ops import linear

BOUNDS = ("input_min", "input_max", "output_min", "output_max")


@dataclass(frozen=True)
class ClippedLinearWeights:
    weight: np.ndarray  # (out_features, in_features)
    bounds: tuple[np.float32, np.float32, np.float32, np.float32] | None  # BOUNDS order; None: no clipping


def load_clipped_linear(ckpt: TensorSource, prefix: str, in_features: int, out_features: int, clipped: bool) -> ClippedLinearWeights:
    weight = ckpt.f32(f"{prefix}.linear.weight", (out_features, in_features))
    bounds = tuple(np.float32(ckpt.f32(f"{prefix}.{b}", ())) for b in BOUNDS) if clipped else None
    return ClippedLinearWeights(weight, bounds)


def clamp(x: np.ndarray, lo, hi) -> np.ndarray:
    """`torch.clamp`: max first, then min, so that lo > hi gives hi everywhere, as torch does."""
    return np.minimum(np.maximum(x, lo), hi)


def clipped_linear(x: np.ndarray, w: ClippedLinearWeights) -> np.ndarray:
    """(..., in_features) -> (..., out_features), input and output clamped to the stored ranges."""
    if w.bounds is None:
        return linear(x, w.weight)
    in_min, in_max, out_min, out_max = w.bounds
    return clamp(linear(clamp(x, in_min, in_max), w.weight), out_min, out_max)
