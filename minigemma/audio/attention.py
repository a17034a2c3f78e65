"""Chunked local self-attention with relative positions (mirrors `Gemma4AudioAttention`,
`Gemma4AudioRelPositionalEncoding` and the blocked mask of `Gemma4AudioModel`).

Speech is local: a frame needs its neighbours, not the whole clip. So the conformer cuts the
frames into blocks of `attention_chunk_size` queries, and each block attends only to a window of
`context_size = chunk + (context_left - 1) + context_right` keys around it. Cost grows linearly
with the clip instead of quadratically.

Positions enter as in Transformer-XL: the logit of query i and key j is

    q_i . k_j            (content, "matrix ac")
  + q_i . r_(i-j)        (position, "matrix bd")

where r_delta is a learned projection of a sinusoid of the distance. The position term is
computed against every distance once, then aligned to the keys by the "rel-shift" trick (pad,
flatten, cut, reshape: appendix B of Transformer-XL, arXiv:1901.02860).

Details of USM's attention, all reproduced here:
* queries are scaled per dimension by `softplus(per_dim_scale)` (learned) times
  `1 / (sqrt(head_dim) ln 2)`, so that at initialisation (`per_dim_scale = 0`, softplus = ln 2)
  the scale is the usual 1/sqrt(head_dim); keys by the constant `softplus(1) / ln 2`;
* logits are soft-capped: `cap * tanh(logit / cap)`;
* masked logits are *set* to `attention_invalid_logits_value` (-1e9), not to -inf: a query whose
  whole window is masked (only in padding) gets a uniform average instead of NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import AudioConfig
from ..weights.checkpoint import TensorSource
from ..vision.clipped_linear import ClippedLinearWeights, clipped_linear, load_clipped_linear
from ..text.ops import linear, soft_cap, softmax

MIN_TIMESCALE, MAX_TIMESCALE = 1.0, 10_000.0  # sinusoid wavelengths of the relative positions
Q_SCALE_LOG_BASE = math.log(2)  # softplus(0): the per-dim scale's value at initialisation
K_SCALE = math.log(1 + math.e) / math.log(2)  # softplus(1) / softplus(0), a fixed key scale


@dataclass(frozen=True)
class AudioAttentionWeights:
    q_proj: ClippedLinearWeights  # (hidden, hidden)
    k_proj: ClippedLinearWeights
    v_proj: ClippedLinearWeights
    post: ClippedLinearWeights  # the output projection
    relative_k_proj: np.ndarray  # (hidden, hidden): sinusoid of a distance -> its key
    per_dim_scale: np.ndarray  # (head_dim,)


def load_audio_attention(ckpt: TensorSource, prefix: str, cfg: AudioConfig) -> AudioAttentionWeights:
    d, clip = cfg.hidden_size, cfg.use_clipped_linears
    proj = {name: load_clipped_linear(ckpt, f"{prefix}.{name}", d, d, clip) for name in ("q_proj", "k_proj", "v_proj", "post")}
    return AudioAttentionWeights(
        **proj,
        relative_k_proj=ckpt.f32(f"{prefix}.relative_k_proj.weight", (d, d)),
        per_dim_scale=ckpt.f32(f"{prefix}.per_dim_scale", (cfg.head_dim,)),
    )


def relative_position_embeddings(cfg: AudioConfig) -> np.ndarray:
    """(context_size // 2 + 1, hidden): sinusoids of the distances context_size // 2, ..., 1, 0,
    sines in the first half of each row, cosines in the second."""
    n = cfg.hidden_size // 2
    increment = math.log(MAX_TIMESCALE / MIN_TIMESCALE) / max(n - 1, 1)
    inv_timescales = (MIN_TIMESCALE * np.exp(np.arange(n, dtype=np.float32) * np.float32(-increment))).astype(np.float32)
    distances = np.arange(cfg.context_size // 2, -1, -1, dtype=np.float32)
    angles = distances[:, None] * inv_timescales[None, :]  # (positions, hidden / 2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def to_blocks(x: np.ndarray, chunk: int) -> np.ndarray:
    """(batch, seq, heads, head_dim) -> (batch, blocks, chunk, heads, head_dim), zero-padded."""
    b, t, h, d = x.shape
    n = -(-t // chunk)
    return np.pad(x, ((0, 0), (0, n * chunk - t), (0, 0), (0, 0))).reshape(b, n, chunk, h, d)


def block_context(x: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """(batch, seq, heads, head_dim) -> (batch, blocks, context_size, heads, head_dim): for block
    n, the frames n * chunk - max_past_horizon + (0 .. context_size - 1), zeros outside the clip."""
    chunk, past = cfg.attention_chunk_size, cfg.max_past_horizon
    n = -(-x.shape[1] // chunk)
    padded = np.pad(x, ((0, 0), (past, cfg.attention_context_right + chunk - 1), (0, 0), (0, 0)))
    frames = chunk * np.arange(n)[:, None] + np.arange(cfg.context_size)[None, :]  # (blocks, context)
    return padded[:, frames]


def block_mask(frame_mask: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Frame mask (batch, seq) -> which context key each query may see (batch, blocks, chunk,
    context_size): a real key of the clip, at most `context_left - 2` frames back or
    `context_right - 1` ahead (the reference's sliding-window mask, on top of the block window)."""
    b, t = frame_mask.shape
    chunk, n = cfg.attention_chunk_size, -(-t // cfg.attention_chunk_size)
    q = chunk * np.arange(n)[:, None, None] + np.arange(chunk)[None, :, None]  # (blocks, chunk, 1)
    k = chunk * np.arange(n)[:, None, None] - cfg.max_past_horizon + np.arange(cfg.context_size)[None, None, :]
    dist = q - k  # (blocks, chunk, context)
    in_window = ((dist >= 0) & (dist < cfg.attention_context_left - 1)) | ((dist < 0) & (-dist < cfg.attention_context_right))
    in_clip = (q < t) & (k >= 0) & (k < t)
    key_real = np.pad(frame_mask, ((0, 0), (0, 1)))[:, np.where(in_clip, k, t)]  # index t reads the False pad
    return in_window & in_clip & key_real


def rel_shift(x: np.ndarray, context_size: int) -> np.ndarray:
    """(..., chunk, positions) -> (..., chunk, context_size): row i shifted right by i, so that
    column j holds the score for key j (distance i - j + max_past) instead of for position j.

    Pad each row to context_size + 1, flatten the rows, drop the tail, and reshape to rows of
    context_size: each row then starts one element later than the last, i.e. shifted by one
    more."""
    *lead, chunk, positions = x.shape
    x = np.pad(x, [(0, 0)] * len(lead) + [(0, 0), (0, context_size + 1 - positions)])
    x = x.reshape(*lead, chunk * (context_size + 1))[..., : chunk * context_size]
    return x.reshape(*lead, chunk, context_size)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.float32(0), x)


def audio_attention(
    x: np.ndarray, positions: np.ndarray, allowed: np.ndarray, w: AudioAttentionWeights, cfg: AudioConfig
) -> np.ndarray:
    """(batch, seq, hidden) -> (batch, seq, hidden).

    positions: `relative_position_embeddings(cfg)`; allowed: `block_mask(...)`."""
    b, t, _ = x.shape
    h, d = cfg.num_attention_heads, cfg.head_dim
    q = clipped_linear(x, w.q_proj).reshape(b, t, h, d)
    k = clipped_linear(x, w.k_proj).reshape(b, t, h, d)
    v = clipped_linear(x, w.v_proj).reshape(b, t, h, d)
    q = q * np.float32(d**-0.5 / Q_SCALE_LOG_BASE) * softplus(w.per_dim_scale)
    k = k * np.float32(K_SCALE)

    q = to_blocks(q, cfg.attention_chunk_size)  # (b, blocks, chunk, h, d)
    k, v = block_context(k, cfg), block_context(v, cfg)  # (b, blocks, context, h, d)
    r = linear(positions, w.relative_k_proj).reshape(-1, h, d)  # (positions, h, d)

    content = np.einsum("bnihd,bnjhd->bhnij", q, k)  # (b, h, blocks, chunk, context)
    position = rel_shift(np.einsum("bnihd,phd->bhnip", q, r), cfg.context_size)
    logits = soft_cap(content + position, cfg.attention_logit_cap)
    logits = np.where(allowed[:, None], logits, np.float32(cfg.attention_invalid_logits_value))
    out = np.einsum("bhnij,bnjhd->bnihd", softmax(logits), v)  # (b, blocks, chunk, h, d)
    out = out.reshape(b, -1, h * d)[:, :t]
    return clipped_linear(out, w.post)
