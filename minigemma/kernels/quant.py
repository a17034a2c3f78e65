"""Matrix products on GGUF blocks that never write the float32 matrix: the kernel twin of
`quants_matrix.dequantize_linear` (dequantize, then BLAS).

Decoding a token multiplies every weight matrix by one vector, and its speed is the memory
bandwidth divided by the bytes of the weights: a Q4_K matrix is 7x fewer bytes than float32. So
the decode GEMV reads the blocks where they lie (the mapped file) and dots each row with x
without decoding it (`quant_dots.py`, 16 values per SIMD step, `quant_simd.py`), parallel over
rows.

Many rows of x (a prefill) are compute-bound instead: a block of weight rows is dequantized (in
parallel, `quant_blocks.py`) into a float32 buffer of a few MB and multiplied by BLAS, as the
bf16 path does; F32 rows go to BLAS directly and BF16 to `linear.py`.

Each kernel takes the GGML type as an argument and branches on it once per row (GEMV) or block
(dequantize): one compilation, serial and parallel (`threads.py`), cached on disk, for all types.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..weights import quants as type_table
from ..weights.quants import GGML_TYPES, TYPE_IDS, ggml_type, row_bytes
from . import linear as float_kernels
from . import moe as float_moe
from . import quant_blocks, quant_dots, quant_simd
from .linear import GEMV_MAX_ROWS
from .linear import linear as float_linear
from .quant_blocks import decode
from .quant_dots import ACC_LANES, rows_dot
from .quant_simd import LANES
from .threads import pick, serial_and_parallel

F32, F16, BF16 = TYPE_IDS["F32"], TYPE_IDS["F16"], TYPE_IDS["BF16"]
FLOAT_RUN = 256  # F16 values dequantized per `decode` call (F16 has no blocks of its own)
ROWS_PER_TASK = 16  # GEMV rows per parallel task: one scratch allocation per task, not per row
BLOCK_ROWS = 256  # prefill: weight rows dequantized at a time (256 x 8192 floats = 8 MB)
# The fused GEMV goes parallel from 256K weights, 16x sooner than a float32 product
# (`PARALLEL_MIN_WORK`): decoding a block costs several float multiply-adds a weight (~10 G weights/s
# a core), so a 1024 x 640 matrix is ~60 us of work, and its second thread, awake (threads.py),
# halves that. Measured on the real 270M (benchmarks/README.md): 4M -> 1M -> 256K, 37 -> 43 -> 49 tokens/s.
GEMV_PARALLEL_MIN = 1 << 18


def source_stamp(*modules) -> int:
    """A nonzero number that changes whenever the source of `modules` does.

    Numba's on-disk cache knows the source of a kernel's own file only: edit `quant_dots.py`
    and a cached GEMV would go on running the old dot. Its cache key does include the kernel's
    closure variables, so each kernel here holds this stamp of the files it calls into."""
    digest = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).digest()
    return int.from_bytes(digest[:7], "little") | 1


# everything the kernels here and in quant_moe.py compile in from other files
STAMP = source_stamp(quant_blocks, quant_dots, quant_simd, float_kernels, float_moe, type_table)


def x_sums(x: np.ndarray) -> np.ndarray:
    """x (n, cols) -> (n, cols // 16): sums of x by 16 values, what the blocks' offsets and mins
    multiply (`quant_dots.py`)."""
    n, cols = x.shape
    return np.ascontiguousarray(x[:, : cols // LANES * LANES].reshape(n, -1, LANES).sum(axis=-1))


def _gemv(loop, stamp=STAMP):
    def gemv(type_id, x, raw, out):
        """out (n, rows) = x (n, cols) @ W.T, each row of blocks dotted where it lies."""
        assert stamp  # binds the source stamp into the cache key (`source_stamp`)
        rows, n, groups = raw.shape[0], x.shape[0], x.shape[1] // LANES
        xs = np.empty((n, groups), np.float32)  # `x_sums`, here: in NumPy it cost more than a small GEMV
        for t in range(n):
            for k in range(groups):
                total = np.float32(0.0)
                for j in range(LANES * k, LANES * (k + 1)):
                    total += x[t, j]
                xs[t, k] = total
        for task in loop((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
            acc = np.empty(ACC_LANES, np.float32)  # partial sums, in L1
            r0, r1 = task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)
            for t in range(x.shape[0]):  # the task's rows (16 x a few KB) stay in L1 while x's rows pass
                rows_dot(type_id, raw, r0, r1, x[t], xs[t], acc, out[t])

    return gemv


def _dequantize(loop, stamp=STAMP):
    def dequantize(type_id, elems, nbytes, raw, out):
        """out (rows, cols) = the rows' values, `elems` (`nbytes`) at a time: the same bits as
        `quants.dequantize`."""
        assert stamp  # binds the source stamp into the cache key (`source_stamp`)
        cols = out.shape[1]
        for r in loop(raw.shape[0]):
            row, values = raw[r], out[r]  # views made once a row: each costs reference counting
            for v0 in range(0, cols, elems):
                decode(type_id, row, v0, min(elems, cols - v0), elems, nbytes, values, v0)

    return dequantize


GEMV = serial_and_parallel(_gemv)
DEQUANTIZE = serial_and_parallel(_dequantize, fastmath=False)  # exact: the NumPy dequantizer's bits


def decode_run(type_id: int) -> tuple[int, int]:
    """(values, bytes) one `decode` call takes: a block, or FLOAT_RUN values of F16."""
    t = ggml_type(type_id)
    return (FLOAT_RUN, FLOAT_RUN * t.block_bytes) if t.block_elems == 1 else (t.block_elems, t.block_bytes)


def gemv(x: np.ndarray, raw: np.ndarray, type_id: int) -> np.ndarray:
    """x (n, cols) float32, raw (rows, row_bytes) -> (n, rows): the fused decode product."""
    out = np.empty((x.shape[0], raw.shape[0]), np.float32)
    pick(GEMV, out.size * x.shape[1], GEMV_PARALLEL_MIN)(type_id, x, raw, out)
    return out


def dequantize(raw: np.ndarray, type_id: int, cols: int, out: np.ndarray | None = None) -> np.ndarray:
    """raw (rows, row_bytes) -> float32 (rows, cols), in parallel: equals `quants.dequantize`."""
    out = np.empty((raw.shape[0], cols), np.float32) if out is None else out
    if type_id in (F32, BF16):  # nothing to decode: a view, or a shift
        out[:] = raw.view("<f4") if type_id == F32 else (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        return out
    pick(DEQUANTIZE, raw.shape[0] * cols)(type_id, *decode_run(type_id), raw, out)
    return out


def linear(x: np.ndarray, raw: np.ndarray, type_id: int, cols: int) -> np.ndarray:
    """x (..., cols) @ W.T for W (rows, cols) stored as GGUF blocks raw (rows, row_bytes) -> (..., rows)
    float32: the contract of `quants_matrix.dequantize_linear`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:  # (batch, seq, cols) too
        return linear(x.reshape(-1, x.shape[-1]), raw, type_id, cols).reshape(*x.shape[:-1], raw.shape[0])
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.ndim != 2 or raw.shape[1] != row_bytes(type_id, cols) or x.shape[-1] != cols:
        raise ValueError(f"{GGML_TYPES[type_id].name}: x {x.shape} against rows of {raw.shape[1:]} bytes for {cols} columns")
    if x.shape[0] <= GEMV_MAX_ROWS:  # F32 / F16 / BF16 rows too: see gguf_weights.GGUFCheckpoint._stored
        return gemv(x, raw, type_id)
    if type_id in (F32, BF16):
        return float_linear(x, raw.view(np.float32 if type_id == F32 else np.uint16))
    out = np.empty((x.shape[0], raw.shape[0]), np.float32)
    block = np.empty((min(BLOCK_ROWS, raw.shape[0]), cols), np.float32)
    for r0 in range(0, raw.shape[0], BLOCK_ROWS):
        rows = raw[r0 : r0 + BLOCK_ROWS]
        dequantize(rows, type_id, cols, block[: len(rows)])
        out[:, r0 : r0 + len(rows)] = x @ block[: len(rows)].T
    return out
