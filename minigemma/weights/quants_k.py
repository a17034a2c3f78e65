"""The "K-quants": 256-value super-blocks whose sub-blocks carry their own small scales.

What Q4_K_M / Q5_K_M / Q6_K files mostly hold. One float16 scale for 32 values (Q4_0) costs half a
bit a weight; a K-quant spends one or two float16s on 256 values and gives each sub-block of 32
(or 16) a 6-bit (or 8-bit) scale relative to them: finer scales for about the same bytes, and a
minimum per sub-block (Q4_K, Q5_K) so that a sub-block whose values are all positive wastes no
levels. Layouts as in llama.cpp's `ggml-common.h` (`block_q4_K`, `block_q5_K`, `block_q6_K`);
the interface and the 32-value formats are in `quants.py`.

Each format's *quantizer* sits under its dequantizer: float32 rows -> the same bytes llama.cpp's
`quantize_row_q4_K_ref` / `q5_K` / `q6_K` write (ggml-quants.c, the path llama-quantize takes
without an importance matrix). The algorithm, vectorised over every sub-block at once:

1. fit each sub-block alone: a scale (and a minimum) by a small search over candidate scales,
   keeping the one of least (weighted) squared error (`fit_scale_and_min`, `fit_scale`);
2. store the sub-block scales as 6-bit (8-bit) integers relative to the largest, which becomes
   the block's float16 `d`;
3. round every value again with the scale it will really be read with.

Sums run left to right in float32, as the C loops do (ggml's quantizers are compiled without
fused multiply-adds or reordered sums), so that every rounding decision, and every byte, agrees.
"""

from __future__ import annotations

import numpy as np

from .quants_blocks import half, nibbles

SUPER = 256  # values in a super-block (llama.cpp's QK_K)
SCALE_LEVELS = 63  # Q4_K / Q5_K sub-block scales and mins are 6-bit: 0..63
TINY = np.float32(1e-15)  # ggml's GROUP_MAX_EPS: a group whose largest |value| is below is all zero


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


# --- quantizing: float32 rows -> blocks (module docstring) -------------------------------------

f32 = np.float32


def running_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the first axis, front to back in float32, as a C loop adds (NumPy's own sum adds in
    pairs, which rounds differently): (n, groups) -> (groups,). The fitting below keeps a group's
    values down the first axis, so that this is n vector additions across all groups."""
    total = a[0].copy()
    for row in a[1:]:
        total += row
    return total


def nearest(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ggml's nearest_int (round half to even), clipped to lo..hi; kept as float32 (exact integers)."""
    return np.clip(np.rint(v), lo, hi)


