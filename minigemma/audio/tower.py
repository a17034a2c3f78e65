"""The audio tower: a USM-style conformer (mirrors `Gemma4AudioModel` and its layers).

Gemma 4's edge models (E2B, E4B) hear through the encoder of Google's Universal Speech Model
(arXiv:2303.01037), about 305M parameters: log-mel features go through

    subsampling convs (audio_subsample.py)        4x fewer frames: one per 40 ms
    num_hidden_layers conformer layers, each:
        feed-forward (half-weighted residual)      "macaron" style: one before attention...
        chunked local self-attention               (audio_attention.py)
        light conv: GLU, causal depthwise conv     local patterns attention misses
        feed-forward (half-weighted residual)      ...and one after
        RMSNorm
    output projection (with bias)

and each output frame becomes one soft token (after the embedder, `multimodal.py`).

Activations are clamped to +-`gradient_clipping` between blocks (a training-time guard that
the reference keeps at inference). Most linears are clipped linears (`clipped_linear.py`).

Trace names (`trace.py`; the reference module of each: docs/verify.md): `audio.subsample`,
`audio.layers.{i}.ffw1.out` / `.attn.in` / `.attn.out` / `.attn.post_norm` / `.conv.out` /
`.ffw2.out` / `.out`, `audio.out`, `audio.soft_tokens`; each the real frames of every clip, clip
after clip (padding frames dropped, as they are from the soft tokens).

One reference detail worth knowing: the norms of the feed-forwards and of the layer itself are
built without the config's `rms_norm_eps`, so they use the `Gemma4RMSNorm` default of 1e-6,
while the light conv's norms, the subsampling LayerNorms and the embedder use `rms_norm_eps`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .attention import (
    AudioAttentionWeights,
    audio_attention,
    block_mask,
    load_audio_attention,
    relative_position_embeddings,
)
from .config import AudioConfig, audio_config_from_dict
from .features import FeatureConfig, load_feature_config
from .subsample import SubsampleWeights, load_subsample, subsample
from ..weights.checkpoint import TensorSource
from ..vision.clipped_linear import ClippedLinearWeights, clipped_linear, load_clipped_linear
from ..errors import ConfigError, InputError
from ..text.multimodal import EmbedderWeights, embed_soft_tokens, load_embedder
from ..text.norm import rms_norm
from ..text.ops import ACTIVATIONS, linear, no_tap

DEFAULT_NORM_EPS = 1e-6  # `Gemma4RMSNorm`'s default eps, which the layer and feed-forward norms keep
FFW_EXPANSION = 4  # feed-forward width / hidden size
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class FeedForwardWeights:
    pre_norm: np.ndarray  # (hidden,)
    up: ClippedLinearWeights  # (4 hidden, hidden)  `ffw_layer_1`
    down: ClippedLinearWeights  # (hidden, 4 hidden)  `ffw_layer_2`
    post_norm: np.ndarray  # (hidden,)


@dataclass(frozen=True)
class LightConvWeights:
    pre_norm: np.ndarray  # (hidden,)
    linear_start: ClippedLinearWeights  # (2 hidden, hidden): values and gates of the GLU
    depthwise: np.ndarray  # (hidden, kernel): one causal filter per channel
    conv_norm: np.ndarray  # (hidden,)
    linear_end: ClippedLinearWeights  # (hidden, hidden)


@dataclass(frozen=True)
class ConformerLayerWeights:
    feed_forward1: FeedForwardWeights
    norm_pre_attn: np.ndarray  # (hidden,)
    attn: AudioAttentionWeights
    norm_post_attn: np.ndarray  # (hidden,)
    lconv: LightConvWeights
    feed_forward2: FeedForwardWeights
    norm_out: np.ndarray  # (hidden,)


@dataclass(frozen=True)
class AudioWeights:
    subsample: SubsampleWeights
    layers: tuple[ConformerLayerWeights, ...]
    output_proj: np.ndarray  # (output_proj_dims, hidden)
    output_bias: np.ndarray  # (output_proj_dims,)


# ------------------------------------------------------------------------------------ loading


def load_feed_forward(ckpt: TensorSource, prefix: str, cfg: AudioConfig) -> FeedForwardWeights:
    d, clip = cfg.hidden_size, cfg.use_clipped_linears
    return FeedForwardWeights(
        pre_norm=ckpt.f32(f"{prefix}.pre_layer_norm.weight", (d,)),
        up=load_clipped_linear(ckpt, f"{prefix}.ffw_layer_1", d, FFW_EXPANSION * d, clip),
        down=load_clipped_linear(ckpt, f"{prefix}.ffw_layer_2", FFW_EXPANSION * d, d, clip),
        post_norm=ckpt.f32(f"{prefix}.post_layer_norm.weight", (d,)),
    )


def load_light_conv(ckpt: TensorSource, prefix: str, cfg: AudioConfig) -> LightConvWeights:
    d, clip = cfg.hidden_size, cfg.use_clipped_linears
    return LightConvWeights(
        pre_norm=ckpt.f32(f"{prefix}.pre_layer_norm.weight", (d,)),
        linear_start=load_clipped_linear(ckpt, f"{prefix}.linear_start", d, 2 * d, clip),
        depthwise=ckpt.f32(f"{prefix}.depthwise_conv1d.weight", (d, 1, cfg.conv_kernel_size))[:, 0],
        conv_norm=ckpt.f32(f"{prefix}.conv_norm.weight", (d,)),
        linear_end=load_clipped_linear(ckpt, f"{prefix}.linear_end", d, d, clip),
    )


def load_conformer_layer(ckpt: TensorSource, prefix: str, cfg: AudioConfig) -> ConformerLayerWeights:
    d = (cfg.hidden_size,)
    return ConformerLayerWeights(
        feed_forward1=load_feed_forward(ckpt, f"{prefix}.feed_forward1", cfg),
        norm_pre_attn=ckpt.f32(f"{prefix}.norm_pre_attn.weight", d),
        attn=load_audio_attention(ckpt, f"{prefix}.self_attn", cfg),
        norm_post_attn=ckpt.f32(f"{prefix}.norm_post_attn.weight", d),
        lconv=load_light_conv(ckpt, f"{prefix}.lconv1d", cfg),
        feed_forward2=load_feed_forward(ckpt, f"{prefix}.feed_forward2", cfg),
        norm_out=ckpt.f32(f"{prefix}.norm_out.weight", d),
    )


def load_audio(ckpt: TensorSource, prefix: str, cfg: AudioConfig) -> AudioWeights:
    """The tower's weights under `prefix` (`model.audio_tower` in a Gemma 4 checkpoint)."""
    return AudioWeights(
        subsample=load_subsample(ckpt, f"{prefix}.subsample_conv_projection", cfg),
        layers=tuple(load_conformer_layer(ckpt, f"{prefix}.layers.{i}", cfg) for i in range(cfg.num_hidden_layers)),
        output_proj=ckpt.f32(f"{prefix}.output_proj.weight", (cfg.output_proj_dims, cfg.hidden_size)),
        output_bias=ckpt.f32(f"{prefix}.output_proj.bias", (cfg.output_proj_dims,)),
    )


