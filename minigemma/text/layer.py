"""One Gemma 4 decoder layer (mirrors `Gemma4TextDecoderLayer`).

    h = h + post_attn_norm(attention(input_norm(h)))          attention block, "sandwich" norms
    r = h
    f = mlp(pre_ffw_norm(h))                                   dense MLP (the shared expert)
    f = moe_block(r, f)                    if MoE              routed experts, added beside it
    h = r + post_ffw_norm(f)
    h = per_layer_input(h, ple_i)          if PLE              the layer's own token signal
    h = h * layer_scalar                   if Gemma 4          a learned per-layer scale

Gemma norms both the input *and* the output of each block before adding it to the residual
(four norms per layer, more with MoE); the final `layer_scalar` lets training shrink or grow a
whole layer's contribution. Gemma 3 layers are the same minus MoE, PLE and `layer_scalar`
(and attention differs in two switches: see `gemma3.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .attention import (
    AttentionWeights,
    attend,
    attention_mask,
    load_attention,
    output_projection,
    project_keys_values,
    project_queries,
)
from ..weights.checkpoint import Checkpoint
from .config import LayerSpec, TextConfig
from .backend import NUMPY, Backend
from .mlp import MLPWeights, load_mlp, mlp
from .moe import MoEWeights, load_moe, moe_block
from .multimodal import block_at, same_block
from .norm import norm_weight, rms_norm
from .ops import activation, no_tap, scoped
from .ple import PLELayerWeights, apply_per_layer_input, load_ple_layer
from .rope import apply_rope


@dataclass(frozen=True)
class LayerWeights:
    attention: AttentionWeights
    mlp: MLPWeights
    input_norm: np.ndarray  # input_layernorm
    post_attention_norm: np.ndarray  # post_attention_layernorm
    pre_feedforward_norm: np.ndarray  # pre_feedforward_layernorm
    post_feedforward_norm: np.ndarray  # post_feedforward_layernorm
    layer_scalar: np.ndarray | None  # (1,); None: no scalar (Gemma 3)
    moe: MoEWeights | None
    ple: PLELayerWeights | None


def load_layer(ckpt: Checkpoint, prefix: str, spec: LayerSpec, cfg: TextConfig) -> LayerWeights:
    h = cfg.hidden_size

    def norm(name):
        return norm_weight(ckpt.f32(f"{prefix}.{name}.weight", (h,)), cfg.norm_offset)

    return LayerWeights(
        attention=load_attention(ckpt, f"{prefix}.self_attn", spec, cfg),
        mlp=load_mlp(ckpt, f"{prefix}.mlp", h, spec.mlp_intermediate),
        input_norm=norm("input_layernorm"),
        post_attention_norm=norm("post_attention_layernorm"),
        pre_feedforward_norm=norm("pre_feedforward_layernorm"),
        post_feedforward_norm=norm("post_feedforward_layernorm"),
        layer_scalar=ckpt.f32(f"{prefix}.layer_scalar", (1,)) if cfg.layer_scalar else None,
        moe=load_moe(ckpt, prefix, h, cfg.num_experts, cfg.moe_intermediate_size) if cfg.enable_moe_block else None,
        ple=load_ple_layer(ckpt, prefix, h, cfg.hidden_size_per_layer_input) if cfg.has_ple else None,
    )


@dataclass
class ForwardContext:
    """What all layers of one forward pass share.

    positions: absolute position of each input token (seq,); rope: (cos, sin) per layer type;
    shared_kv: keys/values/positions stored by producer layers for KV-shared layers to read;
    cache: per-layer KV caches for incremental decoding (None: attend within this input only);
    tap: called with (name, array) at every named step, for traces (names: docs/verify.md);
    blocks: image block id of each absolute position (-1 text), for the bidirectional attention
    inside images on sliding layers (`multimodal.image_blocks`); None: plain causal masks;
    backend: who runs the hot loops, the NumPy twins or the Numba kernels (`kernels/__init__.py`)."""

    positions: np.ndarray
    rope: dict
    shared_kv: dict = field(default_factory=dict)
    cache: list | None = None
    tap: object = no_tap
    blocks: np.ndarray | None = None
    backend: Backend = NUMPY


def self_attention(x: np.ndarray, w: AttentionWeights, spec: LayerSpec, cfg: TextConfig, ctx: ForwardContext, tap=no_tap):
    """The attention block's core: (seq, hidden) normed input -> (seq, hidden).

    q and k are named before RoPE, as the reference's `q_norm` / `k_norm` modules output them."""
    cos, sin = ctx.rope[spec.layer_type]
    eps = cfg.rms_norm_eps
    q = project_queries(x, w, spec, eps)  # (seq, heads, head_dim)
    tap("q", q)
    q = apply_rope(q, cos, sin)
    if spec.reuses_kv:
        k, v, k_pos = ctx.shared_kv[spec.kv_producer]  # the producer's keys/values, cache included
    else:
        k, v = project_keys_values(x, w, spec, eps, cfg.value_norm)  # (seq, kv_heads, head_dim)
        tap("k", k)
        tap("v", v)
        k = apply_rope(k, cos, sin)
        k_pos = ctx.positions
        if ctx.cache is not None:
            k, v, k_pos = ctx.cache[spec.index].update(k, v, ctx.positions)  # past + new
        if spec.kv_sharing == "store":
            ctx.shared_kv[spec.index] = (k, v, k_pos)
    if cfg.attention_scaling != 1.0:  # Gemma 3: scores * query_pre_attn_scalar ** -0.5, folded into q
        q = q * np.float32(cfg.attention_scaling)
    window = cfg.attention_window if spec.is_sliding else None
    # images: the block of each query and key (their tokens see each other both ways on sliding
    # layers; in the unified model on every layer, past the window: `TextConfig.image_blocks_all_layers`)
    blocks_here = ctx.blocks is not None and (spec.is_sliding or cfg.image_blocks_all_layers)
    blocks = (block_at(ctx.blocks, ctx.positions), block_at(ctx.blocks, k_pos)) if blocks_here else None
    # masks come from absolute positions (`attention.attention_mask`), cached keys included
    if blocks is not None and cfg.image_blocks_all_layers:
        # the unified model's reference ORs an image's block onto the windowed causal mask
        context = attend(q, k, v, attention_mask(ctx.positions, k_pos, window, cfg.is_causal) | same_block(ctx.blocks, ctx.positions, k_pos))
    else:
        context = ctx.backend.attend(q, k, v, ctx.positions, k_pos, window, cfg.is_causal, blocks)
    tap("context", context)  # (seq, heads, head_dim): each head's weighted sum of values
    out = output_projection(context, w)
    tap("out", out)
    return out


