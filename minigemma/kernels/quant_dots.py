"""One row of GGUF blocks dotted with x, per type, without decoding the row: the inner loop of
the decode GEMV (`kernels/quant.py`).

Every format stores value = scale * (q - offset) (+ min), so a row's dot product with x splits
into what SIMD does well and a little scalar bookkeeping per block:

    sum_j value_j * x_j = sum_j scale * q_j * x_j        16 lanes at a time (`quant_simd.py`)
                        - scale * offset * sum_j x_j      once per block, from the sums of x
                        + min * sum_j x_j                 (computed once per product: `xs`)

`xs[k]` is the sum of x[16k : 16k + 16]. The packed q are read straight from the bytes, high bits
(Q5_x, Q5_K, Q6_K) and all, 16 at a time. `acc` (ACC_LANES float32, in L1) holds
independent partial sums in slots of 16 lanes, so that consecutive updates do not wait on each
other; it is summed once per row. Byte layouts: `weights/quants_blocks.py`, `weights/quants_k.py`.

Not cached on their own: they are compiled into the kernels that call them (`quant.py`,
`quant_moe.py`), whose cache entries know these files' source (`quant.source_stamp`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .linear import _as_float32 as as_float32
from .quant_blocks import F16, F32, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, _half, _scale_min, _word
from .threads import FASTMATH
from .quant_simd import LANES, fma16_bf16, fma16_f16, fma16_f32, fma32_bytes, fma32_bytes2, fma32_int8, fma32_word

ACC_LANES = 4 * LANES  # four slots of partial sums: zeroed and summed once a row


@njit(inline="always")
def dot_q8_0(row, x, xs, acc):
    for b in range(x.shape[0] // 32):
        o, v, slot = 34 * b, 32 * b, 16 * (b & 3)
        d = _half(row, o)
        fma32_int8(acc, slot, row, o + 2, d, x, v)
    return np.float32(0.0)


@njit(inline="always")
def dot_q4_0(row, x, xs, acc):
    offsets = np.float32(0.0)  # sum of d * (sum of the block's x): the "- 8" of every value
    for b in range(x.shape[0] // 32):
        o, v, slot = 18 * b, 32 * b, 16 * (b & 3)
        d = _half(row, o)
        fma32_word(acc, slot, row, o + 2, 0, d, x, v)  # values 0..15: low nibbles, 16..31: high
        offsets += d * (xs[2 * b] + xs[2 * b + 1])
    return -8 * offsets


@njit(inline="always")
def dot_q4_1(row, x, xs, acc):
    mins = np.float32(0.0)
    for b in range(x.shape[0] // 32):
        o, v, slot = 20 * b, 32 * b, 16 * (b & 3)
        d, m = _half(row, o), _half(row, o + 2)
        fma32_word(acc, slot, row, o + 4, 0, d, x, v)
        mins += m * (xs[2 * b] + xs[2 * b + 1])
    return mins


@njit(inline="always")
def dot_q5_0(row, x, xs, acc):
    offsets = np.float32(0.0)
    for b in range(x.shape[0] // 32):
        o, v, slot = 22 * b, 32 * b, 16 * (b & 3)
        d, qh = _half(row, o), _word(row, o + 2)
        fma32_word(acc, slot, row, o + 6, qh, d, x, v)  # fifth bits: bit j of qh
        offsets += d * (xs[2 * b] + xs[2 * b + 1])
    return -16 * offsets


@njit(inline="always")
def dot_q5_1(row, x, xs, acc):
    mins = np.float32(0.0)
    for b in range(x.shape[0] // 32):
        o, v, slot = 24 * b, 32 * b, 16 * (b & 3)
        d, m, qh = _half(row, o), _half(row, o + 2), _word(row, o + 4)
        fma32_word(acc, slot, row, o + 8, qh, d, x, v)
        mins += m * (xs[2 * b] + xs[2 * b + 1])
    return mins


@njit(inline="always")
def dot_q4_k(row, x, xs, acc):
    mins = np.float32(0.0)
    for b in range(x.shape[0] // 256):
        o, v = 144 * b, 256 * b
        d, dmin = _half(row, o), _half(row, o + 2)
        for c in range(4):  # 32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high
            sc0, m0 = _scale_min(row, o + 4, 2 * c)
            sc1, m1 = _scale_min(row, o + 4, 2 * c + 1)
            q, xv = o + 16 + 32 * c, v + 64 * c
            slot = 32 * (c & 1)
            fma32_bytes(acc, slot, row, q, 0, 15, q, 0, 0, d * sc0, x, xv)
            fma32_bytes(acc, slot + 16, row, q, 4, 15, q, 0, 0, d * sc1, x, xv + 32)
            k = xv // 16
            mins += dmin * m0 * (xs[k] + xs[k + 1]) + dmin * m1 * (xs[k + 2] + xs[k + 3])
    return -mins


@njit(inline="always")
def dot_q5_k(row, x, xs, acc):
    mins = np.float32(0.0)
    for b in range(x.shape[0] // 256):
        o, v = 176 * b, 256 * b
        d, dmin = _half(row, o), _half(row, o + 2)
        for c in range(4):  # as Q4_K, plus fifth bits: bit i of qh[l] is value l of sub-block i's
            sc0, m0 = _scale_min(row, o + 4, 2 * c)
            sc1, m1 = _scale_min(row, o + 4, 2 * c + 1)
            q, xv = o + 48 + 32 * c, v + 64 * c
            slot = 32 * (c & 1)
            fma32_bytes(acc, slot, row, q, 0, 15, o + 16, 2 * c, 1, d * sc0, x, xv)
            fma32_bytes(acc, slot + 16, row, q, 4, 15, o + 16, 2 * c + 1, 1, d * sc1, x, xv + 32)
            k = xv // 16
            mins += dmin * m0 * (xs[k] + xs[k + 1]) + dmin * m1 * (xs[k + 2] + xs[k + 3])
    return -mins


@njit(inline="always")
def dot_q6_k(row, x, xs, acc):
    offsets = np.float32(0.0)  # the "- 32" of every value
    for b in range(x.shape[0] // 256):
        o, v = 210 * b, 256 * b
        d = _half(row, o + 208)
        for h in range(2):  # halves of 128 values: ql[64h : 64h + 64], qh[32h : 32h + 32]
            for k in range(4):  # values 128h + 32k + l: nibble k >> 1 of ql byte 32 (k & 1) + l, bits 2k of qh
                # l < 16 and l >= 16: two sub-blocks of 16, each its own scale
                s0 = d * np.float32(np.int8(row[o + 192 + 8 * h + 2 * k]))
                s1 = d * np.float32(np.int8(row[o + 192 + 8 * h + 2 * k + 1]))
                xv = v + 128 * h + 32 * k
                ql, qh = o + 64 * h + 32 * (k & 1), o + 128 + 32 * h
                fma32_bytes2(acc, 16 * k, row, ql, 4 * (k >> 1), 15, qh, 2 * k, 3, s0, s1, x, xv)
                offsets += s0 * xs[xv // 16] + s1 * xs[xv // 16 + 1]
    return -32 * offsets


@njit(inline="always")
def dot_f32(row, x, xs, acc):
    """Rows of plain floats: 16 values at a time, the last few (cols % 16) one by one."""
    whole = x.shape[0] // LANES
    for i in range(whole):
        fma16_f32(acc, LANES * (i & 3), row, 4 * LANES * i, x, LANES * i)
    rest = np.float32(0.0)
    for j in range(LANES * whole, x.shape[0]):
        bits = np.uint32(row[4 * j]) | (np.uint32(row[4 * j + 1]) << 8) | (np.uint32(row[4 * j + 2]) << 16) | (np.uint32(row[4 * j + 3]) << 24)
        rest += as_float32(bits) * x[j]
    return rest


@njit(inline="always")
def dot_f16(row, x, xs, acc):
    whole = x.shape[0] // LANES
    for i in range(whole):
        fma16_f16(acc, LANES * (i & 3), row, 2 * LANES * i, x, LANES * i)
    rest = np.float32(0.0)
    for j in range(LANES * whole, x.shape[0]):
        rest += _half(row, 2 * j) * x[j]
    return rest


@njit(inline="always")
def dot_bf16(row, x, xs, acc):
    whole = x.shape[0] // LANES
    for i in range(whole):
        fma16_bf16(acc, LANES * (i & 3), row, 2 * LANES * i, x, LANES * i)
    rest = np.float32(0.0)
    for j in range(LANES * whole, x.shape[0]):
        rest += as_float32((np.uint32(row[2 * j]) | (np.uint32(row[2 * j + 1]) << 8)) << 16) * x[j]
    return rest


@njit(fastmath=FASTMATH)
def rows_dot(type_id, raw, r0, r1, x, xs, acc, out):
    """out[r] = raw[r] . x for rows r0 .. r1 of blocks raw (rows, row_bytes); x (cols,); xs: sums
    of x by 16; acc: ACC_LANES scratch.

    The dots are inlined here, in one compiled (and cached) function for all types: called once
    for a run of rows, so that a narrow row (640 values of a tied head) pays no call of its own,
    and the type's branch costs nothing next to a row's work."""
    for r in range(r0, r1):
        row = raw[r]
        acc[:] = 0.0
        if type_id == Q8_0:
            scalar = dot_q8_0(row, x, xs, acc)
        elif type_id == Q4_0:
            scalar = dot_q4_0(row, x, xs, acc)
        elif type_id == Q4_1:
            scalar = dot_q4_1(row, x, xs, acc)
        elif type_id == Q5_0:
            scalar = dot_q5_0(row, x, xs, acc)
        elif type_id == Q5_1:
            scalar = dot_q5_1(row, x, xs, acc)
        elif type_id == Q4_K:
            scalar = dot_q4_k(row, x, xs, acc)
        elif type_id == Q5_K:
            scalar = dot_q5_k(row, x, xs, acc)
        elif type_id == Q6_K:
            scalar = dot_q6_k(row, x, xs, acc)
        elif type_id == F32:
            scalar = dot_f32(row, x, xs, acc)
        elif type_id == F16:
            scalar = dot_f16(row, x, xs, acc)
        else:  # BF16, the last of `quants.GGML_TYPES`
            scalar = dot_bf16(row, x, xs, acc)
        out[r] = acc.sum() + scalar
