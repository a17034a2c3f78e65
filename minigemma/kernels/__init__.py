"""Numba kernels for the hot loops, and the one switch between them and their NumPy twins.

| NumPy twin (the one to read)                       | kernel (the one to run)            |
| -------------------------------------------------- | ---------------------------------- |
| `attention.attend` + `attention.attention_mask`    | `kernels/attention.py`             |
| `moe.experts`                                      | `kernels/moe.py`                   |
| `x @ W.T`; `bf16.bf16_linear` (widen, then BLAS)   | `kernels/linear.py` (GEMV on bf16, small f32) |

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
from collections.abc import Callable
from dataclasses import dataclass

from ..attention import attend_positions
from ..moe import experts
from ..errors import ConfigError

ENV_VAR = "MINIGEMMA_KERNELS"
# Numba's OpenMP threads wait for work sleeping, not spinning, unless the user says otherwise: on
# a busy 2-core machine spinning threads steal the core the working thread needs, and parallel
# GEMVs measured 3x slower than serial ones (see threads.py); idle, sleeping costs ~10 us a call.
OMP_WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
# What the kernels let LLVM do: reassociate sums (so dot products vectorise) and fuse multiply-adds.
# No assumption that values are finite: masked attention scores are -inf on purpose.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Backend:
    """The implementations a forward pass calls for its hot loops."""

    name: str
    attend: Callable  # (q, k, v, q_pos, k_pos, window, causal, both_ways) -> (q_len, heads, head_dim)
    experts: Callable  # `moe.experts`' contract
    # (x, W (out, in) as stored: float32 or bf16 bits) -> x @ W.T, which keeps weights as stored
    # (`checkpoint.StoredMatrix`); None: plain float32 arrays and `x @ W.T`, bf16 widened at
    # load, the faster choice when nothing reads bf16 directly (see bf16.py)
    linear: Callable | None


NUMPY = Backend("numpy", attend_positions, experts, None)


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
