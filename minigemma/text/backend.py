"""Which implementation runs a hot loop: the `Backend` a forward pass is handed.

The feature files call `backend.attend`, `backend.experts` and (through the weights)
`backend.linear` rather than a fixed function, so that the Numba kernels (`minigemma/kernels/`)
can stand in for the NumPy twins without the features knowing about them. `NUMPY` is the twins,
the readable version; `kernels.backend()` builds the other one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .attention import attend_positions
from .moe import experts


@dataclass(frozen=True)
class Backend:
    """The implementations a forward pass calls for its hot loops."""

    name: str
    attend: Callable  # (q, k, v, q_pos, k_pos, window, causal, blocks) -> (q_len, heads, head_dim)
    experts: Callable  # `moe.experts`' contract
    # (x, W (out, in) as stored: float32 or bf16 bits) -> x @ W.T, which keeps weights as stored
    # (`checkpoint.StoredMatrix`); None: plain float32 arrays and `x @ W.T`, bf16 widened at
    # load, the faster choice when nothing reads bf16 directly (see bf16.py)
    linear: Callable | None


NUMPY = Backend("numpy", attend_positions, experts, None)