# ------------------------------------------------------------------------------------ the blocks


def clip_activations(x: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    limit = np.float32(min(cfg.gradient_clipping, FLOAT32_MAX))
    return np.clip(x, -limit, limit)


def feed_forward(x: np.ndarray, w: FeedForwardWeights, cfg: AudioConfig) -> np.ndarray:
    """(batch, seq, hidden) -> same: x + residual_weight * norm(down(act(up(norm(x)))))."""
    h = rms_norm(clip_activations(x, cfg), w.pre_norm, DEFAULT_NORM_EPS)
    h = clipped_linear(ACTIVATIONS[cfg.hidden_act](clipped_linear(h, w.up)), w.down)
    h = rms_norm(clip_activations(h, cfg), w.post_norm, DEFAULT_NORM_EPS)
    return x + h * np.float32(cfg.residual_weight)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x))  # never overflows, unlike 1 / (1 + e^-x)


def causal_depthwise_conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(batch, seq, channels) with kernel (channels, k) -> same: each channel filtered by its own
    kernel over the current and k - 1 previous frames (zeros before the start)."""
    k = kernel.shape[1]
    padded = np.pad(x, ((0, 0), (k - 1, 0), (0, 0)))
    return sum(padded[:, i : i + x.shape[1]] * kernel[:, i] for i in range(k))


def light_conv(x: np.ndarray, w: LightConvWeights, cfg: AudioConfig) -> np.ndarray:
    """(batch, seq, hidden) -> same: the conformer's convolution module, with a residual."""
    h = clipped_linear(rms_norm(x, w.pre_norm, cfg.rms_norm_eps), w.linear_start)  # (b, t, 2 hidden)
    values, gates = np.split(h, 2, axis=-1)
    h = values * sigmoid(gates)  # GLU: the gates decide how much of each value passes
    h = clip_activations(causal_depthwise_conv(h, w.depthwise), cfg)
    h = ACTIVATIONS[cfg.hidden_act](rms_norm(h, w.conv_norm, cfg.rms_norm_eps))
    return x + clipped_linear(h, w.linear_end)


