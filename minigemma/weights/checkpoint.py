"""Safetensors checkpoints, read lazily through a memory map.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
byte range) and one flat block of tensor bytes. We parse that format directly instead of going
through a framework, for three reasons:

* bf16: NumPy has no bfloat16, so a bf16 tensor is read as raw `uint16` and widened to float32 by
  putting its 16 bits in the high half of a 32-bit word (bf16 *is* the top half of an f32);
* laziness: nothing is read until asked for, and a Per-Layer-Embedding table (vocab x layers x
  256, billions of bytes in E2B) can be gathered row by row straight from the mapped file;
* errors: a truncated or corrupt file, a missing tensor or a wrong shape becomes a
  `CheckpointError` naming the file and tensor, never a crash deep inside NumPy.

Large checkpoints come sharded: `model.safetensors.index.json` maps each tensor to its shard.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError

HEADER_SIZE_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits, widened by `bf16_to_f32`
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: the 16 bits become the top half of the word."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class StoredMatrix:
    """A weight matrix kept as stored in the file (float32, or bf16 bits: half the bytes), usually
    a view of the mapped file, together with the matrix product that reads that storage directly
    (`Backend.linear`, e.g. the Numba GEMV of `kernels/linear.py`). `ops.linear` multiplies it."""

    stored: np.ndarray  # (out_features, in_features): float32, or bf16 bits as uint16
    linear: Callable  # (x (n, in), stored) -> x @ W.T, float32 (n, out)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.linear(x, self.stored)

    def __getitem__(self, rows) -> np.ndarray:
        """Rows as float32: an embedding lookup reads only the rows it needs."""
        values = self.stored[rows]
        return bf16_to_f32(values) if values.dtype == DTYPES["BF16"] else np.array(values, dtype=np.float32)


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: its file, dtype name, shape and byte offset in the mapped file."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


class SafetensorsFile:
    """One mapped `.safetensors` file."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER_SIZE_BYTES:
                    raise CheckpointError(f"{path}: truncated ({size} bytes, not even a safetensors header)")
                (header_len,) = struct.unpack("<Q", f.read(HEADER_SIZE_BYTES))
                if header_len > MAX_HEADER_BYTES or HEADER_SIZE_BYTES + header_len > size:
                    raise CheckpointError(
                        f"{path}: corrupt or truncated header (says {header_len} bytes, file has {size})"
                    )
                try:
                    header = json.loads(f.read(header_len))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except OSError as e:
            raise CheckpointError(f"{path}: cannot open ({e.strerror})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        self.metadata = header.pop("__metadata__", None) or {}
        data_start = HEADER_SIZE_BYTES + header_len
        self.tensors: dict[str, TensorRef] = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r}") from None
            if dtype not in DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, minigemma reads {sorted(DTYPES)}")
            expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
            if end - begin != expected:
                raise CheckpointError(
                    f"{path}: tensor {name!r} of shape {list(shape)} {dtype} needs {expected} bytes, header says {end - begin}"
                )
            if data_start + end > size:
                raise CheckpointError(
                    f"{path}: truncated: tensor {name!r} ends at byte {data_start + end}, file has {size}"
                )
            self.tensors[name] = TensorRef(name, path, dtype, shape, data_start + begin, expected)

    def raw(self, ref: TensorRef) -> np.ndarray:
        """The tensor's stored values as a read-only view of the mapped file (bf16 as uint16 bits)."""
        dtype = DTYPES[ref.dtype]
        count = ref.nbytes // dtype.itemsize
        if count == 0:
            return np.zeros(ref.shape, dtype)
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=ref.start).reshape(ref.shape)


