"""Clipped linear layers of the vision and audio encoders (mirrors `Gemma4ClippableLinear`).

    y = clip(clip(x, input_min, input_max) @ W.T, output_min, output_max)

Gemma 4's encoders were trained for quantized deployment: each projection carries four scalar
bounds, learned from the activation ranges seen in training, and clamps what goes in and what
comes out. A checkpoint with `use_clipped_linears` stores them beside the weight
(`{prefix}.linear.weight`, `{prefix}.input_min`, ...); without it the layer is a plain,
bias-free linear whose weight still lives under `{prefix}.linear.weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights.checkpoint import TensorSource
from ..text.ops import linear

BOUNDS = ("input_min", "input_max", "output_min", "output_max")


@dataclass(frozen=True)
class ClippedLinearWeights:
    weight: np.ndarray  # (out_features, in_features)
    bounds: tuple[np.float32, np.float32, np.float32, np.float32] | None  # BOUNDS order; None: no clipping


def load_clipped_linear(
    ckpt: TensorSource, prefix: str, in_features: int, out_features: int, clipped: bool
) -> ClippedLinearWeights:
    weight = ckpt.f32(f"{prefix}.linear.weight", (out_features, in_features))
    bounds = tuple(np.float32(ckpt.f32(f"{prefix}.{b}", ())) for b in BOUNDS) if clipped else None
    return ClippedLinearWeights(weight, bounds)


def clipped_linear(x: np.ndarray, w: ClippedLinearWeights) -> np.ndarray:
    """(..., in_features) -> (..., out_features), clamping input and output when bounds are set."""
    if w.bounds is None:
        return linear(x, w.weight)
    in_min, in_max, out_min, out_max = w.bounds
    return np.clip(linear(np.clip(x, in_min, in_max), w.weight), out_min, out_max)
