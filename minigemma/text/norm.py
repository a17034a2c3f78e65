"""RMSNorm, with and without a learned scale (mirrors `Gemma4RMSNorm`).

RMSNorm divides a vector by its root-mean-square: `x / sqrt(mean(x**2) + eps)`. Unlike LayerNorm
it does not subtract the mean, which is cheaper and works as well. Gemma 4 uses it everywhere:
four times per decoder layer, on queries and keys (and, without a scale, on values), in the MoE
router, on Per-Layer Embeddings and at the end of the model.

Gemma 4's scale is applied as `x_normed * w`. Gemma 1-3 store the scale centred on 0 and apply
`x_normed * (1 + w)` (so a freshly initialised zero weight is the identity); Gemma 4 does not: a
subtle offset to get wrong when porting. minigemma adds the offset (`TextConfig.norm_offset`) once,
when the weight is loaded (`norm_weight`), computing `1 + w` in float32 exactly as the reference
does, so `rms_norm` itself is the same for both.
"""

from __future__ import annotations

import numpy as np


def norm_weight(stored: np.ndarray, offset: float) -> np.ndarray:
    """The scale an RMSNorm multiplies by: `offset + w` (Gemma 3: offset 1; Gemma 4: 0, `w` as stored)."""
    return np.float32(offset) + stored if offset else stored


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """Normalise the last axis of `x` to unit RMS, then scale by `weight` (None: no scale)."""
    # the sum divided by the count is np.mean's own arithmetic (same bits), without its Python
    # wrapper: ~6 us a call, and a decoding step of a small model makes dozens of calls
    mean_square = np.add.reduce(x * x, axis=-1, keepdims=True) / np.float32(x.shape[-1]) + np.float32(eps)
    normed = x * mean_square ** np.float32(-0.5)
    return normed if weight is None else normed * weight
