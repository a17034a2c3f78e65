"""bf16 matrix products that read the stored bits directly: the twin of `bf16.bf16_linear`.

Decoding multiplies every weight matrix by one token's vector: a GEMV, whose speed is the
memory bandwidth divided by the bytes of the weights. Reading bf16 (2 bytes a value) instead of
float32 (4) halves those bytes, which is how llama.cpp's f16 files decode faster than the float32
"roofline". The GEMV below widens each value in registers (`bits << 16`, reinterpreted as a
float32) right before its multiply-add; nothing is widened in memory.

With many rows (a prefill), the product is compute-bound instead: there a block of weight rows
is widened (in parallel) into a float32 buffer and handed to BLAS, like the NumPy twin.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import FASTMATH

GEMV_MAX_ROWS = 8  # up to this many rows of x, the weights are streamed once by the GEMV
BLOCK_ROWS = 1024  # prefill: weight rows widened at a time (a few MB of float32)


@intrinsic
def _as_float32(typingctx, bits):
    """Reinterpret a uint32's bits as a float32 (no conversion): LLVM's `bitcast`."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(cache=True, inline="always")
def _widen(b):
    """One bf16 value (uint16 bits) -> float32: the bits become the top half of the word."""
    return _as_float32(np.uint32(b) << np.uint32(16))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _gemv(x, bits, out):
    """out (n, rows) = x (n, cols) @ widened(bits (rows, cols)).T, each weight row read once."""
    for r in prange(bits.shape[0]):
        for t in range(x.shape[0]):  # the row stays in L1 while each x row passes over it
            acc = np.float32(0.0)
            for c in range(bits.shape[1]):
                acc += _widen(bits[r, c]) * x[t, c]
            out[t, r] = acc


@njit(parallel=True, cache=True)
def _widen_block(bits, out):
    for r in prange(bits.shape[0]):
        for c in range(bits.shape[1]):
            out[r, c] = _widen(bits[r, c])


def bf16_linear(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """x (n, in) float32, bits (out, in) bf16 as uint16 -> x @ widened(bits).T, (n, out) float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], bits.shape[0]), np.float32)
    if x.shape[0] <= GEMV_MAX_ROWS:
        _gemv(x, bits, out)
        return out
    block = np.empty((min(BLOCK_ROWS, bits.shape[0]), bits.shape[1]), np.float32)
    for r0 in range(0, bits.shape[0], BLOCK_ROWS):
        rows = bits[r0 : r0 + BLOCK_ROWS]
        _widen_block(rows, block[: len(rows)])
        out[:, r0 : r0 + len(rows)] = x @ block[: len(rows)].T
    return out
