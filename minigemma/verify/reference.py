"""minigemma's named activations, captured from the PyTorch reference with forward hooks.

    minigemma trace --reference --model DIR --ids 2,15,7 --out ref.safetensors

Needs the test extra (torch, transformers 5.23.0). The reference is Hugging Face `transformers`'
Gemma 4 (`Gemma4ForCausalLM` or `Gemma4ForConditionalGeneration`), or Gemma 3 for a Gemma 3
checkpoint (`Gemma3ForCausalLM`, `Gemma3ForConditionalGeneration`: the same layer modules, less
PLE, MoE and the v-norm), or the unified 12B (`Gemma4UnifiedForConditionalGeneration`: its
embedders' steps named `unified.vision.*` / `unified.audio.*`), loaded with eager attention in
float32 (or bfloat16: `--dtype`). Every name of `minigemma.trace` is an input or output of one of
its modules, so a hook captures it without touching the reference's code. The text model's points
(`ATTENTION_POINTS`, ..., `MODEL_POINTS`) live in `torch_adapter.py`, whose `reference_table` hands
the same mapping to a port; the towers' (and the unified embedders') are below. docs/verify.md
shows them as a table beside the shapes.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers
from transformers import Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma4ForCausalLM, Gemma4ForConditionalGeneration
from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer, Gemma3TextModel
from transformers.models.gemma4.modeling_gemma4 import Gemma4TextModel
from transformers.models.gemma4_unified.modeling_gemma4_unified import (
    Gemma4UnifiedForConditionalGeneration,
    Gemma4UnifiedTextModel,
)

from ..text.config import config_from_dict
from ..unified.config import MODEL_TYPE as UNIFIED, load_model_config, unified_config_from_dict
from ..errors import InputError
from ..audio.subsample import subsampled_mask
from .torch_adapter import (  # the points of the text model's modules: one table for both
    ATTENTION_POINTS, DENSE_POINTS, FLAT, LAYER_OUTPUT, MODEL_POINTS, MOE_POINTS, PLE_POINTS, hf_kv_sources, hook,
)  # fmt: skip
from .trace import Recorder
from ..vision.tower import PAD_POSITION

REFERENCE_CLASSES = {
    "gemma4_text": Gemma4ForCausalLM,
    "gemma4": Gemma4ForConditionalGeneration,
    "gemma3_text": Gemma3ForCausalLM,
    "gemma3": Gemma3ForConditionalGeneration,
    UNIFIED: Gemma4UnifiedForConditionalGeneration,
}
TEXT_MODELS = (Gemma4TextModel, Gemma3TextModel, Gemma4UnifiedTextModel)

# Gemma 3 has no v-norm: its values are the projection's output, flat (seq, kv_heads * head_dim).
GEMMA3_POINTS = (("attn.v", "self_attn.v_proj", "output"),)
GEMMA3_HEADS_FIRST = ("attn.q", "attn.k")  # Gemma 3 norms q and k after moving heads before positions
# The vision tower, module paths within `model` (`Gemma4Model`) of a `Gemma4ForConditionalGeneration`.
VISION_POINTS = (
    ("vision.patch_embed", "vision_tower.patch_embedder", "output"),
    ("vision.pooled", "vision_tower.pooler", "output[0]"),
    ("vision.out", "embed_vision", "input"),  # the tower's output: pooled, padding dropped, standardized
    ("vision.soft_tokens", "embed_vision", "output"),
)
VISION_LAYER_POINTS = (("out", "", "output"),)  # within `vision_tower.encoder.layers.{j}`
# The audio tower, module paths within `model` (`Gemma4Model`).
AUDIO_POINTS = (
    ("audio.subsample", "audio_tower.subsample_conv_projection", "output[0]"),
    ("audio.out", "audio_tower.output_proj", "output"),
    ("audio.soft_tokens", "embed_audio", "output"),
)
AUDIO_LAYER_POINTS = (  # within `audio_tower.layers.{j}`
    ("ffw1.out", "feed_forward1", "output"),
    ("attn.in", "norm_pre_attn", "output"),
    ("attn.out", "self_attn", "output[0]"),
    ("attn.post_norm", "norm_post_attn", "output"),
    ("conv.out", "lconv1d", "output"),
    ("ffw2.out", "feed_forward2", "output"),
    ("out", "", "output"),
)
# The unified model's embedders (no towers), module paths within `model` (`Gemma4UnifiedModel`).
UNIFIED_VISION_POINTS = (
    ("unified.vision.patch_embed", "embed_vision.patch_ln2", "output"),
    ("unified.vision.out", "embed_vision.pos_norm", "output"),
    ("unified.vision.soft_tokens", "embed_vision.multimodal_embedder", "output"),
)
UNIFIED_AUDIO_POINTS = (("unified.audio.soft_tokens", "embed_audio", "output"),)


def layer_points(layer) -> tuple:
    if isinstance(layer, Gemma3DecoderLayer):
        return ATTENTION_POINTS + GEMMA3_POINTS + DENSE_POINTS + LAYER_OUTPUT
    ffw = MOE_POINTS if getattr(layer, "enable_moe_block", False) else DENSE_POINTS  # the unified layer has no MoE
    return ATTENTION_POINTS + ffw + PLE_POINTS + LAYER_OUTPUT


def text_model(model) -> Gemma4TextModel | Gemma3TextModel:
    """The text model inside a causal-LM or conditional-generation reference model."""
    found = [m for m in model.modules() if isinstance(m, TEXT_MODELS)]
    if len(found) != 1:
        raise InputError(f"reference: expected one Gemma4TextModel or Gemma3TextModel inside {type(model).__name__}, found {len(found)}")
    return found[0]


def capture(model, input_ids, names=None, pixel_values=None, image_position_ids=None, mm_token_type_ids=None,
            input_features=None, input_features_mask=None):
    """Run the reference on one sequence of token ids (seq,) (and its images and audio, as the
    processor emits them) and return minigemma's named activations (glob patterns `names` select a
    subset), as float32 / int64 arrays in minigemma's shapes, in forward order."""
    text = text_model(model)
    raw: dict[str, torch.Tensor] = {}
    handles = register_hooks(text, raw) + register_vision_hooks(model, raw) + register_audio_hooks(model, raw)
    handles += register_unified_hooks(model, raw)
    media = dict(pixel_values=pixel_values, image_position_ids=image_position_ids, mm_token_type_ids=mm_token_type_ids,
                 input_features=input_features, input_features_mask=input_features_mask)
    media = {k: torch.as_tensor(np.asarray(v))[None] if k == "mm_token_type_ids" else torch.as_tensor(np.asarray(v))
             for k, v in media.items() if v is not None}  # fmt: skip
    ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64))[None]
    try:
        with torch.no_grad():
            # output_hidden_states=True keeps the full sequence through the KV-shared layers
            # (`_maybe_slice_kv_shared_inputs` would otherwise skip work a trace wants to see)
            raw["logits"] = model(input_ids=ids, use_cache=False, output_hidden_states=True, **media).logits.detach()
    finally:
        for h in handles:
            h.remove()
    return as_minigemma(raw, text.config, names, model.config, image_position_ids, input_features_mask)


