"""The unified model's ears: raw waveform frames, no tower (mirrors
`Gemma4UnifiedAudioFeatureExtractor` and `Gemma4UnifiedModel.get_audio_features`).

Gemma 4's edge models turn a clip into log-mel features and run a conformer over them; the 12B
model cuts the 16 kHz waveform into frames of `audio_embed_dim` samples (640 = 40 ms, the same
soft-token rate as the conformer's 4x subsampling gives) and projects each frame straight into the
text model's space with the multimodal embedder: RMSNorm without scale, then a Linear.

Framing: a clip is zero-padded to a whole number of frames (the last frame's padding is part of
it: every frame is real); a batch of clips is padded with zero frames to the longest, and
`input_features_mask` says which frames are real. A clip of n samples is ceil(n / 640) soft tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio.tower import check_audio_inputs
from ..errors import InputError
from ..text.multimodal import EmbedderWeights, embed_soft_tokens, load_embedder
from ..text.ops import no_tap
from ..weights.checkpoint import TensorSource
from .config import UnifiedAudioConfig

PREFIX = "model.embed_audio"
SAMPLING_RATE = 16_000  # the extractor's rate: clips at other rates are resampled to it


@dataclass(frozen=True)
class FrameSettings:
    """What clip readers need to know (`audio/prompt.py: clip_samples`)."""

    sampling_rate: int = SAMPLING_RATE


def frames(samples, samples_per_token: int, name: str = "audio clip") -> np.ndarray:
    """One clip (n,) -> (ceil(n / samples_per_token), samples_per_token) float32, zero-padded."""
    wave = np.asarray(samples)
    if wave.ndim != 1 or wave.size == 0 or not np.issubdtype(wave.dtype, np.number):
        raise InputError(f"{name}: expected a non-empty 1-D array of samples, found {wave.dtype} {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise InputError(f"{name}: found NaN or infinity among the samples")
    wave = np.pad(wave, (0, (-len(wave)) % samples_per_token))
    return wave.reshape(-1, samples_per_token).astype(np.float32)


def extract_frames(clips, samples_per_token: int, names=None) -> tuple[np.ndarray, np.ndarray]:
    """Clips -> (input_features (clips, frames, samples_per_token), input_features_mask (clips, frames)),
    padded with zero frames to the longest clip, as the reference extractor returns them."""
    names = names or [f"audio clip {i}" for i in range(len(clips))]
    framed = [frames(c, samples_per_token, n) for c, n in zip(clips, names)]
    longest = max(len(f) for f in framed)
    features = np.zeros((len(framed), longest, samples_per_token), dtype=np.float32)
    mask = np.zeros((len(framed), longest), bool)
    for i, f in enumerate(framed):
        features[i, : len(f)], mask[i, : len(f)] = f, True
    return features, mask


@dataclass(frozen=True)
class UnifiedAudio:
    """What `Model.audio` holds for a unified checkpoint: the frame size and the embedder."""

    config: UnifiedAudioConfig
    embedder: EmbedderWeights
    features: FrameSettings = FrameSettings()

    def frames(self, clips, names=None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Clips (16 kHz sample arrays) -> (features, mask, soft tokens per clip)."""
        features, mask = extract_frames(clips, self.config.samples_per_token, names)
        return features, mask, [int(n) for n in mask.sum(axis=1)]

    def encode(self, input_features, input_features_mask, tap=no_tap) -> np.ndarray:
        """(clips, frames, samples) + mask -> soft tokens of the real frames, in order (n, text_hidden)."""
        features, mask = check_audio_inputs(input_features, input_features_mask)
        if features.shape[-1] != self.config.audio_embed_dim:
            raise InputError(
                f"input_features: expected frames of {self.config.audio_embed_dim} samples (audio_embed_dim), "
                f"found {features.shape[-1]}"
            )
        tokens = embed_soft_tokens(features[mask], self.embedder, self.config.rms_norm_eps)
        tap("soft_tokens", tokens)
        return tokens


def load_unified_audio(ckpt: TensorSource, cfg: UnifiedAudioConfig, text_hidden: int) -> UnifiedAudio:
    return UnifiedAudio(cfg, load_embedder(ckpt, PREFIX, cfg.audio_embed_dim, text_hidden))