def decoder_layer(h: np.ndarray, w: LayerWeights, spec: LayerSpec, cfg: TextConfig, ctx: ForwardContext, per_layer_input=None):
    """(seq, hidden) -> (seq, hidden). `per_layer_input`: this layer's PLE slice (seq, ple_dim).

    Named steps (`layers.{i}.` + name): each block's `in` is what it reads, `out` what it
    returns, `post_norm` the norm of its `out`; `attn.residual` is the stream after attention."""
    eps, act = cfg.rms_norm_eps, activation(cfg.hidden_activation)
    tap = scoped(ctx.tap, f"layers.{spec.index}.")

    x = rms_norm(h, w.input_norm, eps)
    tap("attn.in", x)
    attn = self_attention(x, w.attention, spec, cfg, ctx, scoped(tap, "attn."))  # names attn.q ... attn.out
    attn = rms_norm(attn, w.post_attention_norm, eps)
    tap("attn.post_norm", attn)
    h = h + attn
    tap("attn.residual", h)

    residual = h
    x = rms_norm(h, w.pre_feedforward_norm, eps)
    tap("mlp.in", x)
    f = mlp(x, w.mlp, act, scoped(tap, "mlp."))  # names mlp.gated, mlp.out
    if w.moe is not None:  # names mlp.post_norm (the shared expert's own norm) and moe.*
        f = moe_block(residual, f, w.moe, cfg.top_k_experts, act, eps, tap, ctx.backend.experts)
    f = rms_norm(f, w.post_feedforward_norm, eps)
    tap("moe.post_norm" if w.moe is not None else "mlp.post_norm", f)
    h = residual + f

    if w.ple is not None:
        tap("ple.in", h)
        h = apply_per_layer_input(h, per_layer_input, w.ple, act, eps, scoped(tap, "ple."))
    if w.layer_scalar is not None:
        h = h * w.layer_scalar
    tap("out", h)
    return h
