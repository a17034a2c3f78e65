"""Rotary position embeddings, and Gemma 4's *dual* RoPE.

RoPE encodes a token's position by rotating pairs of query/key dimensions by an angle that grows
with the position: pair `i` turns at frequency `theta ** (-2i / head_dim)`. The dot product of a
rotated query and key then depends only on their *distance*, which is what attention should see.

Gemma 4 uses two flavours at once (mirrors `Gemma4TextRotaryEmbedding` and
`modeling_rope_utils._compute_proportional_rope_parameters`):

* sliding-window layers: `default` RoPE, theta 10k, every pair rotates. They only look 512 tokens
  back, so fast-turning, precise position information is what they need;
* global layers: `proportional` RoPE, theta 1M, and only the first `partial_rotary_factor`
  (a quarter) of the pairs rotate; the rest get frequency 0 and carry pure content. This "pruned"
  RoPE is what lets the global layers reach 128K-256K tokens without position noise.

Note the proportional frequencies keep the exponent's denominator at the full `head_dim`: the
rotated pairs are exactly the first pairs of a default RoPE of the same size, not a squeezed one.

Pairs are (i, i + head_dim/2), the "rotate half" convention of the reference.
"""

from __future__ import annotations

import numpy as np

from .config import RopeParams


def inverse_frequencies(params: RopeParams, head_dim: int) -> np.ndarray:
    """Angular frequency of each of the `head_dim // 2` dim pairs, float32."""
    if params.rope_type == "proportional":
        rotated = int(params.partial_rotary_factor * head_dim // 2)  # pairs that turn
    else:
        rotated = head_dim // 2
    exponents = np.arange(0, 2 * rotated, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = np.float32(1.0) / np.float32(params.theta) ** exponents
    inv_freq = np.concatenate([inv_freq, np.zeros(head_dim // 2 - rotated, np.float32)])  # the rest: no rotation
    return inv_freq / np.float32(params.factor)


def rope_tables(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of every (position, pair) angle, laid out for rotate-half: (seq, head_dim)."""
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # (seq, head_dim / 2)
    angles = np.concatenate([angles, angles], axis=-1)  # (seq, head_dim)
    return np.cos(angles), np.sin(angles)


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate `x` (seq, heads, head_dim) by the angles of its positions (cos/sin: (seq, head_dim))."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]
