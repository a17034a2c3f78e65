"""The "K-quants": 256-value super-blocks whose sub-blocks carry their own small scales.

What Q4_K_M / Q5_K_M / Q6_K files mostly hold. One float16 scale for 32 values (Q4_0) costs half a
bit a weight; a K-quant spends one or two float16s on 256 values and gives each sub-block of 32
(or 16) a 6-bit (or 8-bit) scale relative to them: finer scales for about the same bytes, and a
minimum per sub-block (Q4_K, Q5_K) so that a sub-block whose values are all positive wastes no
levels. Layouts as in llama.cpp's `ggml-common.h` (`block_q4_K`, `block_q5_K`, `block_q6_K`);
the interface and the 32-value formats are in `quants.py`.
"""

from __future__ import annotations

import numpy as np

from .quants_blocks import half, nibbles

SUPER = 256  # values in a super-block (llama.cpp's QK_K)


def scales_and_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K's 8 six-bit scales and 8 six-bit mins, packed in 12 bytes (rows, blocks, 12):

        byte   0..3    sc[0..3] in bits 0-5;  bits 6-7: the top two bits of sc[4..7]
        byte   4..7     m[0..3] in bits 0-5;  bits 6-7: the top two bits of  m[4..7]
        byte  8..11    low nibble: the low four bits of sc[4..7]; high nibble: of m[4..7]

    -> scales, mins: (rows, blocks, 8) float32, 0..63."""
    lo, mid, hi = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = np.concatenate([lo & 0x3F, (hi & 0x0F) | ((lo >> 2) & 0x30)], axis=-1)
    m = np.concatenate([mid & 0x3F, (hi >> 4) | ((mid >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), m.astype(np.float32)


def sub_blocks_of_32(qs: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K's 128 bytes of nibbles -> (rows, blocks, 8, 32) values 0..15: byte l of 32-byte
    chunk c holds value l of sub-block 2c in its low nibble, of sub-block 2c + 1 in its high."""
    rows, blocks = qs.shape[:2]
    return nibbles(qs.reshape(rows, blocks, 4, 32)).reshape(rows, blocks, 8, 32)


def q4_k(blocks):
    """Q4_K, 144 bytes for 256 values in 8 sub-blocks of 32; in sub-block i,
    value = (d * sc[i]) * q - (dmin * m[i]), q 0..15.

        byte  0      2      4               16                                  144
              | d    | dmin | scales, mins  | qs: 4 chunks of 32 bytes            |
                f16    f16    8 + 8 six-bit   chunk c: sub-block 2c low nibbles,
                              (scales_and_mins)        sub-block 2c+1 high nibbles
    """
    d, dmin = half(blocks, 0)[..., None], half(blocks, 2)[..., None]  # (rows, blocks, 1, 1)
    sc, m = scales_and_mins(blocks[..., 4:16])
    q = sub_blocks_of_32(blocks[..., 16:144]).astype(np.float32)  # (rows, blocks, 8, 32)
    return ((d * sc[..., None]) * q - dmin * m[..., None]).reshape(*blocks.shape[:2], SUPER)


def q5_k(blocks):
    """Q5_K, 176 bytes for 256 values; as Q4_K with a fifth bit per value, q 0..31.

        byte  0      2      4               16                48                  176
              | d    | dmin | scales, mins  | qh (32 bytes)   | qs (as in Q4_K)    |
                                              bit i of qh[l]: the fifth bit of value l
                                              of sub-block i
    """
    d, dmin = half(blocks, 0)[..., None], half(blocks, 2)[..., None]
    sc, m = scales_and_mins(blocks[..., 4:16])
    low = sub_blocks_of_32(blocks[..., 48:176])  # (rows, blocks, 8, 32)
    qh = blocks[..., 16:48]  # (rows, blocks, 32)
    high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # (rows, blocks, 8, 32)
    q = (low | (high << 4)).astype(np.float32)
    return ((d * sc[..., None]) * q - dmin * m[..., None]).reshape(*blocks.shape[:2], SUPER)


def q6_k(blocks):
    """Q6_K, 210 bytes for 256 values in 16 sub-blocks of 16; in sub-block i,
    value = (d * sc[i]) * (q - 32), q a 6-bit 0..63 split in a low nibble and two high bits.

        byte  0                  128              192               208    210
              | ql (128 bytes)   | qh (64 bytes)  | sc[0..15] int8  | d    |
                                                                     f16 (at the end)

    The block is two halves of 128 values; half h uses ql[64h : 64h + 64] and qh[32h : 32h + 32]:
        value 128h + l       (l < 64): low nibble  of ql[64h + l]
        value 128h + 64 + l  (l < 64): high nibble of ql[64h + l]
        value 128h + 32k + l (k < 4, l < 32): high two bits = bits 2k, 2k+1 of qh[32h + l]
    """
    rows, n = blocks.shape[:2]
    ql = blocks[..., 0:128].reshape(rows, n, 2, 64)
    qh = blocks[..., 128:192].reshape(rows, n, 2, 1, 32)
    low = nibbles(ql)  # (rows, n, 2, 128)
    high = (qh >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3  # (rows, n, 2, 4, 32)
    q = (low | (high.reshape(rows, n, 2, 128) << 4)).astype(np.int8) - np.int8(32)
    sc = blocks[..., 192:208].view(np.int8).astype(np.float32)  # (rows, n, 16)
    d = half(blocks, 208)  # (rows, n, 1)
    scale = (d * sc)[..., None]  # (rows, n, 16, 1)
    return (scale * q.reshape(rows, n, 16, 16).astype(np.float32)).reshape(rows, n, SUPER)


K_QUANTS = {"Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}
