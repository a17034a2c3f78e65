"""Matrix products on weights kept as stored: the twin of `x @ W.T` (float32 weights) and of
`bf16.bf16_linear` (bf16 weights).

Decoding multiplies every weight matrix by one token's vector: a GEMV, whose speed is the memory
bandwidth divided by the bytes of the weights. Reading bf16 (2 bytes a value) instead of float32
(4) halves those bytes, which is how llama.cpp's f16 files decode faster than the float32
"roofline": the GEMV below widens each bf16 value in registers (`bits << 16`, reinterpreted as a
float32) right before its multiply-add; nothing is widened in memory. Small float32 matrices go
through the same loop, which spares them BLAS' thread hand-offs (`threads.py`).

Big float32 matrices go to BLAS even here. Matrix by matrix, this GEMV and OpenBLAS's stream at
the same rate; but a decode step makes about a hundred such calls, and between two of them our
(OpenMP) threads sleep while OpenBLAS's keep spinning a little, so in whole decode steps OpenBLAS
came out 15-30% ahead (benchmarks/README.md). The choice depends on the shape alone, never on
the machine's load, so the same prompt gives the same bits.

The rule for one row (a decode step), `gemv_choice`, by the shape alone:

    float32 weights, >= PARALLEL_MIN_WORK values (4M: small-e2b-like's and E2B's MLPs, global
        q/o, PLE projection, head)                         -> OpenBLAS (2 threads)
    float32 weights, fewer values (tiny's, every k/v, sliding q/o)  -> this GEMV, serial
    bf16 weights                    -> this GEMV, parallel from PARALLEL_MIN_WORK values, else serial

`python -m benchmarks.gemv` times every candidate on every decode shape of tiny, small-e2b-like
and E2B (benchmarks/README.md, 2026-12-05, measured on the shared machine, busy: load 6-9 on 2
cores). Up to ~0.5M values (tiny's matrices, 256 x 1536) the serial GEMV was as fast as OpenBLAS
or faster on every shape, 1 thread or 2 (0.4 against 1.2 us at 8 x 256, 18.6 against 26.8 us at
256 x 256: OpenBLAS' 1-row path costs ~1 us before it reads a byte). From 1M to 4M values
neither won by more than the noise; above 4M OpenBLAS stays, by the idle whole-step figures
above (a busy machine cannot separate two streams at the same rate). bf16 has no BLAS to compare
with: its GEMV reads half the bytes and was faster than float32 BLAS on 34 of 36 shapes (1 thread).

With many rows (a prefill) the product is compute-bound instead: float32 weights go straight to
BLAS, bf16 ones a block of rows at a time, widened (in parallel) into a float32 buffer.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .threads import PARALLEL_MIN_WORK, pick, serial_and_parallel

GEMV_MAX_ROWS = 8  # up to this many rows of x, the weights are streamed once by the GEMV
GEMV_ROW_BLOCK = 4  # weight rows one GEMV iteration reads side by side (the four sums below)
BLOCK_ROWS = 1024  # prefill: bf16 weight rows widened at a time (a few MB of float32)
BF16_BITS = np.uint16  # how a bf16 matrix is stored


@intrinsic
def _as_float32(typingctx, bits):
    """Reinterpret a uint32's bits as a float32 (no conversion): LLVM's `bitcast`."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def value(stored):
    """A stored weight as float32: a float32 itself; bf16 bits (uint16) as the top half of the word."""


@overload(value, inline="always")
def _value(stored):
    if isinstance(stored, types.Float):
        return lambda stored: stored
    return lambda stored: _as_float32(np.uint32(stored) << np.uint32(16))


def _gemv(loop):
    def gemv(x, w, out):
        """out (n, rows) = x (n, cols) @ value(w (rows, cols)).T, each weight row read once.

        Four weight rows at a time: each x value loaded feeds four multiply-adds, and the four
        independent sums keep four memory streams in flight (one row at a time streamed about
        a third slower on the wide down-projections). Leftover rows go one at a time."""
        rows, cols = w.shape
        for b in loop((rows + GEMV_ROW_BLOCK - 1) // GEMV_ROW_BLOCK):
            r = b * GEMV_ROW_BLOCK
            for t in range(x.shape[0]):  # the rows stay in L1 while each x row passes over them
                if r + GEMV_ROW_BLOCK <= rows:
                    a0 = a1 = a2 = a3 = np.float32(0.0)
                    for c in range(cols):
                        xc = x[t, c]
                        a0 += value(w[r, c]) * xc
                        a1 += value(w[r + 1, c]) * xc
                        a2 += value(w[r + 2, c]) * xc
                        a3 += value(w[r + 3, c]) * xc
                    out[t, r], out[t, r + 1], out[t, r + 2], out[t, r + 3] = a0, a1, a2, a3
                else:
                    for rr in range(r, rows):
                        acc = np.float32(0.0)
                        for c in range(cols):
                            acc += value(w[rr, c]) * x[t, c]
                        out[t, rr] = acc

    return gemv


def _widen_block(loop):
    def widen_block(bits, out):
        for r in loop(bits.shape[0]):
            for c in range(bits.shape[1]):
                out[r, c] = value(bits[r, c])

    return widen_block


GEMV, WIDEN_BLOCK = serial_and_parallel(_gemv), serial_and_parallel(_widen_block, fastmath=False)


def gemv_choice(rows: int, shape, dtype) -> str:
    """Which code multiplies `rows` rows of x by weights of `shape` (out, in) stored as `dtype`,
    when rows <= GEMV_MAX_ROWS: "BLAS", "GEMV serial" or "GEMV parallel". Shapes only."""
    work = rows * shape[0] * shape[1]
    if dtype == np.float32 and work >= PARALLEL_MIN_WORK and rows == 1:
        # see the module docstring: OpenBLAS, whose threads do not sleep between calls. One row
        # only: for 2..8 rows (a speculative verification pass) OpenBLAS's GEMM packs the weights
        # and ran 4x slower than this GEMV, which streams them once (benchmarks/verify_cost.py)
        return "BLAS"
    return "GEMV parallel" if work >= PARALLEL_MIN_WORK else "GEMV serial"


def linear(x: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """x (n, in) float32 @ W.T for W (out, in) stored as float32 or as bf16 bits -> (n, out) float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] <= GEMV_MAX_ROWS:
        choice = gemv_choice(x.shape[0], stored.shape, stored.dtype)
        if choice == "BLAS":
            return x @ stored.T
        out = np.empty((x.shape[0], stored.shape[0]), np.float32)
        GEMV[choice == "GEMV parallel"](x, stored, out)
        return out
    if stored.dtype != BF16_BITS:
        return x @ stored.T
    out = np.empty((x.shape[0], stored.shape[0]), np.float32)
    block = np.empty((min(BLOCK_ROWS, stored.shape[0]), stored.shape[1]), np.float32)
    for r0 in range(0, stored.shape[0], BLOCK_ROWS):
        rows = stored[r0 : r0 + BLOCK_ROWS]
        pick(WIDEN_BLOCK, rows.size)(rows, block[: len(rows)])
        out[:, r0 : r0 + len(rows)] = x @ block[: len(rows)].T
    return out
