"""The plain floats and the 32-value block formats of GGUF (the interface is `quants.py`).

Each dequantizer takes the blocks of a matrix as bytes (rows, blocks, block_bytes) and returns
their values (rows, blocks, 32) as float32, drawn and computed as in llama.cpp's `ggml-common.h`
/ `ggml-quants.c` (and the `gguf` package, bit for bit).
"""

from __future__ import annotations

import numpy as np


# --- the plain floats -------------------------------------------------------------------------


def f32(raw):
    return raw.view("<f4").copy()


def f16(raw):
    return raw.view("<f2").astype(np.float32)


def bf16(raw):
    """bfloat16 is the top half of a float32: put the 16 bits back on top."""
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


FLOATS = {"F32": f32, "F16": f16, "BF16": bf16}


# --- helpers for the block fields -------------------------------------------------------------


def half(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The float16 at byte `offset` of every block, as float32: (rows, blocks, 1)."""
    return np.ascontiguousarray(blocks[..., offset : offset + 2]).view("<f2").astype(np.float32)


def nibbles(qs: np.ndarray) -> np.ndarray:
    """Packed 4-bit values, two to a byte: (..., n) bytes -> (..., 2n) values 0..15, all the low
    nibbles first, then all the high ones (value j in byte j's low half, value n+j in its high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def high_bits(qh: np.ndarray) -> np.ndarray:
    """Q5_0 / Q5_1's fifth bits: a little-endian 32-bit word (rows, blocks, 4 bytes) whose bit j
    belongs to value j -> (rows, blocks, 32) of 0 or 1."""
    word = np.ascontiguousarray(qh).view("<u4")  # (rows, blocks, 1)
    return ((word >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


# --- the 32-value blocks ----------------------------------------------------------------------


def q8_0(blocks):
    """Q8_0, 34 bytes for 32 values; value = d * q.

        byte  0      2                                                 34
              | d    | q[0] q[1] ...                           q[31] |
                f16    int8
    """
    d = half(blocks, 0)
    q = blocks[..., 2:].view(np.int8).astype(np.float32)
    return q * d


def q4_0(blocks):
    """Q4_0, 18 bytes for 32 values; value = d * (q - 8), q a 4-bit 0..15.

        byte  0      2                                   18
              | d    | qs[0] qs[1] ...            qs[15] |
                f16    byte j = q[j] in its low nibble, q[j + 16] in its high one
    """
    d = half(blocks, 0)
    q = nibbles(blocks[..., 2:]).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def q4_1(blocks):
    """Q4_1, 20 bytes for 32 values; value = d * q + m (a scale and a minimum, q 0..15).

        byte  0      2      4                            20
              | d    | m    | qs[0] ...           qs[15] |
                f16    f16    packed as in Q4_0
    """
    d, m = half(blocks, 0), half(blocks, 2)
    q = nibbles(blocks[..., 4:]).astype(np.float32)
    return d * q + m


def q5_0(blocks):
    """Q5_0, 22 bytes for 32 values; value = d * (q - 16), q a 5-bit 0..31 whose low four bits
    are packed as in Q4_0 and whose fifth is bit j of a 32-bit word.

        byte  0      2                  6                            22
              | d    | qh (uint32)      | qs[0] ...           qs[15] |
                f16    bit j: q[j] >> 4   low nibbles as in Q4_0
    """
    d = half(blocks, 0)
    q = nibbles(blocks[..., 6:]) | (high_bits(blocks[..., 2:6]) << 4)
    return d * (q.astype(np.int8) - np.int8(16)).astype(np.float32)


def q5_1(blocks):
    """Q5_1, 24 bytes for 32 values; value = d * q + m, q 0..31 packed as in Q5_0.

        byte  0      2      4                  8                     24
              | d    | m    | qh (uint32)      | qs[0] ...    qs[15] |
    """
    d, m = half(blocks, 0), half(blocks, 2)
    q = nibbles(blocks[..., 8:]) | (high_bits(blocks[..., 4:8]) << 4)
    return d * q.astype(np.float32) + m


BLOCKS = {"Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1}
