"""GGUF, llama.cpp's file format, read through a memory map: header, metadata, tensor index.

A GGUF file is one header followed by one block of tensor bytes:

    magic "GGUF" | version u32 (2 or 3) | tensor count u64 | metadata count u64
    metadata:  key (string) | value type u32 | value          (e.g. "gemma3.block_count" u32 18)
    tensors:   name (string) | n_dims u32 | dims u64 x n_dims | ggml type u32 | offset u64
    padding to `general.alignment` (default 32)
    data:      each tensor's bytes at data start + its offset (offsets aligned too)

A string is a u64 byte count and UTF-8 bytes; an array is an element type u32, a u64 count and the
elements (strings, numbers, even arrays). Everything is little-endian. Dims are listed innermost
first (ggml's `ne[0]` is a row's length), so a PyTorch weight (out, in) is stored as [in, out]:
we turn them around, and a tensor reads as the (rows, cols) matrix the Hugging Face names expect.

A quantized tensor stores each row as blocks (`GGML_TYPES`: 32 or 256 values in 18 ... 292 bytes).
`GGUFFile.raw` hands out a tensor's bytes as a view of the map: (rows, bytes per row) for blocks,
a typed array for F32 / F16 / BF16. Nothing is read or converted until asked for.

We parse the format ourselves (the `gguf` package is the cross-check in the tests, not a runtime
dependency): so that every malformation -- a truncated header or tensor, a wrong magic or version,
a tensor whose shape or offset disagrees with the file, an unknown type -- is one `CheckpointError`
naming the file, the tensor or key, what was expected and what was found, never a NumPy traceback.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 counted with u32s; llama.cpp has written 3 since 2023
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 8  # arrays of arrays: deeper than this is a corrupt file, not a model

# metadata value types: id -> (name, NumPy dtype); STRING and ARRAY are read by hand
STRING, ARRAY = 8, 9
SCALAR_TYPES = {
    0: ("UINT8", np.dtype("<u1")),
    1: ("INT8", np.dtype("<i1")),
    2: ("UINT16", np.dtype("<u2")),
    3: ("INT16", np.dtype("<i2")),
    4: ("UINT32", np.dtype("<u4")),
    5: ("INT32", np.dtype("<i4")),
    6: ("FLOAT32", np.dtype("<f4")),
    7: ("BOOL", np.dtype("?")),
    10: ("UINT64", np.dtype("<u8")),
    11: ("INT64", np.dtype("<i8")),
    12: ("FLOAT64", np.dtype("<f8")),
}


@dataclass(frozen=True)
class GGMLType:
    """A tensor storage type: `block` values are stored in `block_bytes` bytes."""

    id: int
    name: str
    block: int
    block_bytes: int


# every type llama.cpp defines (ggml.h `ggml_type`), so any file's tensors can be sized and named;
# which of them minigemma can compute with is the dequantizer's business (`gguf_weights.py`)
GGML_TYPES = {
    t.id: t
    for t in (
        GGMLType(0, "F32", 1, 4), GGMLType(1, "F16", 1, 2), GGMLType(2, "Q4_0", 32, 18), GGMLType(3, "Q4_1", 32, 20),
        GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24), GGMLType(8, "Q8_0", 32, 34),
        GGMLType(9, "Q8_1", 32, 40), GGMLType(10, "Q2_K", 256, 84), GGMLType(11, "Q3_K", 256, 110),
        GGMLType(12, "Q4_K", 256, 144), GGMLType(13, "Q5_K", 256, 176), GGMLType(14, "Q6_K", 256, 210),
        GGMLType(15, "Q8_K", 256, 292), GGMLType(16, "IQ2_XXS", 256, 66), GGMLType(17, "IQ2_XS", 256, 74),
        GGMLType(18, "IQ3_XXS", 256, 98), GGMLType(19, "IQ1_S", 256, 50), GGMLType(20, "IQ4_NL", 32, 18),
        GGMLType(21, "IQ3_S", 256, 110), GGMLType(22, "IQ2_S", 256, 82), GGMLType(23, "IQ4_XS", 256, 136),
        GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2), GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8),
        GGMLType(28, "F64", 1, 8), GGMLType(29, "IQ1_M", 256, 56), GGMLType(30, "BF16", 1, 2),
        GGMLType(34, "TQ1_0", 256, 54), GGMLType(35, "TQ2_0", 256, 66), GGMLType(39, "MXFP4", 32, 17),
        GGMLType(40, "NVFP4", 64, 36), GGMLType(41, "Q1_0", 128, 18),
    )
}
PLAIN_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}  # BF16 as raw bits


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the index. `shape`: PyTorch order (outermost first), the reverse of the file's."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int

    @property
    def row_bytes(self) -> int:
        return self.shape[-1] // self.type.block * self.type.block_bytes


class Reader:
    """Reads the header front to back; running off the end is a named 'truncated' error."""

    def __init__(self, buf, path: str):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CheckpointError(
                f"{self.path}: truncated header: {what} needs {n} bytes at byte {self.pos}, the file has {len(self.buf)}"
            )
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def scalar(self, type_id: int, what: str):
        dtype = SCALAR_TYPES[type_id][1]
        value = np.frombuffer(self.take(dtype.itemsize, what), dtype)[0]
        return value.item()

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what: str) -> str:
        n = self.u64(f"{what} (length)")
        raw = self.take(n, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{self.path}: {what} is not UTF-8 ({e})") from None

    def value(self, type_id: int, what: str, depth: int = 0):
        """One metadata value: a Python scalar or str; an array of numbers as a NumPy array,
        of strings (or arrays) as a list."""
        if type_id in SCALAR_TYPES:
            return self.scalar(type_id, what)
        if type_id == STRING:
            return self.string(what)
        if type_id != ARRAY:
            raise CheckpointError(f"{self.path}: {what} has value type {type_id}, expected one of {value_type_ids()}")
        if depth >= MAX_NESTING:
            raise CheckpointError(f"{self.path}: {what} nests arrays deeper than {MAX_NESTING}")
        item_type, count = self.u32(f"{what} (element type)"), self.u64(f"{what} (count)")
        if item_type in SCALAR_TYPES:
            dtype = SCALAR_TYPES[item_type][1]
            if count > len(self.buf):  # before multiplying: a corrupt count can be near 2**64
                self.take(len(self.buf) + 1, f"{what} ({count} elements)")
            return np.frombuffer(self.take(count * dtype.itemsize, f"{what} ({count} elements)"), dtype).copy()
        if item_type not in (STRING, ARRAY):
            raise CheckpointError(f"{self.path}: {what} has element type {item_type}, expected one of {value_type_ids()}")
        if count > len(self.buf) - self.pos:  # every element takes at least one byte
            raise CheckpointError(
                f"{self.path}: truncated header: {what} says {count} elements at byte {self.pos}, the file has {len(self.buf)} bytes"
            )
        return [self.value(item_type, f"{what}[{i}]", depth + 1) for i in range(count)]


def value_type_ids() -> list[int]:
    return sorted([*SCALAR_TYPES, STRING, ARRAY])


class GGUFFile:
    """A GGUF file, mapped: `metadata` (key -> value), `tensors` (name -> `GGUFTensor`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            raise CheckpointError(f"{path}: cannot open ({e.strerror})") from None
        r = Reader(memoryview(self._map), path)
        magic = bytes(r.take(len(MAGIC), "the magic number"))
        if magic != MAGIC:
            raise CheckpointError(f"{path}: not a GGUF file (magic {magic!r}, expected {MAGIC!r})")
        self.version = r.u32("the version")
        if self.version not in VERSIONS:
            raise CheckpointError(f"{path}: GGUF version {self.version}, minigemma reads versions {list(VERSIONS)}")
        n_tensors, n_kv = r.u64("the tensor count"), r.u64("the metadata count")
        self.metadata = read_metadata(r, n_kv)
        alignment = self.metadata.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"{path}: {ALIGNMENT_KEY} is {alignment!r}, expected a power of two")
        infos = [read_tensor_info(r, i) for i in range(min(n_tensors, len(self._map)))]
        if len(infos) < n_tensors:  # a count larger than the file could hold: it runs off the end
            r.take(len(self._map), f"tensor {len(infos)} of {n_tensors}")
        self.data_start = -(-r.pos // alignment) * alignment
        self.tensors = place_tensors(infos, self.data_start, alignment, len(self._map), path)

    def raw(self, t: GGUFTensor) -> np.ndarray:
        """A tensor's stored values, a read-only view of the map: F32 / F16 / BF16 (as uint16 bits)
        in its shape; block-quantized types as uint8 (rows, bytes per row)."""
        if t.type.name in PLAIN_DTYPES:
            dtype = PLAIN_DTYPES[t.type.name]
            return np.frombuffer(self._map, dtype, t.nbytes // dtype.itemsize, t.start).reshape(t.shape)
        rows = t.nbytes // t.row_bytes if t.row_bytes else 0
        return np.frombuffer(self._map, np.uint8, t.nbytes, t.start).reshape(rows, t.row_bytes)


def read_metadata(r: Reader, count: int) -> dict:
    metadata = {}
    for i in range(count):
        key = r.string(f"metadata key {i}")
        type_id = r.u32(f"the value type of {key!r}")
        if key in metadata:
            raise CheckpointError(f"{r.path}: metadata key {key!r} appears twice")
        metadata[key] = r.value(type_id, f"metadata {key!r}")
    return metadata


def read_tensor_info(r: Reader, i: int) -> tuple:
    name = r.string(f"the name of tensor {i}")
    n_dims = r.u32(f"the dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise CheckpointError(f"{r.path}: tensor {name!r} has {n_dims} dimensions, expected 1 to {MAX_DIMS}")
    dims = [r.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
    type_id = r.u32(f"the type of tensor {name!r}")
    offset = r.u64(f"the data offset of tensor {name!r}")
    if type_id not in GGML_TYPES:
        raise CheckpointError(f"{r.path}: tensor {name!r} has ggml type {type_id}, which no version of ggml defines")
    return name, tuple(reversed(dims)), GGML_TYPES[type_id], offset


def place_tensors(infos: list, data_start: int, alignment: int, size: int, path: str) -> dict[str, GGUFTensor]:
    """Check each tensor against the file: whole blocks per row, aligned, inside the data, no overlap."""
    tensors = {}
    for name, shape, kind, offset in infos:
        if name in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} appears twice in the index")
        if shape[-1] % kind.block:
            raise CheckpointError(
                f"{path}: tensor {name!r} of shape {list(shape)} is {kind.name}, whose rows must hold whole blocks of "
                f"{kind.block} values; found rows of {shape[-1]}"
            )
        count = int(np.prod(shape, dtype=object))  # Python ints: a corrupt dim must not overflow
        nbytes = count // kind.block * kind.block_bytes
        if offset % alignment:
            raise CheckpointError(f"{path}: tensor {name!r} starts at data offset {offset}, not a multiple of the alignment {alignment}")
        if data_start + offset + nbytes > size:
            raise CheckpointError(
                f"{path}: truncated tensor data: tensor {name!r} ({list(shape)} {kind.name}, {nbytes} bytes at data "
                f"offset {offset}) ends at byte {data_start + offset + nbytes}, the file has {size}"
            )
        tensors[name] = GGUFTensor(name, kind, shape, data_start + offset, nbytes)
    spans = sorted((t.start, t.start + t.nbytes, t.name) for t in tensors.values() if t.nbytes)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{path}: tensors {first!r} and {second!r} overlap (one starts at byte {start}, before the other ends at byte {end})")
    return tensors
