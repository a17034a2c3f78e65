"""Quantized weights as GGUF stores them: one small NumPy dequantizer per block format.

A GGUF file (llama.cpp's format) stores a weight matrix row by row, and each row as a run of
*blocks*: a block packs a fixed number of consecutive values (32, or 256 for the "K-quants") into
a few small integers plus one or two float16 scales. Decoding reads every weight once per token,
so the bytes per weight decide its speed: float32 is 4 bytes a weight, Q8_0 1.06, Q4_K 0.56.

Each dequantizer below draws its block (byte offsets on top, what they hold underneath) and turns
blocks back into float32 exactly as llama.cpp (and the `gguf` package, the tests' cross-check,
bit for bit) does: `quants_blocks.py` for the plain floats and the 32-value blocks, `quants_k.py`
for the K-quants. These are the *twins*, the readable versions; `kernels/quant.py` multiplies by
the blocks without ever writing the float32 matrix out.

Every dequantizer has one interface: raw bytes (rows, row_bytes) uint8 -> float32 (rows, cols).
A "row" is one output feature of a (out_features, in_features) matrix; the blocks run along the
inputs, so `cols` must be a multiple of the block size.

    F32, F16, BF16       plain floats, 1 value a "block"
    Q8_0                 32 values: one f16 scale, 32 int8                         8.5 bits a weight
    Q4_0, Q4_1           32 values: scale (and min), 4-bit values two to a byte    4.5 / 5
    Q5_0, Q5_1           32 values: as Q4_x, plus one high bit each in a 32-bit word  5.5 / 6
    Q4_K, Q5_K, Q6_K     256 values in sub-blocks with their own 6- or 8-bit scales  4.5 / 5.5 / 6.56
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import CheckpointError
from .quants_blocks import BLOCKS, FLOATS
from .quants_k import K_QUANTS


class GGMLType(NamedTuple):
    name: str
    block_elems: int  # values one block packs
    block_bytes: int  # bytes one block takes


GGML_TYPES = {  # GGML type id (as GGUF stores it) -> its block; the ids are llama.cpp's `ggml_type`
    0: GGMLType("F32", 1, 4),
    1: GGMLType("F16", 1, 2),
    2: GGMLType("Q4_0", 32, 18),
    3: GGMLType("Q4_1", 32, 20),
    6: GGMLType("Q5_0", 32, 22),
    7: GGMLType("Q5_1", 32, 24),
    8: GGMLType("Q8_0", 32, 34),
    12: GGMLType("Q4_K", 256, 144),
    13: GGMLType("Q5_K", 256, 176),
    14: GGMLType("Q6_K", 256, 210),
    30: GGMLType("BF16", 1, 2),
}
TYPE_IDS = {t.name: i for i, t in GGML_TYPES.items()}
# the other types llama.cpp defines, named in the error for a file that holds one
UNSUPPORTED_NAMES = {
    9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
    20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
    28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}


def ggml_type(type_id: int) -> GGMLType:
    """The block of a supported type id; a `CheckpointError` naming any other (the caller, who
    knows the file and tensor, puts them in front of the message)."""
    if type_id not in GGML_TYPES:
        name = UNSUPPORTED_NAMES.get(type_id, "unknown")
        supported = ", ".join(t.name for t in GGML_TYPES.values())
        raise CheckpointError(f"GGML type {type_id} ({name}) is not supported; minigemma reads {supported}")
    return GGML_TYPES[type_id]


def row_bytes(type_id: int, cols: int) -> int:
    """Bytes one row of `cols` values takes; cols must fill whole blocks."""
    t = ggml_type(type_id)
    if cols % t.block_elems:
        raise CheckpointError(f"{t.name} rows are whole blocks of {t.block_elems} values, found a row of {cols}")
    return cols // t.block_elems * t.block_bytes


def dequantize(raw: np.ndarray, type_id: int, cols: int) -> np.ndarray:
    """raw (rows, row_bytes) uint8, as stored -> float32 (rows, cols)."""
    t = ggml_type(type_id)
    expected = row_bytes(type_id, cols)
    if raw.ndim != 2 or raw.shape[1] != expected:
        raise CheckpointError(f"{t.name} with {cols} columns: expected rows of {expected} bytes, found shape {raw.shape}")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if t.block_elems == 1:
        return FLOATS[t.name](raw)
    blocks = raw.reshape(raw.shape[0], cols // t.block_elems, t.block_bytes)  # (rows, blocks, block_bytes)
    values = DEQUANTIZERS[t.name](blocks)  # (rows, blocks, block_elems)
    return values.reshape(raw.shape[0], cols)


DEQUANTIZERS = {**BLOCKS, **K_QUANTS}  # type name -> blocks (rows, blocks, block_bytes) -> values (rows, blocks, block_elems)
