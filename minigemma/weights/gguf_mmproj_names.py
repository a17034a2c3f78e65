"""The tensor names and storage conventions of llama.cpp's `mmproj` file for Gemma 4.

llama.cpp keeps a multimodal model's encoders apart from its text model: `convert_hf_to_gguf.py
--mmproj` writes the vision tower, the audio tower and their projections into the text space into a
companion GGUF of architecture `clip` (`conversion/gemma.py: Gemma4VisionAudioModel`, read by
`tools/mtmd/clip.cpp` as projector types `gemma4v` and `gemma4a`). This table says where each
tensor of a Hugging Face `Gemma4ForConditionalGeneration` goes, checked value by value against a
file that converter wrote:

    model.vision_tower.encoder.layers.{i}.*   ->  v.blk.{i}.*        (`VISION_LAYER`)
    model.vision_tower.patch_embedder / std_* ->  v.patch_embd, v.position_embd, v.std_bias, v.std_scale
    model.embed_vision.embedding_projection   ->  mm.input_projection.weight
    model.audio_tower.layers.{i}.*            ->  a.blk.{i}.*        (`AUDIO_LAYER`)
    model.audio_tower.subsample_conv_projection, output_proj -> a.conv1d.{0,1}.*, a.input_projection, a.pre_encode.out
    model.embed_audio.embedding_projection    ->  mm.a.input_projection.weight

A clipped linear `x.linear.weight` + `x.input_min` ... becomes `y.weight` + `y.input_min` ...
(clip bounds are 1-element tensors: ggml has no 0-d tensor). Three tensors change form on the way:

* the patch embedding (hidden, p * p * 3), pixels in (row, col, channel) order, is stored as
  llama.cpp's conv kernel (hidden, 3, p, p) -- `to_gguf` / `from_gguf` turn it around;
* the light conv's depthwise kernel (hidden, 1, k) loses its middle axis: (hidden, k);
* the audio attention's `per_dim_scale` p is stored as softplus(p), the factor it is used as
  (the reader takes the inverse softplus, so the tower computes the same softplus again).

Note the converter's swap inside the light conv: its `pre_layer_norm` is `conv_norm`, its
`conv_norm` is `norm_conv` (the `gguf` package's map; `clip.cpp` loads them crosswise again).
"""

from __future__ import annotations

import re

import numpy as np

BOUNDS = ("input_min", "input_max", "output_min", "output_max")  # Gemma4ClippableLinear's scalars

