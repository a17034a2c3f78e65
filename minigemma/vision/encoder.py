"""The vision encoder's transformer layers, with axial 2-D RoPE (mirrors `Gemma4VisionEncoder`,
`Gemma4VisionEncoderLayer`, `Gemma4VisionAttention`, `Gemma4VisionRotaryEmbedding` and
`apply_multidimensional_rope`).

A patch sits on a 2-D grid, so its position is a pair (x, y). Axial RoPE splits every attention
head in two: the first half is rotated by the patch's x, the second half by its y, each half
exactly as 1-D RoPE rotates a whole head (rotate-half pairs, frequencies `theta ** (-2i / half)`).
A query-key dot product then depends on the horizontal and vertical *offsets* between patches,
whatever the image's size or aspect ratio: what lets one encoder read 48x2000-pixel banners and
square photos alike.

The layers are the text decoder's layers without the causal mask: every patch sees every patch.
Same sandwich norms, q/k norms with scale, v norm without, attention scaling 1.0, GQA, a GeGLU
MLP; and, when the checkpoint says `use_clipped_linears`, every projection clamps its input and
output (`clipped_linear.py`).

Padding patches (grid position (-1, -1)) are never given to these functions: the reference masks
them out as keys and discards them as outputs, so dropping them up front gives the same numbers
for the real patches at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..text.attention import attend
from ..weights.checkpoint import TensorSource
from .clipped_linear import ClippedLinearWeights, clipped_linear, load_clipped_linear
from ..text.config import RopeParams
from ..text.norm import rms_norm
from ..text.ops import activation, no_tap
from ..text.rope import apply_rope, inverse_frequencies, rope_tables
from .config import VisionConfig

QUERY_CHUNK = 1024  # queries per attention step: bounds the (heads, chunk, patches) score block


@dataclass(frozen=True)
class VisionLayerWeights:
    q_proj: ClippedLinearWeights  # (heads * head_dim, hidden)
    k_proj: ClippedLinearWeights  # (kv_heads * head_dim, hidden)
    v_proj: ClippedLinearWeights
    o_proj: ClippedLinearWeights  # (hidden, heads * head_dim)
    q_norm: np.ndarray  # (head_dim,)
    k_norm: np.ndarray
    gate_proj: ClippedLinearWeights  # (intermediate, hidden)
    up_proj: ClippedLinearWeights
    down_proj: ClippedLinearWeights  # (hidden, intermediate)
    input_norm: np.ndarray  # (hidden,) each
    post_attention_norm: np.ndarray
    pre_feedforward_norm: np.ndarray
    post_feedforward_norm: np.ndarray


def load_vision_layer(ckpt: TensorSource, prefix: str, cfg: VisionConfig) -> VisionLayerWeights:
    h, d, inter = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q_out, kv_out = cfg.num_attention_heads * d, cfg.num_key_value_heads * d

    def lin(name, n_in, n_out):
        return load_clipped_linear(ckpt, f"{prefix}.{name}", n_in, n_out, cfg.use_clipped_linears)

    def norm(name, size=h):
        return ckpt.f32(f"{prefix}.{name}.weight", (size,))

    return VisionLayerWeights(
        q_proj=lin("self_attn.q_proj", h, q_out),
        k_proj=lin("self_attn.k_proj", h, kv_out),
        v_proj=lin("self_attn.v_proj", h, kv_out),
        o_proj=lin("self_attn.o_proj", q_out, h),
        q_norm=norm("self_attn.q_norm", d),
        k_norm=norm("self_attn.k_norm", d),
        gate_proj=lin("mlp.gate_proj", h, inter),
        up_proj=lin("mlp.up_proj", h, inter),
        down_proj=lin("mlp.down_proj", inter, h),
        input_norm=norm("input_layernorm"),
        post_attention_norm=norm("post_attention_layernorm"),
        pre_feedforward_norm=norm("pre_feedforward_layernorm"),
        post_feedforward_norm=norm("post_feedforward_layernorm"),
    )


def axial_rope_tables(positions: np.ndarray, head_dim: int, theta: float) -> tuple:
    """(cos, sin) for the x half and for the y half of each head: ((patches, head_dim / 2),) * 4.

    Each half is an ordinary 1-D RoPE of size head_dim / 2, driven by one grid coordinate."""
    inv_freq = inverse_frequencies(RopeParams("default", theta), head_dim // 2)  # (head_dim / 4,)
    return rope_tables(positions[:, 0], inv_freq), rope_tables(positions[:, 1], inv_freq)


def apply_axial_rope(x: np.ndarray, tables: tuple) -> np.ndarray:
    """Rotate the first half of each head (patches, heads, head_dim) by x, the second by y."""
    (cos_x, sin_x), (cos_y, sin_y) = tables
    half = x.shape[-1] // 2
    return np.concatenate([apply_rope(x[..., :half], cos_x, sin_x), apply_rope(x[..., half:], cos_y, sin_y)], axis=-1)


def vision_attention(x: np.ndarray, w: VisionLayerWeights, cfg: VisionConfig, rope: tuple) -> np.ndarray:
    """Bidirectional self-attention over the patches of one image: (patches, hidden) -> same."""
    n, d, eps = x.shape[0], cfg.head_dim, cfg.rms_norm_eps
    q = apply_axial_rope(rms_norm(clipped_linear(x, w.q_proj).reshape(n, -1, d), w.q_norm, eps), rope)
    k = apply_axial_rope(rms_norm(clipped_linear(x, w.k_proj).reshape(n, -1, d), w.k_norm, eps), rope)
    v = rms_norm(clipped_linear(x, w.v_proj).reshape(n, -1, d), None, eps)  # (patches, kv_heads, head_dim)
    everything = np.ones((1, n), dtype=bool)  # every patch sees every patch (broadcast over queries)
    out = np.concatenate([attend(q[i : i + QUERY_CHUNK], k, v, everything) for i in range(0, n, QUERY_CHUNK)])
    return clipped_linear(out.reshape(n, -1), w.o_proj)


def vision_mlp(x: np.ndarray, w: VisionLayerWeights, act) -> np.ndarray:
    """GeGLU: down(act(gate(x)) * up(x))."""
    return clipped_linear(act(clipped_linear(x, w.gate_proj)) * clipped_linear(x, w.up_proj), w.down_proj)


def vision_layer(h: np.ndarray, w: VisionLayerWeights, cfg: VisionConfig, rope: tuple) -> np.ndarray:
    """One encoder layer with sandwich norms: (patches, hidden) -> (patches, hidden)."""
    eps = cfg.rms_norm_eps
    h = h + rms_norm(vision_attention(rms_norm(h, w.input_norm, eps), w, cfg, rope), w.post_attention_norm, eps)
    mlp_out = vision_mlp(rms_norm(h, w.pre_feedforward_norm, eps), w, activation(cfg.hidden_activation))
    return h + rms_norm(mlp_out, w.post_feedforward_norm, eps)


def vision_encoder(h: np.ndarray, positions: np.ndarray, layers, cfg: VisionConfig, tap=no_tap) -> np.ndarray:
    """All encoder layers over one image's real patches: (patches, hidden), positions (patches, 2)."""
    rope = axial_rope_tables(positions, cfg.head_dim, cfg.rope_theta)
    for i, w in enumerate(layers):
        h = vision_layer(h, w, cfg, rope)
        tap(f"vision.layers.{i}.out", h)
    return h
