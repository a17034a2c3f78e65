"""Attention of a few queries over a long cache (decoding): a split-key Numba kernel.

One decode step of a global layer reads every cached key and value once, so its bound is the
memory read rate (16k keys of head dim 512: 64 MB). BLAS does not get near it: the GEMMs are a
few rows tall (one query x `group` heads), and OpenBLAS packs the whole K for them. Here:

* the keys are cut into chunks of `CHUNK` (256 keys x d: an L2's worth), one parallel task each
  (FlashDecoding's split-K): each chunk's scores, max, sum and weighted values in float32;
* each chunk's keys (then values) are first read in one plain stream (`_stream`), which brings
  them into cache at the full read rate;
* within a chunk, 4 keys x 2 query heads at a time: every key value loaded feeds two
  multiply-adds and every query value four, and the eight sums are independent (the compiler
  vectorises each along the head dim). One key row at a time ran at a third of this;
* keys and values of a compact cache (float16) are read as such and widened in registers;
* the chunks' partial results are combined in float64, rescaled to the overall max: the online
  softmax across chunks, as in `attention.py` across tiles.

Masks come from positions (the rule of `attention.attention_mask`), so a ring buffer's slots
may be in any order. The thread split is by shape (chunks), never by load (`threads.py`).
"""

from __future__ import annotations

import numpy as np

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .threads import FASTMATH, pick, serial_and_parallel

NO_WINDOW = 0  # window argument meaning "no sliding window" (real windows are >= 1)
CHUNK = 256  # keys per task
KEYS_AT_ONCE = 4  # key rows read side by side
HEADS_AT_ONCE = 2  # query heads sharing each key value loaded