VISION_LINEARS = {  # clipped linears of a vision encoder layer
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
VISION_LAYER = {
    "input_layernorm.weight": "ln1.weight",
    "post_attention_layernorm.weight": "attn_post_norm.weight",
    "pre_feedforward_layernorm.weight": "ln2.weight",
    "post_feedforward_layernorm.weight": "ffn_post_norm.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
}
AUDIO_LINEARS = {  # clipped linears of a conformer layer
    "feed_forward1.ffw_layer_1": "ffn_up", "feed_forward1.ffw_layer_2": "ffn_down",
    "feed_forward2.ffw_layer_1": "ffn_up_1", "feed_forward2.ffw_layer_2": "ffn_down_1",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.post": "attn_out",
    "lconv1d.linear_start": "conv_pw1", "lconv1d.linear_end": "conv_pw2",
}
AUDIO_LAYER = {
    "feed_forward1.pre_layer_norm.weight": "ffn_norm.weight",
    "feed_forward1.post_layer_norm.weight": "ffn_post_norm.weight",
    "feed_forward2.pre_layer_norm.weight": "ffn_norm_1.weight",
    "feed_forward2.post_layer_norm.weight": "ffn_post_norm_1.weight",
    "norm_pre_attn.weight": "attn_pre_norm.weight",
    "norm_post_attn.weight": "attn_post_norm.weight",
    "norm_out.weight": "ln2.weight",
    "self_attn.per_dim_scale": "per_dim_scale.weight",
    "self_attn.relative_k_proj.weight": "attn_k_rel.weight",
    "lconv1d.pre_layer_norm.weight": "conv_norm.weight",  # the converter's swap (module docstring)
    "lconv1d.conv_norm.weight": "norm_conv.weight",
    "lconv1d.depthwise_conv1d.weight": "conv_dw.weight",
}
GLOBAL = {
    "model.vision_tower.patch_embedder.input_proj.weight": "v.patch_embd.weight",
    "model.vision_tower.patch_embedder.position_embedding_table": "v.position_embd.weight",
    "model.vision_tower.std_bias": "v.std_bias",
    "model.vision_tower.std_scale": "v.std_scale",
    "model.embed_vision.embedding_projection.weight": "mm.input_projection.weight",
    "model.audio_tower.subsample_conv_projection.layer0.conv.weight": "a.conv1d.0.weight",
    "model.audio_tower.subsample_conv_projection.layer0.norm.weight": "a.conv1d.0.norm.weight",
    "model.audio_tower.subsample_conv_projection.layer1.conv.weight": "a.conv1d.1.weight",
    "model.audio_tower.subsample_conv_projection.layer1.norm.weight": "a.conv1d.1.norm.weight",
    "model.audio_tower.subsample_conv_projection.input_proj_linear.weight": "a.input_projection.weight",
    "model.audio_tower.output_proj.weight": "a.pre_encode.out.weight",
    "model.audio_tower.output_proj.bias": "a.pre_encode.out.bias",
    "model.embed_audio.embedding_projection.weight": "mm.a.input_projection.weight",
}
VISION_LAYER_HF, VISION_LAYER_GGUF = "model.vision_tower.encoder.layers.{i}.", "v.blk.{i}."
AUDIO_LAYER_HF, AUDIO_LAYER_GGUF = "model.audio_tower.layers.{i}.", "a.blk.{i}."
PATCH_EMBD, CONV_DW, PER_DIM_SCALE = "v.patch_embd.weight", ".conv_dw.weight", ".per_dim_scale.weight"


def with_linears(layer: dict, linears: dict) -> dict:
    """A layer table plus its clipped linears: `x.linear.weight` -> `y.weight`, `x.input_min` -> `y.input_min` ..."""
    out = dict(layer)
    for hf, g in linears.items():
        out[f"{hf}.linear.weight"] = f"{g}.weight"
        out.update({f"{hf}.{b}": f"{g}.{b}" for b in BOUNDS})
    return out


def name_pairs() -> list[tuple[str, str]]:
    """(Hugging Face name, mmproj name) patterns; `{i}` stands for a layer index."""
    pairs = list(GLOBAL.items())
    for hf_prefix, g_prefix, table in (
        (VISION_LAYER_HF, VISION_LAYER_GGUF, with_linears(VISION_LAYER, VISION_LINEARS)),
        (AUDIO_LAYER_HF, AUDIO_LAYER_GGUF, with_linears(AUDIO_LAYER, AUDIO_LINEARS)),
    ):
        pairs += [(hf_prefix + hf, g_prefix + g) for hf, g in table.items()]
    return pairs


def name_pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(\d+)") + "$")


PAIRS = name_pairs()
TO_GGUF = {hf: (name_pattern(hf), g) for hf, g in PAIRS}
FROM_GGUF = {g: (name_pattern(g), hf) for hf, g in PAIRS}


def translate(name: str, table: dict) -> str | None:
    for regex, target in table.values():
        m = regex.match(name)
        if m:
            return target.replace("{i}", m.group(1)) if m.groups() else target
    return None


def gguf_name(hf: str) -> str | None:
    """`model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight` -> `v.blk.0.attn_q.weight`."""
    return translate(hf, TO_GGUF)


def hf_name(gguf: str) -> str | None:
    """The inverse of `gguf_name`; None for a tensor the layout does not have."""
    return translate(gguf, FROM_GGUF)


# ------------------------------------------------------------------------------------ the changes of form

def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def inverse_softplus(y: np.ndarray) -> np.ndarray:
    """p with softplus(p) = y (y > 0): y + log(1 - e^-y), computed in float64."""
    y = np.asarray(y, np.float64)
    return y + np.log(-np.expm1(-y))


def to_gguf(gguf: str, values: np.ndarray) -> np.ndarray:
    """A Hugging Face tensor (float32) as the mmproj file holds it (NumPy order, outermost first)."""
    if values.ndim == 0:
        return values.reshape(1)
    if gguf == PATCH_EMBD:  # (hidden, p * p * 3) in (row, col, channel) order -> conv kernel (hidden, 3, p, p)
        hidden, pixels = values.shape
        p = int(round((pixels // 3) ** 0.5))
        return values.reshape(hidden, p, p, 3).transpose(0, 3, 1, 2)
    if gguf.endswith(CONV_DW):  # (hidden, 1, k) -> (hidden, k)
        return values.reshape(values.shape[0], values.shape[-1])
    if gguf.endswith(PER_DIM_SCALE):
        return softplus(values.astype(np.float64)).astype(np.float32)
    return values


def from_gguf(gguf: str, values: np.ndarray, hf_shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `to_gguf`: stored values -> the Hugging Face tensor of shape `hf_shape`."""
    if gguf == PATCH_EMBD:  # (hidden, 3, p, p) -> (hidden, p * p * 3)
        return values.transpose(0, 2, 3, 1).reshape(hf_shape)
    if gguf.endswith(PER_DIM_SCALE):
        return inverse_softplus(values).astype(np.float32)
    return values.reshape(hf_shape)


def hf_shape(gguf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The Hugging Face shape of a stored tensor of `shape` (NumPy order)."""
    name = hf_name(gguf) or ""
    if name.endswith(BOUNDS) and shape == (1,):
        return ()
    if gguf == PATCH_EMBD and len(shape) == 4:
        return (shape[0], shape[1] * shape[2] * shape[3])
    if gguf.endswith(CONV_DW) and len(shape) == 2:
        return (shape[0], 1, shape[1])
    return shape