def fp16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 (...) -> its float16 (round to nearest even, as ggml) as 2 little-endian bytes (..., 2)."""
    return v.astype("<f2").view(np.uint8).reshape(*v.shape, 2)


def fit_scale_and_min(x, w, nmax: int, rmin: float, rdelta: float, nstep: int):
    """ggml's make_qkx2_quants for every group at once: the scale s and minimum m (m <= 0) for which
    x ~ s * q + m, q = 0..nmax, has the least weighted squared error w * (s q + m - x)^2.
    Candidates: the grid of nmax steps over [min(x, 0), max x], then grids of nmax + rmin + k * rdelta
    steps (k = 0..nstep) from the best minimum so far, each with the least-squares s, m of its q.
    x, w (n, groups) float32 -> q (n, groups) float32 0..nmax, s (groups,), -m (groups,)."""
    lo, hi = np.minimum(x.min(0), f32(0)), x.max(0)  # (groups,)
    flat = hi == lo  # nothing to fit: q = 0, value = the minimum
    sum_w, sum_x = running_sum(w), running_sum(w * x)

    def levels(steps, low):  # the grid of `steps` steps from `low` to the largest value
        return nearest(steps / np.where(hi == low, f32(1), hi - low) * (x - low), 0, nmax)

    def error(q, s, m):  # (groups,)
        diff = (s * q + m) - x
        return running_sum(w * (diff * diff))

    q, low = levels(f32(nmax), lo), lo
    scale = f32(1) / (f32(nmax) / np.where(flat, f32(1), hi - lo))
    best = error(q, scale, low)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(nstep + 1):
            qk = levels(f32(rmin) + f32(rdelta) * f32(k) + f32(nmax), low)  # from the best minimum so far
            lq = w * qk
            sum_l, sum_l2, sum_xl = running_sum(lq), running_sum(lq * qk), running_sum(lq * x)
            det = sum_w * sum_l2 - sum_l * sum_l
            s = (sum_w * sum_xl - sum_x * sum_l) / det
            m = (sum_l2 * sum_x - sum_l * sum_xl) / det
            s = np.where(m > 0, sum_xl / sum_l2, s)  # a positive minimum is not stored: refit with m = 0
            m = np.minimum(m, f32(0))
            err = error(qk, s, m)
            better = (det > 0) & (err < best)
            q = np.where(better, qk, q)
            best, scale, low = np.where(better, err, best), np.where(better, s, scale), np.where(better, m, low)
    q[:, flat], scale[flat], low[flat] = 0, 0, lo[flat]
    return q, scale, -low


def fit_scale(x, nmax: int):
    """ggml's make_qx_quants (rmse_type 1) for every group at once: the scale s for which
    x ~ s * q, q = -nmax..nmax-1, has the least squared error weighted by x^2; candidates are the
    grids that put the largest |x| on -nmax +- 0.1 k (k = -9..9), each with its least-squares s.
    x (n, groups) float32 -> q + nmax (n, groups) float32 (0 for an all-zero group), s (groups,)."""
    big = np.take_along_axis(x, np.abs(x).argmax(0)[None], 0)[0]  # (groups,): the first largest |x|, signed
    zero = np.abs(big) < TINY
    big = np.where(big == 0, f32(1), big)
    w = x * x
    wx = w * x

    def attempt(iscale):  # -> q, sum w x q, sum w q^2
        q = nearest(iscale * x, -nmax, nmax - 1)
        return q, running_sum(wx * q), running_sum(w * q * q)

    q, sum_lx, sum_l2 = attempt(f32(-nmax) / big)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sum_l2 != 0, sum_lx / sum_l2, f32(0))
        best = scale * sum_lx
        for k in range(-9, 10):
            if k == 0:
                continue
            qk, sum_lx, sum_l2 = attempt(-(f32(nmax) + f32(0.1) * f32(k)) / big)
            better = (sum_l2 > 0) & (sum_lx * sum_lx > best * sum_l2)
            q = np.where(better, qk, q)
            scale = np.where(better, sum_lx / sum_l2, scale)
            best = np.where(better, scale * sum_lx, best)
    q = q + f32(nmax)
    q[:, zero], scale[zero] = 0, 0
    return q, scale


def scale_levels(v: np.ndarray, top: int) -> np.ndarray:
    """A 6-bit scale or min: nearest_int, then C's store into a uint8 (wrapping), capped at `top`."""
    return np.minimum(np.rint(v).astype(np.int32) & 0xFF, top)


def quantize_sub_blocks_of_32(x, nmax: int, rmin: float, rdelta: float, nstep: int):
    """The part Q4_K and Q5_K share. x (n, 8, 32) float32 ->
    q (n, 8, 32) uint8 0..nmax, d and dmin float16 as bytes (n, 2), the 12 packed scale bytes (n, 12)."""
    n = x.shape[0]
    xt = np.ascontiguousarray(x.reshape(n * 8, 32).T)  # (32, n * 8): a sub-block a column
    w = np.sqrt(running_sum(xt * xt) / f32(32)) + np.abs(xt)  # rms(sub-block) + |value|: big values matter more
    q, scales, mins = fit_scale_and_min(xt, w, nmax, rmin, rdelta, nstep)
    q, scales, mins = q.T.reshape(n, 8, 32), scales.reshape(n, 8), mins.reshape(n, 8)
    max_scale = np.maximum(scales.max(-1), f32(0))  # (n,)
    max_min = np.maximum(mins.max(-1), f32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, f32(SCALE_LEVELS) / max_scale, f32(0))[:, None]
        inv_min = np.where(max_min > 0, f32(SCALE_LEVELS) / max_min, f32(0))[:, None]
    sc, m = scale_levels(inv_scale * scales, SCALE_LEVELS), scale_levels(inv_min * mins, SCALE_LEVELS)  # (n, 8)
    d, dmin = fp16_bytes(max_scale / f32(SCALE_LEVELS)), fp16_bytes(max_min / f32(SCALE_LEVELS))
    # round again with the scale and minimum as stored (a sub-block of scale 0 keeps its fit)
    step = half(d[:, None], 0) * sc.astype(np.float32)[..., None]  # (n, 8, 1)
    offset = half(dmin[:, None], 0) * m.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step != 0, nearest((x + offset) / step, 0, nmax), q)
    return q.astype(np.uint8), d, dmin, pack_scales_and_mins(sc, m)


