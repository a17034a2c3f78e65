"""Weights from files: where every tensor and setting of a model comes from.

Read in this order:

    config_reader.py   config.json and friends: JSON objects, typed fields, named errors
    checkpoint.py      safetensors, single file or sharded, memory-mapped, f32/f16/bf16 from raw bytes;
                       `StoredMatrix`: a weight kept as stored, multiplied by the backend's `linear`
    bf16.py            the NumPy twin of multiplying by bf16 weights (widen, then BLAS)
    cache_dir.py       where conversions and caches go (~/.cache/minigemma, or $MINIGEMMA_CACHE)
"""

from .checkpoint import Checkpoint, write_safetensors

__all__ = ["Checkpoint", "write_safetensors"]
