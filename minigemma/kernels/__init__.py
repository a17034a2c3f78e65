"""Numba kernels for the hot loops, and the one switch between them and their NumPy twins.

| NumPy twin (the one to read)                       | kernel (the one to run)            |
| -------------------------------------------------- | ---------------------------------- |
| `text/attention.attend_positions`                  | `kernels/attention.py` (BLAS tiles), `kernels/decode_attention.py` (few queries) |
| `text/moe.experts`                                 | `kernels/moe.py`                   |
| `x @ W.T`; `weights/bf16.bf16_linear` (widen, BLAS)| `kernels/linear.py` (GEMV on bf16, small f32) |

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

__all__ = ["Backend", "NUMPY", "backend", "kernels_enabled", "ENV_VAR"]

ENV_VAR = "MINIGEMMA_KERNELS"
# Numba's OpenMP threads wait for work sleeping, not spinning, unless the user says otherwise:
# spinning threads hold the cores OpenBLAS's prefill GEMMs need, and steal the working thread's
# core on a shared machine; sleeping costs ~10 us a parallel call (the policy: threads.py).
OMP_WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
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
    os.environ.setdefault(*OMP_WAIT_POLICY)  # read when Numba first starts its threads
    from .attention import attend
    from .linear import linear
    from .moe import experts as fused_experts

    return Backend("numba", attend, fused_experts, linear)