def _keeper(raw: dict, name: str):
    def keep(t):
        if name in raw:
            raise AssertionError(f"reference: module behind {name!r} ran twice")
        raw[name] = t.detach().clone()

    return keep


def register_hooks(text: Gemma4TextModel, raw: dict) -> list:
    """Hooks storing each text point's tensor in `raw[name]`; returns their handles."""
    handles = [hook(text.get_submodule(p), point, _keeper(raw, name)) for name, p, point in MODEL_POINTS if _has(text, p)]
    for i, layer in enumerate(text.layers):
        for name, path, point in layer_points(layer):
            if _has(layer, path):
                handles.append(hook(layer.get_submodule(path), point, _keeper(raw, f"layers.{i}.{name}")))
        if getattr(text.config, "hidden_size_per_layer_input", None):
            keep = _keeper(raw, f"ple.input.{i}")  # the layer's second argument, `per_layer_input`
            handles.append(layer.register_forward_pre_hook(lambda m, args, keep=keep: keep(args[1])))
    return handles


def register_vision_hooks(model, raw: dict) -> list:
    """Hooks on the vision tower of a conditional-generation model that has one."""
    inner = getattr(model, "model", None)
    if getattr(inner, "vision_tower", None) is None or not _has(inner, VISION_POINTS[0][1]):
        return []  # no tower, or Gemma 3's SigLIP, whose steps minigemma does not name
    handles = [hook(inner.get_submodule(path), point, _keeper(raw, name)) for name, path, point in VISION_POINTS]
    for j, layer in enumerate(inner.vision_tower.encoder.layers):
        for step, path, point in VISION_LAYER_POINTS:
            handles.append(hook(layer.get_submodule(path), point, _keeper(raw, f"vision.layers.{j}.{step}")))
    return handles


def register_unified_hooks(model, raw: dict) -> list:
    """Hooks on the unified model's embedders, where it has them."""
    inner = getattr(model, "model", None)
    points = UNIFIED_VISION_POINTS if getattr(inner, "embed_vision", None) is not None and _has(inner, "embed_vision.pos_norm") else ()
    points += UNIFIED_AUDIO_POINTS if isinstance(model, Gemma4UnifiedForConditionalGeneration) and inner.embed_audio is not None else ()
    return [hook(inner.get_submodule(path), point, _keeper(raw, name)) for name, path, point in points]