def pack_scales_and_mins(sc, m):
    """The inverse of `scales_and_mins`: 8 scales and 8 mins, 0..63 (n, 8) -> 12 bytes (n, 12)."""
    lo = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    mid = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    hi = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return np.concatenate([lo, mid, hi], axis=-1).astype(np.uint8)


def pack_nibbles_of_32(q):
    """The inverse of `sub_blocks_of_32`: (n, 8, 32) values 0..15 -> (n, 128) bytes."""
    pairs = q.reshape(-1, 4, 2, 32)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)


def quantize_q4_k(x):
    """float32 values (any shape, n * 256 in all, row after row) -> (n, 144) Q4_K blocks, as
    ggml's quantize_row_q4_K_ref."""
    x = np.asarray(x, np.float32).reshape(-1, 8, 32)
    q, d, dmin, scales = quantize_sub_blocks_of_32(x, 15, rmin=-1.0, rdelta=0.1, nstep=20)
    return np.concatenate([d, dmin, scales, pack_nibbles_of_32(q)], axis=-1)


def quantize_q5_k(x):
    """float32 values (any shape, n * 256 in all, row after row) -> (n, 176) Q5_K blocks, as
    ggml's quantize_row_q5_K_ref."""
    x = np.asarray(x, np.float32).reshape(-1, 8, 32)
    q, d, dmin, scales = quantize_sub_blocks_of_32(x, 31, rmin=-0.5, rdelta=0.1, nstep=15)
    fifth = q >> 4  # (n, 8, 32): bit i of qh[l] is value l of sub-block i's
    qh = np.bitwise_or.reduce(fifth << np.arange(8, dtype=np.uint8)[:, None], axis=1)  # (n, 32)
    return np.concatenate([d, dmin, scales, qh, pack_nibbles_of_32(q & 0x0F)], axis=-1)


def quantize_q6_k(x):
    """float32 values (any shape, n * 256 in all, row after row) -> (n, 210) Q6_K blocks, as
    ggml's quantize_row_q6_K_ref."""
    x = np.asarray(x, np.float32).reshape(-1, 16, 16)
    n = x.shape[0]
    q, scales = fit_scale(np.ascontiguousarray(x.reshape(n * 16, 16).T), 32)  # a sub-block a column
    q, scales = q.T.reshape(n, 16, 16), scales.reshape(n, 16)
    first_max = np.abs(scales).argmax(-1)[:, None]  # the block scale: the sub-block scale of largest |s|
    max_scale = np.take_along_axis(scales, first_max, -1)[:, 0]  # (n,)
    zero = np.abs(max_scale) < TINY  # an all-zero block: all-zero bytes
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, f32(0), f32(-128) / np.where(zero, f32(1), max_scale))
        d = fp16_bytes(np.where(zero, f32(0), f32(1) / iscale))
    sc = np.minimum(np.rint(iscale[:, None] * scales), 127).astype(np.int8)  # (n, 16)
    step = half(d[:, None], 0) * sc.astype(np.float32)[..., None]  # (n, 16, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step != 0, nearest(x / step, -32, 31) + f32(32), q)
    q = q.astype(np.uint8).reshape(n, 2, 4, 32)  # (n, half, quarter, 32): value 128 h + 32 k + l
    ql = (q[:, :, :2] & 0x0F) | ((q[:, :, 2:] & 0x0F) << 4)  # (n, 2, 2, 32): low nibbles of quarters 0,1 | 2,3
    qh = np.bitwise_or.reduce((q >> 4) << (2 * np.arange(4, dtype=np.uint8))[:, None], axis=2)  # (n, 2, 32)
    block = np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8), d], axis=-1)
    block[zero] = 0
    return block


K_QUANTIZERS = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}  # values -> (blocks, block_bytes)
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
SCALE_FIELDS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}  # byte offsets of each block's float16 d (and dmin)


def finite_scales(raw: np.ndarray, type_name: str) -> bool:
    """Whether the float16 scales of every block in `raw` (bytes, whole blocks) are finite: values
    too large for them (from ~4e6 in Q4_K / Q5_K, ~3e8 in Q6_K) overflow to inf, and llama-quantize
    refuses such blocks."""
    blocks = raw.reshape(-1, BLOCK_BYTES[type_name])
    return all(np.isfinite(half(blocks, o)).all() for o in SCALE_FIELDS[type_name])
