"""The subsampling convolution projection (mirrors `Gemma4AudioSubSampleConvProjection`).

The log-mel spectrogram has a row every 10 ms: too many for attention over 30 s of speech. Two
3x3 convolutions with stride 2, over the (time, frequency) image of the spectrogram, halve both
axes twice, so the conformer sees one frame every 40 ms (25 per second: one soft token each).
Each conv is followed by a LayerNorm over its channels (scale, no bias) and a ReLU; the
channels x remaining-frequency features of each frame are then flattened and projected to the
conformer's width.

Padded frames are zeroed before each conv, so a padding frame never leaks into a real one, and
the frame mask is halved alongside the frames (`mask[::2]`): an output frame is real when the
input frame at its centre is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import AudioConfig
from ..weights.checkpoint import TensorSource
from ..errors import InputError
from ..text.ops import linear, relu

KERNEL, STRIDE, PADDING = 3, 2, 1  # of both subsampling convs, fixed by the architecture
NUM_CONVS = 2  # frames and frequencies shrink by STRIDE ** NUM_CONVS = 4


@dataclass(frozen=True)
class ConvLayerWeights:
    conv: np.ndarray  # (out_channels, in_channels, KERNEL, KERNEL)
    norm: np.ndarray  # (out_channels,)


@dataclass(frozen=True)
class SubsampleWeights:
    layers: tuple[ConvLayerWeights, ...]  # NUM_CONVS of them
    input_proj: np.ndarray  # (hidden, frequencies_out * channels[1])

    @property
    def frequencies_out(self) -> int:
        return self.input_proj.shape[1] // self.layers[-1].conv.shape[0]


def load_subsample(ckpt: TensorSource, prefix: str, cfg: AudioConfig) -> SubsampleWeights:
    c0, c1 = cfg.subsampling_conv_channels
    layers = tuple(
        ConvLayerWeights(
            ckpt.f32(f"{prefix}.layer{i}.conv.weight", (c_out, c_in, KERNEL, KERNEL)),
            ckpt.f32(f"{prefix}.layer{i}.norm.weight", (c_out,)),
        )
        for i, (c_in, c_out) in enumerate([(1, c0), (c0, c1)])
    )
    # the reference sizes the projection for mel features whose width, quartered, is c0 // 4
    # (128 mel bins and 128 channels in the released towers)
    return SubsampleWeights(layers, ckpt.f32(f"{prefix}.input_proj_linear.weight", (cfg.hidden_size, (c0 // 4) * c1)))


def conv_out_length(n: int) -> int:
    """Frames (or frequencies) after one subsampling conv: ceil(n / 2)."""
    return (n + 2 * PADDING - KERNEL) // STRIDE + 1


def subsampled_mask(mask: np.ndarray) -> np.ndarray:
    """Frame mask (..., frames) -> the mask of the conformer's frames (..., ceil(ceil(frames/2)/2)).
    Its count of True per clip is the number of soft tokens the clip becomes."""
    for _ in range(NUM_CONVS):
        mask = mask[..., ::STRIDE]
    return mask


def conv2d_stride2(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(batch, c_in, time, freq) -> (batch, c_out, ceil(time/2), ceil(freq/2)): a 3x3 conv with
    stride 2 and one zero of padding all round, as a sum over the nine kernel taps."""
    b, _, t, f = x.shape
    t_out, f_out = conv_out_length(t), conv_out_length(f)
    xp = np.pad(x, ((0, 0), (0, 0), (PADDING, PADDING), (PADDING, PADDING)))
    out = np.zeros((b, w.shape[0], t_out, f_out), np.float32)
    for i in range(KERNEL):
        for j in range(KERNEL):
            tap = xp[:, :, i : i + STRIDE * t_out : STRIDE, j : j + STRIDE * f_out : STRIDE]  # (b, c_in, t_out, f_out)
            out += np.einsum("bctf,oc->botf", tap, w[:, :, i, j])
    return out


def layer_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis with a scale and no bias (`nn.LayerNorm(bias=False)`)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(variance + np.float32(eps)) * weight


def subsample(features: np.ndarray, mask: np.ndarray, w: SubsampleWeights, cfg: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features (batch, frames, mels) and their mask (batch, frames) -> conformer input
    (batch, frames', hidden) and its mask (batch, frames'), frames' = ceil(ceil(frames / 2) / 2)."""
    mels = features.shape[-1]
    if conv_out_length(conv_out_length(mels)) != w.frequencies_out:
        raise InputError(
            f"input_features: {mels} mel bins, but this audio tower's projection expects features whose "
            f"width subsamples to {w.frequencies_out} ({4 * w.frequencies_out - 3} to {4 * w.frequencies_out} mel bins)"
        )
    x = features[:, None].astype(np.float32)  # (batch, 1 channel, time, freq)
    for layer in w.layers:
        x = x * mask[:, None, :, None]  # padded frames contribute nothing
        x = conv2d_stride2(x, layer.conv)  # (batch, c_out, time / 2, freq / 2)
        x = relu(layer_norm(x.transpose(0, 2, 3, 1), layer.norm, cfg.rms_norm_eps)).transpose(0, 3, 1, 2)
        mask = mask[:, ::STRIDE]
    b, c, t, f = x.shape
    x = x.transpose(0, 2, 3, 1).reshape(b, t, f * c)  # per frame: frequencies outer, channels inner
    return linear(x, w.input_proj), mask