def conformer_layer(
    x: np.ndarray, positions: np.ndarray, allowed: np.ndarray, w: ConformerLayerWeights, cfg: AudioConfig, tap=no_tap
) -> np.ndarray:
    """(batch, seq, hidden) -> same; `tap(step, value)` at each named step (`AUDIO_LAYER_STEPS`)."""
    x = feed_forward(x, w.feed_forward1, cfg)
    tap("ffw1.out", x)
    h = rms_norm(clip_activations(x, cfg), w.norm_pre_attn, DEFAULT_NORM_EPS)
    tap("attn.in", h)
    h = audio_attention(h, positions, allowed, w.attn, cfg)
    tap("attn.out", h)
    h = rms_norm(clip_activations(h, cfg), w.norm_post_attn, DEFAULT_NORM_EPS)
    tap("attn.post_norm", h)
    x = light_conv(x + h, w.lconv, cfg)
    tap("conv.out", x)
    x = feed_forward(x, w.feed_forward2, cfg)
    tap("ffw2.out", x)
    x = rms_norm(clip_activations(x, cfg), w.norm_out, DEFAULT_NORM_EPS)
    tap("out", x)
    return x


def audio_forward(
    features: np.ndarray, mask: np.ndarray, w: AudioWeights, cfg: AudioConfig, tap=no_tap
) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features (clips, frames, mels) and mask (clips, frames) -> encoder outputs
    (clips, frames', output_proj_dims) and their mask (clips, frames'), frames' ~ frames / 4.
    `tap` sees each named step's real frames, clip after clip: (real frames, width)."""
    x, mask = subsample(features, mask, w.subsample, cfg)
    tap("audio.subsample", x[mask])
    positions = relative_position_embeddings(cfg)
    allowed = block_mask(mask, cfg)
    for i, layer in enumerate(w.layers):
        x = conformer_layer(x, positions, allowed, layer, cfg, lambda step, v, i=i: tap(f"audio.layers.{i}.{step}", v[mask]))
    x = linear(x, w.output_proj, w.output_bias)
    tap("audio.out", x[mask])
    return x, mask


# ------------------------------------------------------------------------------------ the tower in a model


@dataclass(frozen=True)
class AudioTower:
    """What a checkpoint with audio carries: the conformer, its embedder into the text model's
    space, and the feature extractor settings its WAV inputs need."""

    config: AudioConfig
    weights: AudioWeights
    embedder: EmbedderWeights  # `model.embed_audio`
    features: FeatureConfig


def load_audio_tower(ckpt: TensorSource, config, directory: str | None, features: FeatureConfig | None = None) -> AudioTower:
    """The audio tower of a `gemma4` checkpoint (`config`: its `ModelConfig`) in `directory`;
    `features`: the extractor's settings when they do not come from the directory (a GGUF mmproj)."""
    try:
        cfg = audio_config_from_dict(config.audio)
    except ConfigError as e:
        if directory is None:
            raise  # the caller says which file
        raise ConfigError(f"{os.path.join(directory, 'config.json')}: {e}") from None
    weights = load_audio(ckpt, "model.audio_tower", cfg)
    embedder = load_embedder(ckpt, "model.embed_audio", cfg.output_proj_dims, config.text.hidden_size)
    return AudioTower(cfg, weights, embedder, features or load_feature_config(directory))


def audio_soft_tokens(tower: AudioTower, input_features, input_features_mask, tap=no_tap) -> np.ndarray:
    """`input_features` (clips, frames, mels) and `input_features_mask` (clips, frames), as the
    extractor emits them -> the soft tokens of every clip, in order, padding frames dropped:
    (tokens, text_hidden). Clip i yields as many tokens as its subsampled mask has True values,
    the count its placeholder run in the prompt must have."""
    features, mask = check_audio_inputs(input_features, input_features_mask)
    out, out_mask = audio_forward(features, mask, tower.weights, tower.config, tap)
    tokens = embed_soft_tokens(out[out_mask], tower.embedder, tower.config.rms_norm_eps)
    tap("audio.soft_tokens", tokens)
    return tokens


def check_audio_inputs(input_features, input_features_mask) -> tuple[np.ndarray, np.ndarray]:
    if input_features is None or input_features_mask is None:
        missing = "input_features_mask" if input_features_mask is None else "input_features"
        raise InputError(f"{missing}: required with audio (the feature extractor returns both)")
    try:
        features = np.asarray(input_features, dtype=np.float32)
        mask = np.asarray(input_features_mask)
    except (TypeError, ValueError) as e:
        raise InputError(f"input_features: expected a float array ({e})") from None
    if features.ndim != 3 or features.shape[1] == 0:
        raise InputError(f"input_features: expected shape (clips, frames, mels), found {features.shape}")
    if mask.shape != features.shape[:2]:
        raise InputError(f"input_features_mask: expected shape {features.shape[:2]} (clips, frames), found {mask.shape}")
    if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()):
        raise InputError(f"input_features_mask: expected booleans (or 0/1), found dtype {mask.dtype}")
    if not np.all(np.isfinite(features)):
        raise InputError("input_features: found NaN or infinity")
    return features, mask.astype(bool)
