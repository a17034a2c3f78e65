"""The GeGLU feed-forward block (mirrors `Gemma4TextMLP`).

`down(gelu_tanh(gate(x)) * up(x))`: a gated MLP. The gate branch decides, per hidden unit, how much
of the up branch passes. Gemma 4's KV-shared layers, which save the key/value projections, may
spend those parameters on an MLP twice as wide (`use_double_wide_mlp`): the width comes from the
layer's `LayerSpec.mlp_intermediate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights.checkpoint import Checkpoint
from .ops import linear, no_tap


@dataclass(frozen=True)
class MLPWeights:
    gate_proj: np.ndarray  # (intermediate, hidden)
    up_proj: np.ndarray  # (intermediate, hidden)
    down_proj: np.ndarray  # (hidden, intermediate)


def load_mlp(ckpt: Checkpoint, prefix: str, hidden: int, intermediate: int) -> MLPWeights:
    return MLPWeights(
        gate_proj=ckpt.matrix(f"{prefix}.gate_proj.weight", (intermediate, hidden)),
        up_proj=ckpt.matrix(f"{prefix}.up_proj.weight", (intermediate, hidden)),
        down_proj=ckpt.matrix(f"{prefix}.down_proj.weight", (hidden, intermediate)),
    )


def mlp(x: np.ndarray, w: MLPWeights, act, tap=no_tap) -> np.ndarray:
    """(seq, hidden) -> (seq, hidden). Names `gated` (the down projection's input) and `out`."""
    gated = act(linear(x, w.gate_proj)) * linear(x, w.up_proj)  # (seq, intermediate)
    tap("gated", gated)
    out = linear(gated, w.down_proj)
    tap("out", out)
    return out
