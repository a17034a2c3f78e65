"""Numba kernels for the hot loops, and the one switch between them and their NumPy twins.

| NumPy twin (the one to read)                       | kernel (the one to run)            |
| -------------------------------------------------- | ---------------------------------- |
| `text/attention.attend_positions`                  | `kernels/attention.py` (BLAS tiles), `kernels/decode_attention.py` (few queries) |
| `text/moe.experts`                                 | `kernels/moe.py`                   |
| `x @ W.T`; `weights/bf16.bf16_linear` (widen, BLAS)| `kernels/linear.py` (GEMV on bf16, small f32) |
| `weights/quants_matrix.dequantize_linear` (GGUF)   | `kernels/quant.py` (fused GEMV on the blocks; prefill: dequantize a block of rows, BLAS) |
| `text/moe.experts` on `QuantExperts`               | `kernels/quant_moe.py` (only the chosen experts' blocks are read) |

The switch, in this order:

    minigemma.load(path, kernels=False)        the argument wins;
    MINIGEMMA_KERNELS=0 minigemma generate ...  else the environment variable (0 off, 1 on);
                                                else kernels on.

Both paths compute the same float32 values (tested to 1e-5 on the same inputs); the kernels are
only faster. Importing minigemma imports no Numba: the kernels modules are imported, and compiled
(or read from the on-disk cache), the first time a model that uses them runs.
"""

from __future__ import annotations

import os
from ..errors import ConfigError
from ..text.backend import NUMPY, Backend

__all__ = ["Backend", "NUMPY", "backend", "kernels_enabled", "ENV_VAR", "WAIT_POLICY"]

ENV_VAR = "MINIGEMMA_KERNELS"
# Numba's OpenMP threads wait for work spinning ~0.1 ms, then sleeping, unless the user chose a
# policy (either variable set): decoding's back-to-back GEMVs find them awake, prefill's GEMMs get
# the cores back from them (the measured policy: threads.py).
WAIT_POLICY = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "10000"}
ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")




def kernels_enabled(flag: bool | None = None) -> bool:
    """The switch: the argument if given, else $MINIGEMMA_KERNELS, else on."""
    if flag is not None:
        return bool(flag)
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    if value not in ON + OFF:
        raise ConfigError(f"{ENV_VAR}: expected one of {ON + OFF}, found {value!r}")
    return value in ON


def backend(flag: bool | None = None) -> Backend:
    """`NUMPY`, or the Numba kernels when the switch says so."""
    if not kernels_enabled(flag):
        return NUMPY
    if not any(name in os.environ for name in WAIT_POLICY):  # read when Numba first starts its threads
        os.environ.update(WAIT_POLICY)
    from .attention import attend
    from .linear import linear
    from .quant import linear as quant_linear
    from .quant_moe import experts as fused_experts  # float32 experts go on to moe.py

    return Backend("numba", attend, fused_experts, linear, quant_linear)
