"""One GGUF block -> float32 values, in Numba: the kernel twins of `weights/quants*.py`.

Each `block_*` decodes the block that starts at byte `o` of a row into `out[k : k + block]`, 16
values per SIMD step (`quant_simd.put16_*`), exactly as the NumPy dequantizer computes them (the
same roundings in the same order, nothing fused: the same bits). `decode` picks one by type id;
the prefill's block-of-rows dequantization (`quant.py`) calls it block after block.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..weights.quants import TYPE_IDS
from .quant_simd import put16_bytes, put16_f16, put16_int8, put16_word

F32, F16, BF16 = (TYPE_IDS[n] for n in ("F32", "F16", "BF16"))
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (TYPE_IDS[n] for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
Q4_K, Q5_K, Q6_K = (TYPE_IDS[n] for n in ("Q4_K", "Q5_K", "Q6_K"))
# float16 bits -> float32, all 65536 of them (256 KB, stays in cache): the scales of every block
NO_ADD = np.float32(-0.0)  # x + -0.0 is x, even for x = -0.0 (+0.0 would turn it into +0.0)
F16_TABLE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(inline="always")
def _half(row, o, f16):
    """The little-endian float16 at byte o, looked up as float32."""
    return f16[np.int64(row[o]) | (np.int64(row[o + 1]) << 8)]


@njit(inline="always")
def block_q8_0(row, o, f16, out, k):
    d = _half(row, o, f16)
    put16_int8(out, k, row, o + 2, d)
    put16_int8(out, k + 16, row, o + 18, d)


@njit(inline="always")
def block_q4_0(row, o, f16, out, k):
    d = _half(row, o, f16)
    put16_bytes(out, k, row, o + 2, 0, 15, o + 2, 0, 0, 8, d, NO_ADD)  # low nibbles: values 0..15
    put16_bytes(out, k + 16, row, o + 2, 4, 15, o + 2, 0, 0, 8, d, NO_ADD)  # high: 16..31


@njit(inline="always")
def block_q4_1(row, o, f16, out, k):
    d, m = _half(row, o, f16), _half(row, o + 2, f16)
    put16_bytes(out, k, row, o + 4, 0, 15, o + 4, 0, 0, 0, d, m)
    put16_bytes(out, k + 16, row, o + 4, 4, 15, o + 4, 0, 0, 0, d, m)


@njit(inline="always")
def _word(row, o):
    """The little-endian uint32 at byte o: Q5_x's fifth bits."""
    return np.uint32(row[o]) | (np.uint32(row[o + 1]) << 8) | (np.uint32(row[o + 2]) << 16) | (np.uint32(row[o + 3]) << 24)


@njit(inline="always")
def block_q5_0(row, o, f16, out, k):
    d, qh = _half(row, o, f16), _word(row, o + 2)
    put16_word(out, k, row, o + 6, 0, qh, 0, 16, d, NO_ADD)
    put16_word(out, k + 16, row, o + 6, 4, qh, 16, 16, d, NO_ADD)


@njit(inline="always")
def block_q5_1(row, o, f16, out, k):
    d, m, qh = _half(row, o, f16), _half(row, o + 2, f16), _word(row, o + 4)
    put16_word(out, k, row, o + 8, 0, qh, 0, 0, d, m)
    put16_word(out, k + 16, row, o + 8, 4, qh, 16, 0, d, m)


@njit(inline="always")
def _scale_min(row, p, j):
    """Sub-block j's 6-bit scale and min from the 12 packed bytes at p (`quants_k.scales_and_mins`)."""
    if j < 4:
        return np.float32(row[p + j] & 63), np.float32(row[p + j + 4] & 63)
    sc = (row[p + j + 4] & 15) | ((row[p + j - 4] >> 6) << 4)
    m = (row[p + j + 4] >> 4) | ((row[p + j] >> 6) << 4)
    return np.float32(sc), np.float32(m)


@njit(inline="always")
def block_q4_k(row, o, f16, out, k):
    d, dmin = _half(row, o, f16), _half(row, o + 2, f16)
    for c in range(4):  # 32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high ones
        sc0, m0 = _scale_min(row, o + 4, 2 * c)
        sc1, m1 = _scale_min(row, o + 4, 2 * c + 1)
        q, at = o + 16 + 32 * c, k + 64 * c
        for half in range(2):  # bytes l < 16, l >= 16
            put16_bytes(out, at + 16 * half, row, q + 16 * half, 0, 15, q, 0, 0, 0, d * sc0, -(dmin * m0))
            put16_bytes(out, at + 32 + 16 * half, row, q + 16 * half, 4, 15, q, 0, 0, 0, d * sc1, -(dmin * m1))


@njit(inline="always")
def block_q5_k(row, o, f16, out, k):
    d, dmin = _half(row, o, f16), _half(row, o + 2, f16)
    for c in range(4):  # as Q4_K; bit i of qh[l] (bytes o + 16 ..) is value l of sub-block i's fifth
        sc0, m0 = _scale_min(row, o + 4, 2 * c)
        sc1, m1 = _scale_min(row, o + 4, 2 * c + 1)
        q, at = o + 48 + 32 * c, k + 64 * c
        for half in range(2):
            qh = o + 16 + 16 * half
            put16_bytes(out, at + 16 * half, row, q + 16 * half, 0, 15, qh, 2 * c, 1, 0, d * sc0, -(dmin * m0))
            put16_bytes(out, at + 32 + 16 * half, row, q + 16 * half, 4, 15, qh, 2 * c + 1, 1, 0, d * sc1, -(dmin * m1))


@njit(inline="always")
def block_q6_k(row, o, f16, out, k):
    d = _half(row, o + 208, f16)
    for h in range(2):  # two halves of 128 values
        for kk in range(4):  # values 128h + 32kk + l: nibble kk >> 1 of ql byte 32 (kk & 1) + l, bits 2kk of qh
            for lh in range(2):  # l < 16 and l >= 16 fall in different sub-blocks of 16
                s = d * np.float32(np.int8(row[o + 192 + 8 * h + 2 * kk + lh]))
                ql, qh = o + 64 * h + 32 * (kk & 1) + 16 * lh, o + 128 + 32 * h + 16 * lh
                put16_bytes(out, k + 128 * h + 32 * kk + 16 * lh, row, ql, 4 * (kk >> 1), 15, qh, 2 * kk, 3, 32, s, NO_ADD)


@njit(inline="always")
def block_f16(row, v0, count, f16, out, k):
    whole = count // 16 * 16
    for j in range(0, whole, 16):
        put16_f16(out, k + j, row, 2 * (v0 + j))
    for j in range(whole, count):  # the row's last few
        out[k + j] = _half(row, 2 * (v0 + j), f16)


@njit(inline="always")
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
