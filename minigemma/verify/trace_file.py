"""Trace files: named activations on disk, for `minigemma trace` / `compare` and for other ports.

Two formats, both readable without minigemma or torch:

* `.safetensors`: one tensor per name (float32, token ids int64), and string metadata in the
  header's `__metadata__`;
* `.npz` (NumPy): one array per name, and the same metadata as a JSON string in an array named
  `__metadata__` (optional, like every metadata key, for a file written by another program).

Metadata: `format` (minigemma-trace/1), `source` (who computed it), `minigemma_version`,
`config_sha256` (the resolved model config), `token_ids` (JSON list), `dtype` (what the model
computed in: float32, or bfloat16 for a reference run as real checkpoints run), `prompt` when the ids
came from text, and `kv_sources` (JSON object: each KV-shared layer -> the layer whose keys and
values it attends to). `compare` refuses traces of different token ids.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file

from ..weights.checkpoint import SafetensorsFile, to_f32
from ..errors import CheckpointError, InputError
from .trace import forward_order

FORMAT = "minigemma-trace/1"
METADATA_KEY = "__metadata__"  # the npz array holding the metadata JSON
SUFFIXES = (".safetensors", ".npz")
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class Trace:
    path: str
    activations: dict[str, np.ndarray]  # name -> array, forward order
    metadata: dict = field(default_factory=dict)  # token_ids as a list of ints

    @property
    def token_ids(self) -> list[int] | None:
        return self.metadata.get("token_ids")

    @property
    def kv_sources(self) -> dict[int, int]:
        """KV-shared layer -> the layer whose keys/values it reads (empty when not stated)."""
        return self.metadata.get("kv_sources", {})


def trace_metadata(config_sha256: str | None, token_ids, source: str, prompt: str | None = None,
                   dtype: str = "float32", kv_sources: dict | None = None) -> dict:
    from ..version import __version__

    meta = {
        "format": FORMAT,
        "source": source,
        "minigemma_version": __version__,
        "config_sha256": config_sha256,
        "token_ids": [int(i) for i in token_ids],
        "dtype": dtype,
    }
    if config_sha256 is None:  # a port's trace: no minigemma config to hash
        del meta["config_sha256"]
    if prompt is not None:
        meta["prompt"] = prompt
    if kv_sources:
        meta["kv_sources"] = {str(k): int(v) for k, v in sorted(kv_sources.items())}
    return meta


def _suffix(path: str, argument: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{argument} {path}: expected a .safetensors or .npz trace file, found {suffix or 'no suffix'!r}")
    return suffix


def save_trace(path: str, activations: dict[str, np.ndarray], metadata: dict) -> None:
    """Write a trace; the format follows the suffix (.safetensors or .npz)."""
    suffix = _suffix(path, "--out")
    arrays = {name: np.ascontiguousarray(a) for name, a in activations.items()}
    try:
        if suffix == ".safetensors":  # header metadata holds strings only
            save_file(arrays, path, metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
        else:
            np.savez(path, **arrays, **{METADATA_KEY: np.array(json.dumps(metadata))})
    except (OSError, SafetensorError) as e:
        raise InputError(f"--out {path}: cannot write ({getattr(e, 'strerror', None) or e})") from None


def load_trace(path: str) -> Trace:
    """Read a trace file; bf16 / f16 widen to float32. Errors name the file."""
    suffix = _suffix(path, "trace")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such trace file")
    arrays, meta = _read_safetensors(path) if suffix == ".safetensors" else _read_npz(path)
    if not arrays:
        raise InputError(f"{path}: the trace holds no activations")
    return Trace(path, {n: arrays[n] for n in forward_order(arrays)}, _parse_metadata(path, meta))


def _read_safetensors(path: str):
    try:
        f = SafetensorsFile(path)
    except CheckpointError as e:
        raise InputError(str(e)) from None
    arrays = {}
    for name, ref in f.tensors.items():
        raw = f.raw(ref)
        arrays[name] = to_f32(raw, ref.dtype) if ref.dtype in FLOAT_DTYPES else np.array(raw)
    return arrays, dict(f.metadata)


def _read_npz(path: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    meta = arrays.pop(METADATA_KEY, None)
    for name, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise InputError(f"{path}: activation {name!r} has dtype {a.dtype}, expected numbers")
    arrays = {n: a.astype(np.float32) if a.dtype.kind == "f" and a.dtype.itemsize < 4 else a for n, a in arrays.items()}
    if meta is None:
        return arrays, {}
    try:
        meta = json.loads(str(meta))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: {METADATA_KEY} is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: {METADATA_KEY} must be a JSON object, found {type(meta).__name__}")
    return arrays, meta


def _parse_metadata(path: str, meta: dict) -> dict:
    """Metadata values are strings on disk; `token_ids` is a JSON list of ints, `kv_sources` a
    JSON object of layer -> source layer (keys become ints)."""
    meta = dict(meta)
    ids = meta.get("token_ids")
    if ids is not None:
        try:
            ids = json.loads(ids) if isinstance(ids, str) else ids
            if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
                raise ValueError
        except ValueError:
            raise InputError(f"{path}: metadata token_ids must be a JSON list of integers, found {meta['token_ids']!r}") from None
        meta["token_ids"] = ids
    sources = meta.get("kv_sources")
    if sources is not None:
        try:
            parsed = json.loads(sources) if isinstance(sources, str) else sources
            meta["kv_sources"] = {int(k): v for k, v in parsed.items()}
            if not all(isinstance(v, int) for v in meta["kv_sources"].values()):
                raise ValueError
        except (ValueError, AttributeError, TypeError):
            raise InputError(
                f"{path}: metadata kv_sources must be a JSON object layer -> source layer, e.g. {{\"4\": 2}}, found {sources!r}"
            ) from None
    return meta