@intrinsic
def _half_as_float32(typingctx, bits):
    """The float16 whose bits a uint16 holds, as a float32: LLVM's `bitcast` + `fpext` (F16C's
    vcvtph2ps, exact). Numba has no float16 type of its own on the CPU."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


def widen(stored):
    """A stored key/value as float32: a float32 itself, float16 bits (uint16) widened."""


@overload(widen, inline="always")
def _widen(stored):
    if isinstance(stored, types.Float):
        return lambda stored: stored
    return lambda stored: _half_as_float32(stored)


@njit(fastmath=FASTMATH, cache=True)
def _stream(x, j0, nk, kv):
    """Read rows j0 .. j0+nk of one KV head once, in order: one plain stream, which the hardware
    prefetchers follow at the full read rate, brings the chunk into cache before the compute
    loops (whose four interleaved rows they follow worse). Measured on 16k keys of head dim 512:
    the scores 4.1 ms without, 2.5 ms with. The sum is returned so the read is not optimised away."""
    total = np.float32(0.0)
    for j in range(j0, j0 + nk):
        for e in range(x.shape[2]):
            total += widen(x[j, kv, e])
    return total


def _decode(loop):
    def decode(q, k, v, q_pos, k_pos, window, causal, out):
        q_len, heads, d = q.shape
        n, n_kv = k.shape[0], k.shape[1]
        group = heads // n_kv
        n_chunks = max(1, (n + CHUNK - 1) // CHUNK)
        part_max = np.empty((n_chunks, q_len, heads), np.float32)  # per chunk: max score
        part_sum = np.empty((n_chunks, q_len, heads), np.float32)  # sum of exp(score - max)
        part_acc = np.zeros((n_chunks, q_len, heads, d), np.float32)  # sum of exp(score - max) * value
        streamed = np.zeros(n_chunks, np.float32)  # `_stream`'s sums, kept so the reads stay
        for c in loop(n_chunks):
            j0 = c * CHUNK
            nk = min(n, j0 + CHUNK) - j0
            s = np.empty((q_len, heads, CHUNK), np.float32)  # this chunk's scores, then probabilities
            for kv in range(n_kv):
                last_head = (kv + 1) * group - 1
                streamed[c] += _stream(k, j0, nk, kv)
                for jb in range(0, nk, KEYS_AT_ONCE):
                    # past the chunk's end the last key is read again: same value, same slot
                    j1, j2, j3 = min(jb + 1, nk - 1), min(jb + 2, nk - 1), min(jb + 3, nk - 1)
                    r0, r1, r2, r3 = j0 + jb, j0 + j1, j0 + j2, j0 + j3  # the four key rows
                    for i in range(q_len):
                        for ha in range(kv * group, last_head + 1, HEADS_AT_ONCE):
                            hb = min(ha + 1, last_head)  # an odd group computes its last head twice
                            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
                            for e in range(d):
                                qa, qb = q[i, ha, e], q[i, hb, e]
                                k0, k1, k2, k3 = widen(k[r0, kv, e]), widen(k[r1, kv, e]), widen(k[r2, kv, e]), widen(k[r3, kv, e])
                                a0 += qa * k0
                                a1 += qa * k1
                                a2 += qa * k2
                                a3 += qa * k3
                                b0 += qb * k0
                                b1 += qb * k1
                                b2 += qb * k2
                                b3 += qb * k3
                            s[i, ha, jb], s[i, ha, j1], s[i, ha, j2], s[i, ha, j3] = a0, a1, a2, a3
                            s[i, hb, jb], s[i, hb, j1], s[i, hb, j2], s[i, hb, j3] = b0, b1, b2, b3
            for i in range(q_len):
                for h in range(heads):
                    top = np.float32(-np.inf)
                    for jj in range(nk):
                        dist = q_pos[i] - k_pos[j0 + jj]
                        if causal:
                            visible = dist >= 0 and (window == NO_WINDOW or dist < window)
                        else:
                            visible = window == NO_WINDOW or abs(dist) <= window
                        if visible:
                            top = max(top, s[i, h, jj])
                        else:
                            s[i, h, jj] = -np.inf
                    total = np.float32(0.0)
                    for jj in range(nk):
                        p = np.exp(s[i, h, jj] - top) if top > -np.inf else np.float32(0.0)
                        s[i, h, jj] = p
                        total += p
                    part_max[c, i, h], part_sum[c, i, h] = top, total
            for kv in range(n_kv):
                last_head = (kv + 1) * group - 1
                streamed[c] += _stream(v, j0, nk, kv)
                for jb in range(0, nk, KEYS_AT_ONCE):
                    j1, j2, j3 = min(jb + 1, nk - 1), min(jb + 2, nk - 1), min(jb + 3, nk - 1)
                    r0, r1, r2, r3 = j0 + jb, j0 + j1, j0 + j2, j0 + j3
                    for i in range(q_len):
                        for ha in range(kv * group, last_head + 1, HEADS_AT_ONCE):
                            hb = min(ha + 1, last_head)
                            # weights past the chunk's end, and of a head counted twice, are 0
                            pa0, pa1, pa2, pa3 = s[i, ha, jb], s[i, ha, j1], s[i, ha, j2], s[i, ha, j3]
                            in1, in2, in3 = np.float32(jb + 1 < nk), np.float32(jb + 2 < nk), np.float32(jb + 3 < nk)
                            pa1, pa2, pa3 = pa1 * in1, pa2 * in2, pa3 * in3
                            once = np.float32(hb != ha)
                            pb0, pb1, pb2, pb3 = s[i, hb, jb] * once, s[i, hb, j1] * once, s[i, hb, j2] * once, s[i, hb, j3] * once
                            pb1, pb2, pb3 = pb1 * in1, pb2 * in2, pb3 * in3
                            acc_a, acc_b = part_acc[c, i, ha], part_acc[c, i, hb]
                            for e in range(d):
                                v0, v1, v2, v3 = widen(v[r0, kv, e]), widen(v[r1, kv, e]), widen(v[r2, kv, e]), widen(v[r3, kv, e])
                                acc_a[e] += pa0 * v0 + pa1 * v1 + pa2 * v2 + pa3 * v3
                                acc_b[e] += pb0 * v0 + pb1 * v1 + pb2 * v2 + pb3 * v3
        # combine the chunks in float64, each rescaled to the overall max
        acc = np.empty(d, np.float64)
        for i in range(q_len):
            for h in range(heads):
                top = np.float32(-np.inf)
                for c in range(n_chunks):
                    top = max(top, part_max[c, i, h])
                total = 0.0
                acc[:] = 0.0
                for c in range(n_chunks):
                    if part_max[c, i, h] > -np.inf:
                        w = np.exp(np.float64(part_max[c, i, h]) - top)
                        total += w * part_sum[c, i, h]
                        for e in range(d):
                            acc[e] += w * part_acc[c, i, h, e]
                scale = 1.0 / total if total > 0 else np.nan  # NaN if nothing was visible, as in NumPy
                for e in range(d):
                    out[i, h, e] = np.float32(acc[e] * scale)

    return decode


DECODE = serial_and_parallel(_decode)


def decode_attend(q, k, v, q_pos, k_pos, window: int | None, causal: bool) -> np.ndarray:
    """`attention.attend` for a few queries (contiguous q float32, k and v float32 or float16;
    int64 positions)."""
    out = np.empty_like(q)
    if k.dtype == np.float16:  # read as their bits, widened in registers (`widen`)
        k, v = k.view(np.uint16), v.view(np.uint16)
    work = q.shape[0] * q.shape[1] * k.shape[0] * q.shape[2]  # multiply-adds of the scores
    pick(DECODE, work)(q, k, v, q_pos, k_pos, NO_WINDOW if window is None else int(window), bool(causal), out)
    return out
