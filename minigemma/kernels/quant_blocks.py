"""One GGUF block -> float32 values, in Numba: the jitted twins of `weights/quants*.py`.

Each `block_*` decodes the block that starts at byte `o` of a row into `out[k : k + block]`,
exactly as the NumPy dequantizer draws it (same operations in the same order: compiled without
fast-math they give the same bits). They are inlined into the kernels of `kernels/quant.py`:
into a GEMV that decodes a block into a small buffer and dots it with x, and into the prefill's
block-of-rows dequantization. `decode` picks one by type id; the kernels are compiled per type,
so that choice is made once, at compile time.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..weights.quants import TYPE_IDS

F32, F16, BF16 = (TYPE_IDS[n] for n in ("F32", "F16", "BF16"))
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (TYPE_IDS[n] for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
Q4_K, Q5_K, Q6_K = (TYPE_IDS[n] for n in ("Q4_K", "Q5_K", "Q6_K"))
# float16 bits -> float32, all 65536 of them (256 KB, stays in cache): the scales of every block
F16_TABLE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(cache=True, inline="always")
def _half(row, o, f16):
    """The little-endian float16 at byte o, looked up as float32."""
    return f16[np.int64(row[o]) | (np.int64(row[o + 1]) << 8)]


@njit(cache=True, inline="always")
def _nibble_lo(q):
    return np.int32(q & np.uint8(15))


@njit(cache=True, inline="always")
def _nibble_hi(q):
    return np.int32(q >> np.uint8(4))


@njit(cache=True, inline="always")
def block_q8_0(row, o, f16, out, k):
    d = _half(row, o, f16)
    for j in range(32):
        out[k + j] = np.float32(np.int8(row[o + 2 + j])) * d


@njit(cache=True, inline="always")
def block_q4_0(row, o, f16, out, k):
    d = _half(row, o, f16)
    for j in range(16):
        q = row[o + 2 + j]
        out[k + j] = d * np.float32(_nibble_lo(q) - 8)
        out[k + 16 + j] = d * np.float32(_nibble_hi(q) - 8)


@njit(cache=True, inline="always")
def block_q4_1(row, o, f16, out, k):
    d, m = _half(row, o, f16), _half(row, o + 2, f16)
    for j in range(16):
        q = row[o + 4 + j]
        out[k + j] = d * np.float32(_nibble_lo(q)) + m
        out[k + 16 + j] = d * np.float32(_nibble_hi(q)) + m


@njit(cache=True, inline="always")
def _word(row, o):
    """The little-endian uint32 at byte o: Q5_x's fifth bits."""
    return np.uint32(row[o]) | (np.uint32(row[o + 1]) << 8) | (np.uint32(row[o + 2]) << 16) | (np.uint32(row[o + 3]) << 24)


@njit(cache=True, inline="always")
def _fifth(qh, j):
    return np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4


@njit(cache=True, inline="always")
def block_q5_0(row, o, f16, out, k):
    d, qh = _half(row, o, f16), _word(row, o + 2)
    for j in range(16):
        q = row[o + 6 + j]
        out[k + j] = d * np.float32((_nibble_lo(q) | _fifth(qh, j)) - 16)
        out[k + 16 + j] = d * np.float32((_nibble_hi(q) | _fifth(qh, j + 16)) - 16)


@njit(cache=True, inline="always")
def block_q5_1(row, o, f16, out, k):
    d, m, qh = _half(row, o, f16), _half(row, o + 2, f16), _word(row, o + 4)
    for j in range(16):
        q = row[o + 8 + j]
        out[k + j] = d * np.float32(_nibble_lo(q) | _fifth(qh, j)) + m
        out[k + 16 + j] = d * np.float32(_nibble_hi(q) | _fifth(qh, j + 16)) + m


@njit(cache=True, inline="always")
def _scale_min(row, p, j):
    """Sub-block j's 6-bit scale and min from the 12 packed bytes at p (`quants_k.scales_and_mins`)."""
    if j < 4:
        return np.float32(row[p + j] & 63), np.float32(row[p + j + 4] & 63)
    sc = (row[p + j + 4] & 15) | ((row[p + j - 4] >> 6) << 4)
    m = (row[p + j + 4] >> 4) | ((row[p + j] >> 6) << 4)
    return np.float32(sc), np.float32(m)


