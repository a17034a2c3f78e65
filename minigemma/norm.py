"""RMSNorm, with and without a learned scale (mirrors `Gemma4RMSNorm`).

RMSNorm divides a vector by its root-mean-square: `x / sqrt(mean(x**2) + eps)`. Unlike LayerNorm
it does not subtract the mean, which is cheaper and works as well. Gemma 4 uses it everywhere:
four times per decoder layer, on queries and keys (and, without a scale, on values), in the MoE
router, on Per-Layer Embeddings and at the end of the model.

Gemma 4's scale is applied as `x_normed * w`. (Gemma 2 and 3 stored `w - 1` and multiplied by
`1 + w`; Gemma 4 does not: a subtle offset to get wrong when porting.)
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """Normalise the last axis of `x` to unit RMS, then scale by `weight` (None: no scale)."""
    mean_square = np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)
    normed = x * mean_square ** np.float32(-0.5)
    return normed if weight is None else normed * weight
