"""Per-Layer Embeddings, PLE (mirrors `Gemma4TextModel.get_per_layer_inputs`,
`project_per_layer_inputs` and the tail of `Gemma4TextDecoderLayer`).

Besides the main residual stream, every decoder layer receives a small vector of its own per
token (256 dims in E2B/E4B). It is the mix of two parts:

* a *token-identity* part: a row of a big table (vocab x layers x 256), looked up by token id and
  scaled by sqrt(256). The table is huge (E2B: 262144 x 35 x 256 values, most of the "E" models'
  parameters) but only a few rows are needed per token, so it can live in flash / on disk and be
  read row by row: the "PLE in flash" idea. minigemma keeps it memory-mapped;
* a *context* part: the scaled input embedding projected to layers x 256, times 1/sqrt(hidden),
  RMS-normed per layer.

The two are summed and scaled by 1/sqrt(2). Inside layer `i`, after attention and MLP, the layer
gates its slice: `h + norm(project(gelu(gate(h)) * ple_i))`, a low-rank, token-specific nudge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights.checkpoint import Checkpoint, to_f32
from .norm import rms_norm
from .ops import linear, no_tap

MIX_SCALE = np.float32(2.0**-0.5)  # average the token-identity and context parts


@dataclass(frozen=True)
class PLEWeights:
    """Model-level PLE tensors. `table` stays memory-mapped (raw stored dtype, bf16 as uint16)."""

    table: np.ndarray  # (vocab_per_layer, layers * ple_dim), mapped, never read whole
    table_dtype: str  # stored dtype name, e.g. "BF16"
    model_projection: np.ndarray  # (layers * ple_dim, hidden)
    projection_norm: np.ndarray  # (ple_dim,)


@dataclass(frozen=True)
class PLELayerWeights:
    """Per-layer PLE tensors: gate down to ple_dim, project back up, norm."""

    gate: np.ndarray  # (ple_dim, hidden)
    projection: np.ndarray  # (hidden, ple_dim)
    post_norm: np.ndarray  # (hidden,)


def load_ple(ckpt: Checkpoint, prefix: str, vocab: int, n_layers: int, ple_dim: int, hidden: int) -> PLEWeights:
    name = f"{prefix}.embed_tokens_per_layer.weight"
    return PLEWeights(
        table=ckpt.raw(name, (vocab, n_layers * ple_dim)),
        table_dtype=ckpt.ref(name).dtype,
        model_projection=ckpt.matrix(f"{prefix}.per_layer_model_projection.weight", (n_layers * ple_dim, hidden)),
        projection_norm=ckpt.f32(f"{prefix}.per_layer_projection_norm.weight", (ple_dim,)),
    )


def load_ple_layer(ckpt: Checkpoint, prefix: str, hidden: int, ple_dim: int) -> PLELayerWeights:
    return PLELayerWeights(
        gate=ckpt.matrix(f"{prefix}.per_layer_input_gate.weight", (ple_dim, hidden)),
        projection=ckpt.matrix(f"{prefix}.per_layer_projection.weight", (hidden, ple_dim)),
        post_norm=ckpt.f32(f"{prefix}.post_per_layer_input_norm.weight", (hidden,)),
    )


def token_identity(ids: np.ndarray, w: PLEWeights, n_layers: int, ple_dim: int) -> np.ndarray:
    """Gather only the rows of `ids` from the mapped table, scaled by sqrt(ple_dim): (seq, layers, ple_dim)."""
    rows = to_f32(w.table[ids], w.table_dtype)  # reads len(ids) rows from disk, nothing else
    return (rows * np.float32(ple_dim**0.5)).reshape(len(ids), n_layers, ple_dim)


def context_projection(embeds: np.ndarray, w: PLEWeights, n_layers: int, ple_dim: int, eps: float) -> np.ndarray:
    """The context part: scaled embeddings (seq, hidden) projected to (seq, layers, ple_dim),
    times 1/sqrt(hidden), RMS-normed per layer."""
    hidden = embeds.shape[-1]
    context = linear(embeds, w.model_projection) * np.float32(hidden**-0.5)
    return rms_norm(context.reshape(len(embeds), n_layers, ple_dim), w.projection_norm, eps)


def per_layer_inputs(
    identity: np.ndarray, embeds: np.ndarray, w: PLEWeights, n_layers: int, ple_dim: int, eps: float
) -> np.ndarray:
    """Mix token identity (seq, layers, ple_dim) with the context projection of the scaled
    embeddings (seq, hidden): the input every layer gets, (seq, layers, ple_dim)."""
    return mix(identity, context_projection(embeds, w, n_layers, ple_dim, eps))


def mix(identity: np.ndarray, context: np.ndarray) -> np.ndarray:
    return (context + identity) * MIX_SCALE


def apply_per_layer_input(h: np.ndarray, layer_input: np.ndarray, w: PLELayerWeights, act, eps: float, tap=no_tap) -> np.ndarray:
    """Inside a layer: h (seq, hidden) + norm(project(act(gate(h)) * layer_input (seq, ple_dim)))."""
    gated = act(linear(h, w.gate)) * layer_input  # (seq, ple_dim)
    tap("gated", gated)
    out = linear(gated, w.projection)
    tap("out", out)
    out = rms_norm(out, w.post_norm, eps)
    tap("post_norm", out)
    return h + out
