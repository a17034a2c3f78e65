"""Building blocks for comparing minigemma's unified model with the reference
(`transformers/models/gemma4_unified`).

* `unified_text_kwargs`: a strategy for small `Gemma4UnifiedTextConfig` keyword arguments: Gemma 4's
  text switches that the unified config has (k_eq_v, KV sharing, double-wide MLP, soft-cap, layer
  types, RoPE, global head dims and KV heads, bidirectional "vision"), no PLE, no MoE;
* `unified_vision_kwargs` / `unified_audio_kwargs`: the embedders' configs;
* `reference_unified_model`: a randomised `Gemma4UnifiedForConditionalGeneration` (every parameter,
  LayerNorm biases and the position table included), multimodal ids at the top of the vocabulary;
* `reference_functions` / `reference_image_helpers`: a reference processor module's own functions
  (`patches_merge`, `convert_video_to_patches`, ...), loaded from its source without the processor
  class and its torchvision import (torchvision does not load beside torch 2.13.0; the functions
  themselves are plain torch).
"""

from __future__ import annotations

import importlib.util
import types

import torch
from gemma_reference import GLOBAL, SLIDING, randomize, text_config_kwargs
from hypothesis import strategies as st
from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration
from vision_reference import token_ids

PLE_AND_MOE = ("hidden_size_per_layer_input", "vocab_size_per_layer_input", "enable_moe_block", "num_experts",
               "top_k_experts", "moe_intermediate_size")


@st.composite
def unified_text_kwargs(draw, max_layers: int = 4):
    kw = draw(text_config_kwargs(max_layers=max_layers, moe=False, ple=False))
    for key in PLE_AND_MOE:
        kw.pop(key, None)
    kw["use_bidirectional_attention"] = draw(st.sampled_from(["vision", None]))
    return kw


@st.composite
def unified_vision_kwargs(draw):
    dim = draw(st.sampled_from([8, 12, 20]))
    return dict(
        patch_size=draw(st.sampled_from([2, 3, 4])),
        pooling_kernel_size=draw(st.sampled_from([1, 2, 3])),
        mm_embed_dim=dim,
        output_proj_dims=dim,
        mm_posemb_size=draw(st.sampled_from([12, 40])),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
    )


@st.composite
def unified_audio_kwargs(draw):
    return dict(audio_embed_dim=draw(st.sampled_from([8, 20, 640])), rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])))


def reference_unified_model(text_kwargs: dict, vision_kwargs: dict | None, audio_kwargs: dict | None, seed: int = 0,
                            tokens: dict | None = None):
    cfg = Gemma4UnifiedConfig(
        text_config=text_kwargs, vision_config=vision_kwargs, audio_config=audio_kwargs,
        **(tokens or token_ids(text_kwargs["vocab_size"])),
    )
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    return randomize(Gemma4UnifiedForConditionalGeneration(cfg), seed).eval()


def reference_functions(name: str) -> types.ModuleType:
    """The module-level functions of a reference processor module as shipped, without its
    processor class (which needs torchvision, absent beside torch 2.13.0) and without its
    unguarded torchvision import (only the class's resize uses it)."""
    spec = importlib.util.find_spec(name)
    source = open(spec.origin).read().replace("from torchvision.transforms.v2 import functional as tvF", "tvF = None")
    source = source[: source.index("@auto_docstring")]  # the functions; the class comes after
    module = types.ModuleType(name + "_without_torchvision")
    module.__package__ = name.rsplit(".", 1)[0]
    exec(compile(source, spec.origin, "exec"), module.__dict__)
    return module


def reference_image_helpers() -> types.ModuleType:
    """`image_processing_gemma4_unified`'s functions: `patches_merge`, `convert_image_to_patches`,
    `pad_along_first_dim`, `get_aspect_ratio_preserving_size`."""
    return reference_functions("transformers.models.gemma4_unified.image_processing_gemma4_unified")


def reference_layout(kwargs: dict) -> list[str]:
    return kwargs.get("layer_types") or [SLIDING, GLOBAL]


def to_np(t: torch.Tensor):
    return t.detach().float().numpy()
