"""bf16 weights kept as stored: half the memory of float32, widened only while they are used.

Published Gemma 4 checkpoints are bfloat16. Widening every matrix to float32 at load doubles
the memory: E2B's ~2.6 G matrix values (its embedding table included) take 5.2 GB as stored and
10.4 GB widened. A bf16 value *is* the top half of a float32 (`checkpoint.bf16_to_f32`), so a
matrix can stay as its stored bits, a view of the memory-mapped file, and be widened block by
block while it multiplies: the float32 copy never exceeds one block of rows.

This NumPy version is the readable twin of `kernels/linear.py`, whose GEMV reads the bf16 bits
directly for the few rows of a decoding step. The NumPy backend itself widens at load (see
`kernels/__init__.py`): re-widening every matrix for every token would make decoding slower.
"""

from __future__ import annotations

import numpy as np

from .checkpoint import bf16_to_f32

BLOCK_ROWS = 1024  # weight rows widened at a time: 1024 x 1536 floats = 6 MB of float32


def bf16_linear(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """x (n, in) float32, bits (out, in) bf16 as uint16 -> x @ widened(bits).T, (n, out) float32."""
    out = np.empty((x.shape[0], bits.shape[0]), np.float32)
    for r0 in range(0, bits.shape[0], BLOCK_ROWS):
        block = bf16_to_f32(bits[r0 : r0 + BLOCK_ROWS])  # (rows, in): the only float32 copy
        out[:, r0 : r0 + BLOCK_ROWS] = x @ block.T
    return out