class TensorSource:
    """Tensors by name, checked against the shape the caller expects. Subclasses say where
    the values live: `Checkpoint` (mapped safetensors files) or `ArrayCheckpoint` (memory)."""

    directory: str
    refs: dict[str, TensorRef]

    def __init__(self):
        self.accessed: set[str] = set()  # names asked for so far: the rest are unexpected
        # how `matrix` holds weights: None, as float32 arrays (bf16 widened now); a matrix product
        # that reads float32 and bf16 directly (`Backend.linear`): as stored, in `StoredMatrix`
        self.linear: Callable | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.refs

    def names(self) -> list[str]:
        return list(self.refs)

    def ref(self, name: str, shape: tuple[int, ...] | None = None) -> TensorRef:
        self.accessed.add(name)
        if name not in self.refs:
            raise CheckpointError(f"{self.directory}: missing tensor {name!r}")
        ref = self.refs[name]
        if shape is not None and tuple(ref.shape) != tuple(shape):
            raise CheckpointError(f"{ref.file}: tensor {name!r} has shape {list(ref.shape)}, expected {list(shape)}")
        return ref

    def raw(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Stored values, never copied (bf16 as uint16 bits): for lazy row gathers."""
        return self._stored(self.ref(name, shape))

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor as a float32 array in memory."""
        ref = self.ref(name, shape)
        return to_f32(self._stored(ref), ref.dtype)

    def matrix(self, name: str, shape: tuple[int, ...]):
        """A weight matrix for `ops.linear`, kept as stored whenever that costs nothing: with a
        `linear` that reads it, float32 or bf16 as a `StoredMatrix`; without, float32 as a view
        of the mapped file (no copy: pages are read when first used), anything else widened now."""
        ref = self.ref(name, shape)
        stored = self._stored(ref)
        if self.linear is not None and ref.dtype in ("F32", "BF16") and stored.dtype in (DTYPES["F32"], DTYPES["BF16"]):
            return StoredMatrix(stored, self.linear)
        if stored.dtype == np.float32:
            return stored
        return to_f32(stored, ref.dtype)

    def stack(self, name: str, shape: tuple[int, ...]):
        """A stack of weight matrices (MoE experts, (experts, rows, cols)): float32 here; a GGUF
        file's block-quantized experts stay as stored (`gguf_weights.GGUFCheckpoint.stack`)."""
        return self.f32(name, shape)

    def nbytes(self) -> int:
        return sum(ref.nbytes for ref in self.refs.values())

    def _stored(self, ref: TensorRef) -> np.ndarray:
        raise NotImplementedError


class Checkpoint(TensorSource):
    """All tensors of a checkpoint directory (single file or sharded), mapped, read on demand."""

    def __init__(self, directory: str | os.PathLike):
        super().__init__()
        directory = os.fspath(directory)
        self.directory = directory
        index = os.path.join(directory, INDEX_FILE)
        if os.path.exists(index):
            files = self._files_from_index(index)
        elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
            files = [os.path.join(directory, SINGLE_FILE)]
        else:
            files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))
        if not files:
            raise CheckpointError(f"{directory}: no *.safetensors weight files found")
        self.files = [SafetensorsFile(f) for f in files]
        self.refs = {}
        self._owner: dict[str, SafetensorsFile] = {}
        for st in self.files:
            for name, ref in st.tensors.items():
                self.refs[name] = ref
                self._owner[name] = st

    def _files_from_index(self, index: str) -> list[str]:
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{index}: cannot read the shard index ({e})") from None
        files = sorted(set(weight_map.values()))
        for file in files:
            if not os.path.exists(os.path.join(self.directory, file)):
                raise CheckpointError(f"{index}: names shard {file}, which is missing from {self.directory}")
        return [os.path.join(self.directory, file) for file in files]

    def _stored(self, ref: TensorRef) -> np.ndarray:
        return self._owner[ref.name].raw(ref)


class ArrayCheckpoint(TensorSource):
    """Tensors already in memory (name -> float array), behind the same interface: for
    converters, lessons and tests that hold a state dict rather than a file."""

    def __init__(self, tensors: dict[str, np.ndarray], source: str = "<arrays>"):
        super().__init__()
        self.directory = source
        self.arrays = {name: np.asarray(a) for name, a in tensors.items()}
        self.refs = {
            name: TensorRef(name, source, "F32", tuple(a.shape), 0, a.nbytes) for name, a in self.arrays.items()
        }

    def _stored(self, ref: TensorRef) -> np.ndarray:
        return self.arrays[ref.name]


def to_f32(values: np.ndarray, dtype_name: str) -> np.ndarray:
    """Widen stored values (any float dtype, bf16 as bits) to a float32 array we own."""
    if dtype_name == "BF16":
        return bf16_to_f32(values)
    return np.array(values, dtype=np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even as PyTorch does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None, dtype: str = "F32") -> None:
    """Write tensors to a safetensors file, one at a time (a huge checkpoint never sits in memory).

    `tensors` maps name -> (shape, make) where `make()` returns the float32 values, or an iterator
    over consecutive blocks of their rows (a tensor too big to hold at once); `dtype` is the
    stored type ("F32", "F16" or "BF16")."""
    header, layout, offset = {}, [], 0
    for name, (shape, make) in tensors.items():
        stored = dtype
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[stored].itemsize
        header[name] = {"dtype": stored, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        layout.append((name, stored, make))
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data block 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, stored, make in layout:
            values = make()
            for block in [values] if isinstance(values, np.ndarray) else values:
                block = np.asarray(block, dtype=np.float32)
                data = f32_to_bf16(block) if stored == "BF16" else block.astype(DTYPES[stored])
                f.write(np.ascontiguousarray(data).tobytes())
