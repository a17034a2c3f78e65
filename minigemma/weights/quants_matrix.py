"""Quantized weights kept as stored: the GGUF blocks stay in the memory-mapped file, and each
product reads them there.

`QuantMatrix` is what `checkpoint.StoredMatrix` is for float32 and bf16: a (out, in) weight that
`ops.linear` multiplies through `.apply(x)`, and whose rows an embedding lookup dequantizes one
token at a time (`matrix[ids]`). `QuantExperts` holds a stack of them, the MoE experts of one
layer: `experts[e]` is expert e's matrix, a view, so only the chosen experts' blocks are read.

The product is the backend's: `dequantize_linear` below, the readable twin (dequantize a block of
rows, multiply with BLAS, next block: the float32 copy never exceeds one block), or the Numba
kernels of `kernels/quant.py`, which never write the float32 matrix at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError
from .quants import GGML_TYPES, dequantize, row_bytes

BLOCK_ROWS = 256  # rows dequantized at a time by the twin (256 x 8192 floats = 8 MB)


def dequantize_linear(x: np.ndarray, raw: np.ndarray, type_id: int, cols: int) -> np.ndarray:
    """x (..., cols) float32 @ W.T for W (rows, cols) stored as GGUF blocks raw (rows, row_bytes)
    -> (..., rows) float32: dequantize, then multiply, a block of rows at a time."""
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(-1, x.shape[-1])  # (batch, seq, cols) too
    out = np.empty((flat.shape[0], raw.shape[0]), np.float32)
    for r0 in range(0, raw.shape[0], BLOCK_ROWS):
        block = dequantize(raw[r0 : r0 + BLOCK_ROWS], type_id, cols)  # (rows, cols): the only float32 copy
        out[:, r0 : r0 + len(block)] = flat @ block.T
    return out.reshape(*x.shape[:-1], raw.shape[0])


@dataclass(frozen=True)
class QuantMatrix:
    """A (rows, cols) weight matrix as GGUF stores it, usually a view of the mapped file."""

    raw: np.ndarray  # (rows, row_bytes) uint8: each row a run of blocks
    type_id: int  # GGML type id (`quants.GGML_TYPES`)
    cols: int  # values per row
    linear: Callable = dequantize_linear  # (x (n, cols), raw, type_id, cols) -> x @ W.T, (n, rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.raw.shape[0], self.cols)

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type_id].name

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.linear(x, self.raw, self.type_id, self.cols)

    def __getitem__(self, rows) -> np.ndarray:
        """Rows as float32 (an int gives one row, (cols,)): only their blocks are read."""
        picked = self.raw[rows]
        values = dequantize(picked.reshape(-1, self.raw.shape[1]), self.type_id, self.cols)
        return values.reshape(*picked.shape[:-1], self.cols)

    def f32(self) -> np.ndarray:
        """The whole matrix dequantized (for tests and converters; the model never needs it)."""
        return dequantize(self.raw, self.type_id, self.cols)


@dataclass(frozen=True)
class QuantExperts:
    """The stacked expert matrices of one MoE layer, (experts, rows, cols) as GGUF blocks: one
    3-D GGUF tensor (`ffn_gate_up_exps`, `ffn_down_exps`), expert after expert."""

    raw: np.ndarray  # (experts, rows, row_bytes) uint8
    type_id: int
    cols: int
    linear: Callable = dequantize_linear

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.raw.shape[0], self.raw.shape[1], self.cols)

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __getitem__(self, expert: int) -> QuantMatrix:
        return QuantMatrix(self.raw[expert], self.type_id, self.cols, self.linear)

    def f32(self) -> np.ndarray:
        return dequantize(self.raw.reshape(-1, self.raw.shape[2]), self.type_id, self.cols).reshape(self.shape)


def quant_tensor(buffer, offset: int, type_id: int, shape: tuple[int, ...], linear: Callable = dequantize_linear):
    """A GGUF tensor's bytes in `buffer` (the mapped file), starting at byte `offset`, as a
    `QuantMatrix` (shape (rows, cols)) or `QuantExperts` (experts, rows, cols): a view, nothing read.
    `shape` is NumPy's order (GGUF lists the dimensions the other way round). A `CheckpointError`
    names the type or the bytes that do not fit; the caller puts the file and tensor in front."""
    if len(shape) not in (2, 3):
        raise CheckpointError(f"expected a matrix or a stack of them, found shape {list(shape)}")
    per_row = row_bytes(type_id, shape[-1])
    count = int(np.prod(shape[:-1], dtype=np.int64)) * per_row
    if offset < 0 or offset + count > len(buffer):
        raise CheckpointError(f"{GGML_TYPES[type_id].name} {list(shape)} needs bytes {offset}..{offset + count}, the data has {len(buffer)}")
    raw = np.frombuffer(buffer, np.uint8, count=count, offset=offset).reshape(*shape[:-1], per_row)
    if len(shape) == 2:
        return QuantMatrix(raw, type_id, shape[-1], linear)
    return QuantExperts(raw, type_id, shape[-1], linear)
