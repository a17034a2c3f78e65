"""The unified model's configuration: `Gemma4UnifiedConfig` (model_type `gemma4_unified`).

Three parts, as the reference has them:

* `text_config` (`Gemma4UnifiedTextConfig`): Gemma 4's text decoder, read by minigemma's own
  `text/config.py`. What differs is only the defaults: no Per-Layer Embeddings and no MoE (the
  keys do not exist), a sliding window of 1024 instead of 512, a context of 262,144 instead of
  131,072, and bidirectional attention inside images (`"vision"`) unless the file says otherwise.
  `layer_scalar` and the dual RoPE are Gemma 4's. Both dialects load: published
  (`global_head_dim`, `num_global_key_value_heads`) and `save_pretrained`'s `per_layer_config`.
* `vision_config` (`Gemma4UnifiedVisionConfig`): 16-pixel patches merged k x k into one "model
  patch" (48 x 48 pixels, 6912 values), a Dense to `mm_embed_dim`, a position table of
  `mm_posemb_size` rows per axis.
* `audio_config` (`Gemma4UnifiedAudioConfig`): one soft token per `audio_embed_dim` raw samples
  (640 = 40 ms at 16 kHz). The reference also spells it `audio_samples_per_token`, `hidden_size`
  and `output_proj_dims` (setters of the same field); any of them is read.

Either tower config may be absent (the reference makes both optional).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError
from ..text.config import MULTIMODAL_TOKEN_DEFAULTS, ModelConfig, load_config, text_config_from_dict
from ..weights.config_reader import FieldReader, read_json_object

MODEL_TYPE = "gemma4_unified"
TEXT_MODEL_TYPE = "gemma4_unified_text"

# Where `Gemma4UnifiedTextConfig`'s defaults differ from `Gemma4TextConfig`'s (transformers
# 5.23.0); the PLE and MoE keys do not exist there, so they are off whatever the file says.
UNIFIED_TEXT_DEFAULTS: dict[str, Any] = {
    "max_position_embeddings": 262_144,
    "sliding_window": 1024,
    "use_bidirectional_attention": "vision",
}
NOT_IN_UNIFIED = {"hidden_size_per_layer_input": 0, "enable_moe_block": False}

VISION_DEFAULTS: dict[str, Any] = {
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "mm_embed_dim": 3840,
    "mm_posemb_size": 1120,
    "rms_norm_eps": 1e-6,
    "output_proj_dims": 3840,
}
AUDIO_DEFAULTS: dict[str, Any] = {"audio_embed_dim": 640, "rms_norm_eps": 1e-6}
AUDIO_ALIASES = ("audio_samples_per_token", "hidden_size", "output_proj_dims")  # setters of audio_embed_dim
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default: the embedder's LayerNorms take no eps from the config


@dataclass(frozen=True)
class UnifiedVisionConfig:
    patch_size: int  # pixels per side of the small ("teacher") patches
    pooling_kernel_size: int  # k: k x k small patches merge into one model patch, one soft token
    mm_embed_dim: int  # width of the patch Dense and the position table
    mm_posemb_size: int  # rows of the position table per axis: the largest grid side
    rms_norm_eps: float

    @property
    def model_patch_size(self) -> int:
        return self.patch_size * self.pooling_kernel_size

    @property
    def patch_pixels(self) -> int:
        """Values per merged patch: 3 channels of model_patch_size**2 pixels (6912)."""
        return 3 * self.model_patch_size**2


@dataclass(frozen=True)
class UnifiedAudioConfig:
    audio_embed_dim: int  # raw samples per frame = per soft token
    rms_norm_eps: float

    @property
    def samples_per_token(self) -> int:
        return self.audio_embed_dim


def vision_config_from_dict(raw, where: str = "vision_config.") -> UnifiedVisionConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected an object, found {type(raw).__name__}")
    c = {k: raw.get(k, v) for k, v in VISION_DEFAULTS.items()}
    r = FieldReader(c, where)
    cfg = UnifiedVisionConfig(
        patch_size=r.positive_int("patch_size"),
        pooling_kernel_size=r.positive_int("pooling_kernel_size"),
        mm_embed_dim=r.positive_int("mm_embed_dim"),
        mm_posemb_size=r.positive_int("mm_posemb_size"),
        rms_norm_eps=r.positive_float("rms_norm_eps"),
    )
    # the final projection reads what the position LayerNorm writes: both widths must agree
    if r.positive_int("output_proj_dims") != cfg.mm_embed_dim:
        r.fail("output_proj_dims", f"mm_embed_dim={cfg.mm_embed_dim} (the embedder projects that width)", c["output_proj_dims"])
    if "model_patch_size" in raw and raw["model_patch_size"] != cfg.model_patch_size:
        r.fail("model_patch_size", f"patch_size * pooling_kernel_size = {cfg.model_patch_size}", raw["model_patch_size"])
    return cfg


def audio_config_from_dict(raw, where: str = "audio_config.") -> UnifiedAudioConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected an object, found {type(raw).__name__}")
    c = {k: raw.get(k, v) for k, v in AUDIO_DEFAULTS.items()}
    r = FieldReader(c, where)
    dim = r.positive_int("audio_embed_dim")
    for alias in AUDIO_ALIASES:
        if alias in raw and raw[alias] != dim:
            r.fail(alias, f"audio_embed_dim={dim} (the reference stores them as one field)", raw[alias])
    return UnifiedAudioConfig(audio_embed_dim=dim, rms_norm_eps=r.positive_float("rms_norm_eps"))


def unified_text_raw(raw: dict) -> dict:
    """A unified text config restated with Gemma 4's keys: its own defaults, PLE and MoE off."""
    for key, off in NOT_IN_UNIFIED.items():
        if raw.get(key, off) not in (off, None):
            raise ConfigError(f"text_config.{key}: the unified model has no such feature, found {raw[key]!r}")
    return {**UNIFIED_TEXT_DEFAULTS, **raw, **NOT_IN_UNIFIED}


def unified_config_from_dict(raw: dict) -> ModelConfig:
    """Parse a `gemma4_unified` config.json; `vision` / `audio` hold the parsed embedder configs."""
    text_raw = raw.get("text_config") or {}
    if not isinstance(text_raw, dict):
        raise ConfigError(f"text_config: expected an object, found {type(text_raw).__name__}")
    text = text_config_from_dict(unified_text_raw(text_raw), "text_config.")
    # the model type switches on what differs in the text stack: an image's tokens see each other on
    # every layer, as the reference's forward has it (`TextConfig.image_blocks_all_layers`)
    text = replace(text, model_type=TEXT_MODEL_TYPE)
    vision = raw.get("vision_config")
    audio = raw.get("audio_config")
    return ModelConfig(
        model_type=MODEL_TYPE,
        text=text,
        vision=None if vision is None else vision_config_from_dict(vision),
        audio=None if audio is None else audio_config_from_dict(audio),
        tokens={k: raw.get(k, v) for k, v in MULTIMODAL_TOKEN_DEFAULTS.items()},
        raw=raw,
    )


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """`config.json` of any model minigemma runs: the unified model here, the others by
    `text/config.py` (which does not know the unified model: it sits below it)."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if os.path.exists(file):
        raw = read_json_object(file)
        if raw.get("model_type") == MODEL_TYPE:
            try:
                return unified_config_from_dict(raw)
            except ConfigError as e:
                raise ConfigError(f"{file}: {e}") from None
    return load_config(path)