def register_audio_hooks(model, raw: dict) -> list:
    """Hooks on the audio tower of a conditional-generation model that has one."""
    inner = getattr(model, "model", None)
    if getattr(inner, "audio_tower", None) is None:
        return []
    handles = [hook(inner.get_submodule(path), point, _keeper(raw, name)) for name, path, point in AUDIO_POINTS]
    for j, layer in enumerate(inner.audio_tower.layers):
        for step, path, point in AUDIO_LAYER_POINTS:
            handles.append(hook(layer.get_submodule(path), point, _keeper(raw, f"audio.layers.{j}.{step}")))
    return handles


def as_minigemma(raw: dict, cfg, names, model_config=None, image_position_ids=None, input_features_mask=None) -> dict[str, np.ndarray]:
    """Hooked tensors -> minigemma's arrays: batch axis dropped, packed axes split, in forward order."""
    recorder = Recorder(names)
    if image_position_ids is not None and "unified.vision.out" in raw:  # every image's real patches, in order
        real = torch.as_tensor(np.asarray(image_position_ids) != PAD_POSITION).all(dim=-1)
        for name in [n for n in raw if n.startswith("unified.vision.")]:
            recorder(name, raw.pop(name)[real].float().numpy())
    if input_features_mask is not None and "unified.audio.soft_tokens" in raw:  # every clip's real frames
        real = torch.as_tensor(np.asarray(input_features_mask, dtype=bool))
        recorder("unified.audio.soft_tokens", raw.pop("unified.audio.soft_tokens")[real].float().numpy())
    if image_position_ids is not None and "vision.out" in raw:
        for name, value in vision_arrays(raw, image_position_ids, model_config.vision_config.pooling_kernel_size):
            recorder(name, value)
    if input_features_mask is not None and "audio.out" in raw:
        real = torch.as_tensor(subsampled_mask(np.asarray(input_features_mask, dtype=bool)))  # (clips, frames')
        for name in [n for n in raw if n.startswith("audio.")]:  # every clip's real frames, clip after clip
            recorder(name, raw.pop(name)[real].float().numpy())
    seq, n_layers = raw["logits"].shape[1], cfg.num_hidden_layers
    if getattr(cfg, "hidden_size_per_layer_input", None):
        per_layer = [raw.pop(f"ple.input.{i}")[0] for i in range(n_layers)]
        raw["ple.inputs"] = torch.stack(per_layer, dim=1)[None]  # (1, seq, layers, ple_dim)
    for name, t in raw.items():
        value = t.numpy() if name.endswith("top_k_index") else t.float().numpy()
        if not name.endswith(FLAT):
            value = value[0]  # drop the batch axis
        if name == "ple.identity":  # the packed table row: (seq, layers * ple_dim) -> per layer
            value = value.reshape(seq, n_layers, -1)
        if name.endswith("attn.context"):  # o_proj's input: (seq, heads * head_dim) -> per head
            value = value.reshape(seq, cfg.num_attention_heads, -1)
        if name.endswith("attn.v") and value.ndim == 2:  # Gemma 3's v_proj output -> per KV head
            value = value.reshape(seq, -1, cfg.head_dim)
        if cfg.model_type == "gemma3_text" and name.endswith(GEMMA3_HEADS_FIRST):  # (heads, seq, dim) -> (seq, heads, dim)
            value = value.transpose(1, 0, 2)
        recorder(name, value)
    return recorder.result()


def vision_arrays(raw: dict, image_position_ids, k: int):
    """(name, array) of the vision names, taken out of `raw`: every image's real patches (or its
    pooled tokens), one image after another on axis 0, as minigemma encodes them."""
    real = torch.as_tensor(np.asarray(image_position_ids) != PAD_POSITION).all(dim=-1)  # (images, max_patches)
    for name in [n for n in raw if n.startswith("vision.")]:
        t = raw.pop(name)
        if name == "vision.pooled":  # (images, max_patches / k^2, hidden): each image's tokens come first
            t = torch.cat([tokens[: int(n) // k**2] for tokens, n in zip(t, real.sum(dim=-1))])
        elif name not in ("vision.out", "vision.soft_tokens"):  # patch-wise: padded to max_patches
            t = t[real]
        yield name, t.float().numpy()


def _has(module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def load_reference(path: str, dtype: str = "float32"):
    """The reference model of a checkpoint directory, eager attention, eval mode; float32, or
    bfloat16 to run it as the real checkpoints run."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # stderr is for minigemma's own one-line summary
    config = load_model_config(path)  # every model_type it accepts has a reference class
    cls = REFERENCE_CLASSES[config.model_type]
    return cls.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation="eager").eval()


def kv_sources(model) -> dict[int, int]:
    """Each KV-shared layer of the reference -> the layer whose keys/values it reads."""
    return hf_kv_sources(text_model(model))


def source() -> str:
    return f"transformers {transformers.__version__} (torch {torch.__version__})"


def model_config(model):
    """minigemma's resolved config of a reference model, for the trace's config hash."""
    raw = model.config.to_dict()
    return unified_config_from_dict(raw) if raw.get("model_type") == UNIFIED else config_from_dict(raw)
