"""Mixture of experts with an always-on shared expert (mirrors `Gemma4TextRouter`,
`Gemma4TextExperts` and the MoE branch of `Gemma4TextDecoderLayer`).

In the 26B-A4B model every decoder layer has, beside its dense GeGLU MLP, 128 small experts of
which each token uses 8. The dense MLP is the *shared expert*: it runs on every token, the routed
experts add specialised capacity at a fraction of the compute. The two branches see the same
pre-MLP residual but each through its own norms, and their outputs are summed:

    dense  = post_ffw_norm_1(mlp(pre_ffw_norm(h)))
    routed = post_ffw_norm_2(experts(pre_ffw_norm_2(h), router(h)))
    out    = post_ffw_norm(dense + routed)        (then added to the residual by the layer)

The router, in order (the order matters):
  1. RMSNorm of h *without* a learned scale,
  2. times a learned per-dim `scale` and times hidden**-0.5,
  3. project to one logit per expert, softmax over *all* experts,
  4. keep the top-k probabilities, renormalise them to sum to 1,
  5. multiply each by its expert's learned `per_expert_scale`.

The dispatch loop, `experts`, has a Numba twin in `kernels/moe.py`; this is the one to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights.checkpoint import Checkpoint
from .norm import rms_norm
from .ops import linear, no_tap, softmax


@dataclass(frozen=True)
class RouterWeights:
    proj: np.ndarray  # (experts, hidden)
    scale: np.ndarray  # (hidden,)
    per_expert_scale: np.ndarray  # (experts,)


@dataclass(frozen=True)
class ExpertWeights:
    gate_up_proj: np.ndarray  # (experts, 2 * moe_intermediate, hidden): gate rows, then up rows
    down_proj: np.ndarray  # (experts, hidden, moe_intermediate)


@dataclass(frozen=True)
class MoEWeights:
    router: RouterWeights
    experts: ExpertWeights
    pre_norm: np.ndarray  # pre_feedforward_layernorm_2: the experts' input norm
    post_norm_dense: np.ndarray  # post_feedforward_layernorm_1: the shared expert's output norm
    post_norm_experts: np.ndarray  # post_feedforward_layernorm_2: the routed experts' output norm


def load_moe(ckpt: Checkpoint, prefix: str, hidden: int, n_experts: int, inter: int) -> MoEWeights:
    def get(name, shape):
        return ckpt.f32(f"{prefix}.{name}", shape)

    return MoEWeights(
        router=RouterWeights(
            proj=get("router.proj.weight", (n_experts, hidden)),
            scale=get("router.scale", (hidden,)),
            per_expert_scale=get("router.per_expert_scale", (n_experts,)),
        ),
        experts=ExpertWeights(  # float32, or GGUF blocks kept as stored (`QuantExperts`)
            gate_up_proj=ckpt.stack(f"{prefix}.experts.gate_up_proj", (n_experts, 2 * inter, hidden)),
            down_proj=ckpt.stack(f"{prefix}.experts.down_proj", (n_experts, hidden, inter)),
        ),
        pre_norm=get("pre_feedforward_layernorm_2.weight", (hidden,)),
        post_norm_dense=get("post_feedforward_layernorm_1.weight", (hidden,)),
        post_norm_experts=get("post_feedforward_layernorm_2.weight", (hidden,)),
    )


def route(h: np.ndarray, w: RouterWeights, top_k: int, eps: float):
    """h (tokens, hidden) -> probabilities (tokens, experts), top-k weights and indices (tokens, k).

    Indices come in descending order of probability, as `torch.topk` returns them."""
    x = rms_norm(h, None, eps) * w.scale * np.float32(h.shape[-1] ** -0.5)
    probs = softmax(linear(x, w.proj))  # (tokens, experts)
    top_k_index = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # (tokens, k)
    top_k_weights = np.take_along_axis(probs, top_k_index, axis=-1)
    top_k_weights = top_k_weights / top_k_weights.sum(axis=-1, keepdims=True)
    return probs, top_k_weights * w.per_expert_scale[top_k_index], top_k_index


def expert_ffn(x: np.ndarray, gate_up: np.ndarray, down: np.ndarray, act) -> np.ndarray:
    """One expert: a GeGLU MLP whose gate and up projections are stored stacked."""
    gate, up = np.split(linear(x, gate_up), 2, axis=-1)
    return linear(act(gate) * up, down)


def experts(x: np.ndarray, top_k_index: np.ndarray, top_k_weights: np.ndarray, w: ExpertWeights, act) -> np.ndarray:
    """Dispatch grouped by expert: gather the tokens routed to each expert, run it once on all of
    them, scatter-add the weighted results back. x (tokens, hidden) -> (tokens, hidden)."""
    out = np.zeros_like(x)
    for e in np.unique(top_k_index):
        token, slot = np.nonzero(top_k_index == e)  # which tokens chose expert e, in which slot
        y = expert_ffn(x[token], w.gate_up_proj[e], w.down_proj[e], act)
        out[token] += y * top_k_weights[token, slot, None]  # a token picks an expert at most once
    return out


def moe_block(h: np.ndarray, dense_out: np.ndarray, w: MoEWeights, top_k: int, act, eps: float, tap=no_tap, dispatch=experts):
    """Combine the shared expert (the dense MLP output `dense_out`) with the routed experts.

    h: the pre-MLP residual (tokens, hidden), which both the router and the experts read.
    `tap` is the layer's: it names `mlp.post_norm` (the shared expert's own norm) and `moe.*`;
    `dispatch`: `experts` or its Numba twin (`kernels/moe.py`)."""
    dense = rms_norm(dense_out, w.post_norm_dense, eps)
    tap("mlp.post_norm", dense)
    probs, top_k_weights, top_k_index = route(h, w.router, top_k, eps)
    tap("moe.router.probs", probs)
    tap("moe.router.top_k_weights", top_k_weights)
    tap("moe.router.top_k_index", top_k_index)
    x = rms_norm(h, w.pre_norm, eps)
    tap("moe.experts.in", x)
    routed = dispatch(x, top_k_index, top_k_weights, w.experts, act)
    tap("moe.experts.out", routed)
    routed = rms_norm(routed, w.post_norm_experts, eps)
    tap("moe.experts.post_norm", routed)
    out = dense + routed
    tap("moe.out", out)
    return out
