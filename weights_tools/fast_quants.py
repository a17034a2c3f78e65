"""Q4_0 and Q8_0 quantization at compiled speed, bit for bit `gguf.quants.quantize`'s.

`gguf.quants` quantizes with whole-array NumPy steps (abs, argmax, take, divide, trunc, clip, pack:
a dozen passes over the values), ~45 M values/s here; the 31 G values of a 31B-shaped file took it
most of a 25-minute write. The same arithmetic as one Numba loop per block, in float32 like theirs
(`max / -8`, `1 / d`, `x * id + 8.5` truncated; Q8_0's `amax / 127` and round-half-away), and the
scale rounded to float16 by NumPy afterwards, gives the same bytes (tests/test_random_gguf.py checks
them against the `gguf` package) several times faster. Other types go to `gguf.quants`.

    Q4_0 block: | d (f16) | 16 bytes: value j in the low nibble of byte j, value j + 16 in its high |
    Q8_0 block: | d (f16) | 32 int8 |
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 32
SCALE_BYTES = 2  # the float16 d in front of each block


@njit(cache=True)
def _q4_0(x, d_out, qs_out):
    """x (blocks, 32) float32 -> d_out (blocks,) float32 scales, qs_out (blocks, 16) packed nibbles."""
    for b in range(x.shape[0]):
        amax, signed = np.float32(0.0), np.float32(0.0)
        for j in range(BLOCK):  # the value of largest magnitude, the first of equals (argmax)
            if abs(x[b, j]) > amax:
                amax, signed = abs(x[b, j]), x[b, j]
        d = signed / np.float32(-8.0)
        inv = np.float32(0.0) if d == 0 else np.float32(1.0) / d
        for j in range(BLOCK // 2):
            lo = min(15, int(x[b, j] * inv + np.float32(8.5)))  # >= 0.5: int() truncates as np.trunc
            hi = min(15, int(x[b, j + BLOCK // 2] * inv + np.float32(8.5)))
            qs_out[b, j] = lo | (hi << 4)
        d_out[b] = d


@njit(cache=True)
def _q8_0(x, d_out, qs_out):
    """x (blocks, 32) float32 -> d_out (blocks,) float32 scales, qs_out (blocks, 32) int8."""
    for b in range(x.shape[0]):
        amax = np.float32(0.0)
        for j in range(BLOCK):
            amax = max(amax, abs(x[b, j]))
        d = amax / np.float32(127.0)
        inv = np.float32(0.0) if d == 0 else np.float32(1.0) / d
        for j in range(BLOCK):
            v = x[b, j] * inv
            a = abs(v)
            r = int(a) + (1 if a - np.float32(int(a)) >= np.float32(0.5) else 0)  # half away from zero
            qs_out[b, j] = r if v >= 0 else -r
        d_out[b] = d


KERNELS = {"Q4_0": (_q4_0, BLOCK // 2, np.uint8), "Q8_0": (_q8_0, BLOCK, np.int8)}


def quantize(values: np.ndarray, type_name: str) -> np.ndarray:
    """values (rows, cols) float32, cols a multiple of 32 -> (rows, row bytes) uint8, as stored."""
    rows = values.shape[0]
    kernel, qs_bytes, qs_type = KERNELS[type_name]
    blocks = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, BLOCK)
    d, qs = np.empty(len(blocks), np.float32), np.empty((len(blocks), qs_bytes), qs_type)
    kernel(blocks, d, qs)
    out = np.empty((len(blocks), SCALE_BYTES + qs_bytes), np.uint8)
    out[:, :SCALE_BYTES] = d.astype(np.float16).view(np.uint8).reshape(-1, SCALE_BYTES)
    out[:, SCALE_BYTES:] = qs.view(np.uint8)
    return out.reshape(rows, -1)
