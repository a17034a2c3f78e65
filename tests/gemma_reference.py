"""Building blocks for comparing minigemma with the reference (transformers' Gemma 4).

* `text_config_kwargs`: a hypothesis strategy for small `Gemma4TextConfig` keyword arguments that
  reach every switch (PLE, MoE, KV sharing, double-wide MLP, k_eq_v, soft-cap, custom layer
  types, RoPE thetas and partial rotary factor, global head dims and KV heads);
* `randomize`: overwrite *every* parameter and persistent buffer of a reference module with random
  values (norm weights, `layer_scalar`, router scales too: identity values hide bugs);
* `reference_text_model` / `save`: build, randomise and `save_pretrained` a model in either layout;
* `as_checkpoint`: a reference module's state dict as a minigemma `ArrayCheckpoint`, so our loaders
  read reference weights by the same code path as files;
* `our_model`: the minigemma `Model` of a reference `Gemma4ForCausalLM`, without a round trip to disk.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import note
from hypothesis import strategies as st
from transformers import (
    Gemma4Config,
    Gemma4ForCausalLM,
    Gemma4ForConditionalGeneration,
    Gemma4TextConfig,
)

from minigemma.weights.checkpoint import ArrayCheckpoint
from minigemma.text.config import config_from_dict, text_config_from_dict
from minigemma.model import HEAD_NAME, Model
from minigemma.text.model import load_text

SLIDING, GLOBAL = "sliding_attention", "full_attention"
CLIP_BOUNDS = ("input_min", "input_max", "output_min", "output_max")  # `Gemma4ClippableLinear` buffers
SCALE_LIKE = ("norm.weight", "layernorm.weight", "layer_scalar", "router.scale", "per_expert_scale", "_norm.weight")


@st.composite
def text_config_kwargs(draw, max_layers: int = 5, moe=None, ple=None, kv_shared=None):
    """Keyword arguments for a small, valid `Gemma4TextConfig`, every switch drawn."""
    n_layers = draw(st.integers(2, max_layers))
    heads = draw(st.sampled_from([1, 2, 4]))
    kv_heads = draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0]))
    global_kv = draw(st.sampled_from([None] + [k for k in (1, 2) if heads % k == 0]))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    layer_types = draw(st.lists(st.sampled_from([SLIDING, GLOBAL]), min_size=n_layers, max_size=n_layers))
    layer_types[-1] = GLOBAL
    if kv_shared is False:
        n_shared = 0
    else:
        # largest count that still leaves a producer of every layer type before the shared layers
        limit = max((s for s in range(n_layers) if set(layer_types[: n_layers - s]) == set(layer_types)), default=0)
        n_shared = draw(st.integers(1 if kv_shared and limit else 0, limit))
    use_moe = draw(st.booleans()) if moe is None else moe
    use_ple = draw(st.booleans()) if ple is None else ple
    kw = dict(
        vocab_size=draw(st.sampled_from([64, 97, 128])),
        hidden_size=draw(st.sampled_from([16, 24, 32])),
        intermediate_size=draw(st.sampled_from([8, 24, 48])),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        global_head_dim=draw(st.sampled_from([4, 8, 16, 32])),
        num_global_key_value_heads=global_kv,
        attention_k_eq_v=draw(st.booleans()),
        layer_types=layer_types,
        sliding_window=draw(st.integers(1, 8)),
        num_kv_shared_layers=n_shared,
        use_double_wide_mlp=draw(st.booleans()),
        hidden_size_per_layer_input=draw(st.sampled_from([4, 8])) if use_ple else 0,
        final_logit_softcapping=draw(st.sampled_from([None, 5.0, 30.0])),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        attention_bias=draw(st.booleans()),
        rope_parameters={
            SLIDING: {"rope_type": "default", "rope_theta": draw(st.sampled_from([100.0, 10_000.0]))},
            GLOBAL: {
                "rope_type": "proportional",
                "partial_rotary_factor": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
                "rope_theta": draw(st.sampled_from([1_000.0, 1_000_000.0])),
            },
        },
    )
    kw["vocab_size_per_layer_input"] = kw["vocab_size"]
    if use_moe:
        n_experts = draw(st.integers(2, 6))
        kw.update(
            enable_moe_block=True,
            num_experts=n_experts,
            top_k_experts=draw(st.integers(1, min(3, n_experts))),
            moe_intermediate_size=draw(st.sampled_from([4, 8, 16])),
        )
    return kw


def make_text_config(kwargs: dict) -> Gemma4TextConfig:
    cfg = Gemma4TextConfig(**kwargs)
    cfg._attn_implementation = "eager"
    return cfg


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter and persistent float buffer with random values.

    Clip bounds: -/+ U(0.5, 1.5). Scales (norm weights, layer_scalar, router scales) ~ U(0.5, 1.5);
    projections ~ N(0, 1/fan_in) so activations stay O(1); embeddings ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    persistent = {name for name, _ in module.named_buffers() if _is_persistent(module, name)}
    tensors = dict(module.named_parameters())
    tensors.update({n: b for n, b in module.named_buffers() if n in persistent and b.is_floating_point()})
    with torch.no_grad():
        for name, t in tensors.items():
            if name.endswith(CLIP_BOUNDS):  # finite and tight: O(1) activations do get clipped
                bound = 0.5 + torch.rand((), generator=g)
                t.fill_(-bound if name.endswith("_min") else bound)
            elif any(name.endswith(s) for s in SCALE_LIKE) or t.ndim == 1 and "bias" not in name:
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif "bias" in name:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif "embed" in name:
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                fan_in = t.shape[-1]
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan_in))
    return module


def _is_persistent(module: torch.nn.Module, name: str) -> bool:
    *path, leaf = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    return leaf not in owner._non_persistent_buffers_set


def reference_text_model(kwargs: dict, layout: str = "causal", seed: int = 0):
    """A randomised reference model: `Gemma4ForCausalLM` or `Gemma4ForConditionalGeneration`."""
    cfg = make_text_config(kwargs)
    torch.manual_seed(seed)
    if layout == "causal":
        model = Gemma4ForCausalLM(cfg)
    else:
        mm = Gemma4Config(text_config=cfg.to_dict(), vision_config=None, audio_config=None)
        mm._attn_implementation = "eager"
        mm.text_config._attn_implementation = "eager"
        model = Gemma4ForConditionalGeneration(mm)
    return randomize(model, seed).eval()


def drawn_ids(data, kwargs: dict, layout: str) -> tuple[np.ndarray, int]:
    """Token ids (batch 1 or 2, seq up to 4 x the window + 6: shorter and much longer than the
    window) and a seed, drawn for a config, the config noted so that a failing example prints it."""
    batch = data.draw(st.integers(1, 2), label="batch")
    seq = data.draw(st.integers(1, 4 * kwargs["sliding_window"] + 6), label="seq")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}\nlayout: {layout}")
    return np.random.default_rng(seed).integers(0, kwargs["vocab_size"], (batch, seq)), seed


def reference_logits(model, ids) -> np.ndarray:
    """Logits of the reference for ids (seq,) or (batch, seq)."""
    one_sequence = np.ndim(ids) == 1
    ids = torch.as_tensor(np.atleast_2d(ids))
    with torch.no_grad():
        # output_hidden_states=True turns off `_maybe_slice_kv_shared_inputs`, which crashes in
        # 5.23.0 for KV-shared models without PLE (it slices `per_layer_inputs`, which is None)
        out = model(input_ids=ids, use_cache=False, output_hidden_states=True).logits.float().numpy()
    return out[0] if one_sequence else out


def as_checkpoint(module: torch.nn.Module, prefix: str = "") -> ArrayCheckpoint:
    """A reference module's state dict as a minigemma `ArrayCheckpoint` (float32)."""
    tensors = {prefix + name: t.detach().float().numpy() for name, t in module.state_dict().items()}
    return ArrayCheckpoint(tensors, source=type(module).__name__)


def our_model(ref: Gemma4ForCausalLM, path: str | None = None) -> Model:
    """minigemma's Model holding the weights of a reference `Gemma4ForCausalLM` (float32)."""
    config = config_from_dict(ref.config.to_dict())
    return Model(config, load_text(as_checkpoint(ref), config.text, "model", HEAD_NAME), path)


def our_text_config(cfg: Gemma4TextConfig):
    return text_config_from_dict(cfg.to_dict())


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()