@njit(cache=True, inline="always")
def block_q4_k(row, o, f16, out, k):
    d, dmin = _half(row, o, f16), _half(row, o + 2, f16)
    for c in range(4):  # 32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high ones
        sc0, m0 = _scale_min(row, o + 4, 2 * c)
        sc1, m1 = _scale_min(row, o + 4, 2 * c + 1)
        d0, min0, d1, min1 = d * sc0, dmin * m0, d * sc1, dmin * m1
        for l in range(32):
            q = row[o + 16 + 32 * c + l]
            out[k + 64 * c + l] = d0 * np.float32(_nibble_lo(q)) - min0
            out[k + 64 * c + 32 + l] = d1 * np.float32(_nibble_hi(q)) - min1


@njit(cache=True, inline="always")
def block_q5_k(row, o, f16, out, k):
    d, dmin = _half(row, o, f16), _half(row, o + 2, f16)
    for c in range(4):
        sc0, m0 = _scale_min(row, o + 4, 2 * c)
        sc1, m1 = _scale_min(row, o + 4, 2 * c + 1)
        d0, min0, d1, min1 = d * sc0, dmin * m0, d * sc1, dmin * m1
        for l in range(32):
            q, qh = row[o + 48 + 32 * c + l], np.int32(row[o + 16 + l])
            out[k + 64 * c + l] = d0 * np.float32(_nibble_lo(q) | (((qh >> (2 * c)) & 1) << 4)) - min0
            out[k + 64 * c + 32 + l] = d1 * np.float32(_nibble_hi(q) | (((qh >> (2 * c + 1)) & 1) << 4)) - min1


@njit(cache=True, inline="always")
def block_q6_k(row, o, f16, out, k):
    d = _half(row, o + 208, f16)
    for h in range(2):  # two halves of 128 values
        for half16 in range(2):  # l < 16 and l >= 16 fall in different sub-blocks of 16
            p = o + 192 + 8 * h + half16  # the int8 scales of the four sub-blocks this l meets
            s0, s1 = d * np.float32(np.int8(row[p])), d * np.float32(np.int8(row[p + 2]))
            s2, s3 = d * np.float32(np.int8(row[p + 4])), d * np.float32(np.int8(row[p + 6]))
            for l in range(16 * half16, 16 * half16 + 16):
                ql0, ql1 = np.int32(row[o + 64 * h + l]), np.int32(row[o + 64 * h + 32 + l])
                qh = np.int32(row[o + 128 + 32 * h + l])
                base = k + 128 * h + l
                out[base] = s0 * np.float32(((ql0 & 15) | ((qh & 3) << 4)) - 32)
                out[base + 32] = s1 * np.float32(((ql1 & 15) | (((qh >> 2) & 3) << 4)) - 32)
                out[base + 64] = s2 * np.float32(((ql0 >> 4) | (((qh >> 4) & 3) << 4)) - 32)
                out[base + 96] = s3 * np.float32(((ql1 >> 4) | (((qh >> 6) & 3) << 4)) - 32)


@njit(cache=True, inline="always")
def block_f16(row, v0, count, f16, out, k):
    for j in range(count):
        out[k + j] = _half(row, 2 * (v0 + j), f16)


@njit(cache=True, inline="always")
def decode(type_id, row, v0, count, elems, nbytes, f16, out, k):
    """Values v0 .. v0 + count of a row (whole blocks of `elems` values, `nbytes` bytes each; any
    run for F16) into out[k : k + count]."""
    o = v0 // elems * nbytes
    if type_id == F16:
        block_f16(row, v0, count, f16, out, k)
    elif type_id == Q8_0:
        block_q8_0(row, o, f16, out, k)
    elif type_id == Q4_0:
        block_q4_0(row, o, f16, out, k)
    elif type_id == Q4_1:
        block_q4_1(row, o, f16, out, k)
    elif type_id == Q5_0:
        block_q5_0(row, o, f16, out, k)
    elif type_id == Q5_1:
        block_q5_1(row, o, f16, out, k)
    elif type_id == Q4_K:
        block_q4_k(row, o, f16, out, k)
    elif type_id == Q5_K:
        block_q5_k(row, o, f16, out, k)
    elif type_id == Q6_K:
        block_q6_k(row, o, f16, out, k)
