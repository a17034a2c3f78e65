"""Self-attention of a Gemma 4 decoder layer (mirrors `Gemma4TextAttention`).

What Gemma 4 does differently from a textbook transformer:

* **GQA**: `num_attention_heads` query heads share fewer key/value heads; query head `h` reads
  KV head `h // (heads / kv_heads)`. Global layers may have their own, larger head dim and even
  fewer KV heads (`global_head_dim`, `num_global_key_value_heads`).
* **q/k/v norms**: queries and keys go through an RMSNorm with a learned scale, values through one
  without; so the scores are already well scaled and the usual `1/sqrt(head_dim)` is *not* applied
  (scaling 1.0). Gemma 3, with no value norm, still scales the scores, by
  `query_pre_attn_scalar ** -0.5` (`TextConfig.attention_scaling`, applied to the queries).
* **sliding-window vs global**: a sliding layer's query sees only the last `sliding_window` keys
  (itself included); a global layer sees the whole causal past.
* **`attention_k_eq_v`**: on global layers of the larger models, values are the key projection
  itself (before the key's norm and RoPE), which saves a projection.
* **KV sharing**: the last `num_kv_shared_layers` layers compute no keys/values of their own; they
  attend to those of the last earlier layer of their type (see `config.py`). Their queries are
  still their own.

The hot loop, `attend`, has a Numba twin in `kernels/attention.py`; this NumPy version is the one to
read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights.checkpoint import Checkpoint
from .config import LayerSpec, TextConfig
from .norm import norm_weight, rms_norm
from .ops import linear, softmax

ATTENTION_SCALING = 1.0  # q/k norms make the usual 1/sqrt(head_dim) unnecessary


@dataclass(frozen=True)
class AttentionWeights:
    q_proj: np.ndarray  # (heads * head_dim, hidden)
    q_norm: np.ndarray  # (head_dim,)
    o_proj: np.ndarray  # (hidden, heads * head_dim)
    k_proj: np.ndarray | None  # (kv_heads * head_dim, hidden); None on KV-shared layers
    v_proj: np.ndarray | None  # None on KV-shared layers and when values = keys (k_eq_v)
    k_norm: np.ndarray | None  # (head_dim,)
    q_bias: np.ndarray | None = None  # only with `attention_bias`
    k_bias: np.ndarray | None = None
    v_bias: np.ndarray | None = None
    o_bias: np.ndarray | None = None


def load_attention(ckpt: Checkpoint, prefix: str, spec: LayerSpec, cfg: TextConfig) -> AttentionWeights:
    h, d, kv = cfg.hidden_size, spec.head_dim, spec.num_kv_heads
    q_out, kv_out = cfg.num_attention_heads * d, kv * d
    bias = cfg.attention_bias

    def get(name, shape):  # matrices may stay bf16 (`Checkpoint.matrix`); vectors are float32
        return (ckpt.matrix if len(shape) == 2 else ckpt.f32)(f"{prefix}.{name}", shape)

    own_kv = not spec.reuses_kv
    own_v = own_kv and not spec.k_eq_v
    return AttentionWeights(
        q_proj=get("q_proj.weight", (q_out, h)),
        q_norm=norm_weight(get("q_norm.weight", (d,)), cfg.norm_offset),
        o_proj=get("o_proj.weight", (h, q_out)),
        k_proj=get("k_proj.weight", (kv_out, h)) if own_kv else None,
        v_proj=get("v_proj.weight", (kv_out, h)) if own_v else None,
        k_norm=norm_weight(get("k_norm.weight", (d,)), cfg.norm_offset) if own_kv else None,
        q_bias=get("q_proj.bias", (q_out,)) if bias else None,
        k_bias=get("k_proj.bias", (kv_out,)) if bias and own_kv else None,
        v_bias=get("v_proj.bias", (kv_out,)) if bias and own_v else None,
        o_bias=get("o_proj.bias", (h,)) if bias else None,
    )


def project_queries(x, w: AttentionWeights, spec: LayerSpec, eps: float) -> np.ndarray:
    """Queries: project, RMSNorm per head. (seq, hidden) -> (seq, heads, head_dim).

    RoPE is applied by the caller: the normed, not yet rotated queries are what the reference's
    `q_norm` module outputs, so a trace can name them."""
    q = linear(x, w.q_proj, w.q_bias).reshape(x.shape[0], -1, spec.head_dim)
    return rms_norm(q, w.q_norm, eps)


def project_keys_values(x, w: AttentionWeights, spec: LayerSpec, eps: float, value_norm: bool = True):
    """Keys and values of this layer's own tokens: (seq, kv_heads, head_dim) each.

    Keys: project, RMSNorm with scale (RoPE comes after, from the caller, as for queries).
    Values: project (or reuse the raw key projection when k_eq_v), RMSNorm *without* scale
    (`value_norm`; Gemma 3 has none), never rotated."""
    k = linear(x, w.k_proj, w.k_bias).reshape(x.shape[0], -1, spec.head_dim)
    v = k if w.v_proj is None else linear(x, w.v_proj, w.v_bias).reshape(x.shape[0], -1, spec.head_dim)
    return rms_norm(k, w.k_norm, eps), rms_norm(v, None, eps) if value_norm else v


def attention_mask(
    q_pos: np.ndarray, k_pos: np.ndarray, window: int | None, causal: bool = True, same_block: np.ndarray | None = None
) -> np.ndarray:
    """Which keys each query may see, from their absolute positions: bool (q_len, k_len).

    Causal: keys at or before the query. Sliding window: also fewer than `window` positions back,
    so a query sees itself and the `window - 1` tokens before it. Bidirectional (`causal=False`):
    everything, or, with a window, keys at most `window` positions away on either side.
    `same_block` (q_len, k_len): pairs that see each other both ways though causal (tokens of
    one image), still within the window."""
    dist = q_pos[:, None] - k_pos[None, :]  # (q_len, k_len): how far back each key lies
    if causal:
        visible = dist >= 0 if same_block is None else (dist >= 0) | same_block
        return visible & (dist < window) if window is not None else visible
    if window is None:
        return np.ones(dist.shape, dtype=bool)
    return np.abs(dist) <= window


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grouped-query attention, scaling 1.0.

    q: (q_len, heads, d); k, v: (k_len, kv_heads, d); mask: (q_len, k_len) bool -> (q_len, heads, d).
    Each KV head serves `heads // kv_heads` consecutive query heads; K and V are never repeated."""
    q_len, n_heads, d = q.shape
    n_kv = k.shape[1]
    group = n_heads // n_kv
    qg = q.reshape(q_len, n_kv, group, d).transpose(1, 2, 0, 3)  # (kv_heads, group, q_len, d)
    kt = k.transpose(1, 2, 0)[:, None]  # (kv_heads, 1, d, k_len)
    scores = (qg @ kt) * np.float32(ATTENTION_SCALING)  # (kv_heads, group, q_len, k_len)
    scores = np.where(mask, scores, -np.inf)
    probs = softmax(scores)
    out = probs @ v.transpose(1, 0, 2)[:, None]  # (kv_heads, group, q_len, d)
    return out.transpose(2, 0, 1, 3).reshape(q_len, n_heads, d)


def attend_positions(q, k, v, q_pos, k_pos, window: int | None, causal: bool = True, blocks=None) -> np.ndarray:
    """`attend` with the mask built from absolute positions: the contract the kernel shares.
    `blocks`: (q_blocks (q_len,), k_blocks (k_len,)), the image of each query and key (-1: text),
    whose tokens see each other both ways; or None."""
    both_ways = None if blocks is None else (blocks[0][:, None] == blocks[1][None, :]) & (blocks[0][:, None] >= 0)
    return attend(q, k, v, attention_mask(q_pos, k_pos, window, causal, both_ways))


def output_projection(o: np.ndarray, w: AttentionWeights) -> np.ndarray:
    """(seq, heads, head_dim) -> (seq, hidden)."""
    return linear(o.reshape(o.shape[0], -1), w.o_proj, w.o_bias)
