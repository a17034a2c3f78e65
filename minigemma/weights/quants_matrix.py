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

from .quants import GGML_TYPES, dequantize

BLOCK_ROWS = 256  # rows dequantized at a time by the twin (256 x 8192 floats = 8 MB)


def dequantize_linear(x: np.ndarray, raw: np.ndarray, type_id: int, cols: int) -> np.ndarray:
    """x (n, cols) float32 @ W.T for W (rows, cols) stored as GGUF blocks raw (rows, row_bytes)
    -> (n, rows) float32: dequantize, then multiply, a block of rows at a time."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], raw.shape[0]), np.float32)
    for r0 in range(0, raw.shape[0], BLOCK_ROWS):
        block = dequantize(raw[r0 : r0 + BLOCK_ROWS], type_id, cols)  # (rows, cols): the only float32 copy
        out[:, r0 : r0 + len(block)] = x @ block.T
    return out


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
