"""Log-mel features: what the audio tower hears (mirrors `Gemma4AudioFeatureExtractor`).

A waveform (16 kHz mono samples in [-1, 1]) becomes a spectrogram the conformer reads, one row of
128 log-mel energies per 10 ms:

1. pad the batch to one length (a multiple of 128 samples), remembering which samples are real;
2. "semicausal" framing: prepend half a frame of zeros, then cut frames of 20 ms (320 samples)
   every 10 ms (160 samples), so frame i is centred on sample i * hop;
3. window each frame with a periodic Hann window and take the magnitude of its 512-point FFT;
4. sum the magnitudes into 128 triangular mel filters (HTK mel scale, 0 to 8 kHz, unnormalised)
   and take `log(mel + mel_floor)`: the floor keeps silence finite;
5. a frame is valid only if every sample of its window is real audio; invalid frames are zeroed.

USM (the Universal Speech Model, whose encoder design Gemma 4's audio tower follows) was trained
on such features, so every constant here must match the reference exactly.

Reading WAV files and resampling them to the extractor's rate: `wav.py`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from ..weights.config_reader import FieldReader
from ..errors import ConfigError, InputError

PROCESSOR_FILE = "processor_config.json"  # transformers 5: every processor's settings in one file
PREPROCESSOR_FILE = "preprocessor_config.json"  # the older per-extractor file
HTK_MEL_SCALE, HTK_MEL_BREAK_HZ = 2595.0, 700.0  # mel = 2595 * log10(1 + hz / 700)


@dataclass(frozen=True)
class FeatureConfig:
    """The extractor's settings; defaults are the reference's (and the released E2B / E4B's)."""

    feature_size: int = 128  # mel filters
    sampling_rate: int = 16_000
    padding_value: float = 0.0
    padding_side: str = "right"
    frame_length_ms: float = 20.0
    hop_length_ms: float = 10.0
    min_frequency: float = 0.0
    max_frequency: float = 8000.0
    preemphasis: float = 0.0
    preemphasis_htk_flavor: bool = True
    fft_overdrive: bool = False
    dither: float = 0.0
    input_scale_factor: float = 1.0
    mel_floor: float = 1e-3
    per_bin_mean: tuple[float, ...] | None = None
    per_bin_stddev: tuple[float, ...] | None = None
    max_samples: int = 480_000  # longer clips are cut (30 s at 16 kHz): the processor's max_length
    pad_to_multiple_of: int = 128

    @property
    def frame_length(self) -> int:
        return int(round(self.sampling_rate * self.frame_length_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        return int(round(self.sampling_rate * self.hop_length_ms / 1000.0))

    @property
    def fft_length(self) -> int:
        """The next power of two at or above the frame (doubled with `fft_overdrive`)."""
        return 2 ** math.ceil(math.log2(self.frame_length)) * (2 if self.fft_overdrive else 1)

    @property
    def min_samples(self) -> int:
        """The shortest clip with one valid frame: the first window must end on a real sample."""
        return self.frame_length - self.frame_length // 2 + 1


def feature_config_from_dict(raw: dict, where: str = "feature_extractor.") -> FeatureConfig:
    defaults = FeatureConfig()
    c = {name: raw.get(name, getattr(defaults, name)) for name in FeatureConfig.__dataclass_fields__}
    r = FieldReader(c, where)
    n_mels = r.positive_int("feature_size")
    bins = {}
    for name in ("per_bin_mean", "per_bin_stddev"):  # saved as nested (1, 1, feature_size) lists
        v = c[name]
        try:
            values = None if v is None else np.asarray(v, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            values = np.zeros(0)
        if values is not None and (len(values) != n_mels or not np.all(np.isfinite(values))):
            r.fail(name, f"null or feature_size={n_mels} finite numbers", v)
        bins[name] = None if values is None else tuple(values.tolist())
    cfg = FeatureConfig(
        feature_size=n_mels,
        sampling_rate=r.positive_int("sampling_rate"),
        padding_value=r.number("padding_value"),
        padding_side=r.choice("padding_side", ("right", "left")),
        frame_length_ms=r.positive_float("frame_length_ms"),
        hop_length_ms=r.positive_float("hop_length_ms"),
        min_frequency=r.number("min_frequency"),
        max_frequency=r.positive_float("max_frequency"),
        preemphasis=r.number("preemphasis"),
        preemphasis_htk_flavor=r.boolean("preemphasis_htk_flavor"),
        fft_overdrive=r.boolean("fft_overdrive"),
        dither=r.number("dither"),
        input_scale_factor=r.number("input_scale_factor"),
        mel_floor=r.positive_float("mel_floor"),
        max_samples=r.positive_int("max_samples"),
        pad_to_multiple_of=r.positive_int("pad_to_multiple_of"),
        **bins,
    )
    if not cfg.min_frequency < cfg.max_frequency <= cfg.sampling_rate / 2:
        r.fail("max_frequency", f"above min_frequency={cfg.min_frequency} and at most half the sampling rate", cfg.max_frequency)
    if cfg.hop_length < 1 or cfg.frame_length < 2:
        found = (cfg.frame_length_ms, cfg.hop_length_ms)
        r.fail("frame_length_ms", "a frame of at least 2 samples and a hop of at least 1", found)
    return cfg


def load_feature_config(directory: str | os.PathLike) -> FeatureConfig:
    """The extractor settings a checkpoint ships (`processor_config.json`'s `feature_extractor`, or
    `preprocessor_config.json`); the reference defaults when it ships none."""
    for name, key in ((PROCESSOR_FILE, "feature_extractor"), (PREPROCESSOR_FILE, None)):
        file = os.path.join(os.fspath(directory), name)
        if not os.path.exists(file):
            continue
        try:
            with open(file, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{file}: cannot read JSON ({e})") from None
        raw = raw.get(key) if key and isinstance(raw, dict) else raw
        if isinstance(raw, dict) and "Audio" in str(raw.get("feature_extractor_type", "")):
            try:
                return feature_config_from_dict(raw)
            except ConfigError as e:
                raise ConfigError(f"{file}: {e}") from None
    return FeatureConfig()


# ------------------------------------------------------------------------------------ the features


def periodic_hann(n: int) -> np.ndarray:
    """Hann window of period n (the DFT-even window STFTs use): 0.5 - 0.5 cos(2 pi k / n)."""
    return np.hanning(n + 1)[:-1].astype(np.float32)  # float32, as the reference stores it


def hz_to_mel(hz):
    return HTK_MEL_SCALE * np.log10(1.0 + hz / HTK_MEL_BREAK_HZ)


def mel_to_hz(mel):
    return HTK_MEL_BREAK_HZ * (10.0 ** (mel / HTK_MEL_SCALE) - 1.0)


def mel_filter_bank(cfg: FeatureConfig) -> np.ndarray:
    """(fft_length // 2 + 1, feature_size) triangular filters, evenly spaced on the mel scale.

    Filter m rises from edge m to edge m+1 and falls to edge m+2 (edges in Hz, evenly spaced in
    mel); each FFT bin's weight is read off the triangle at the bin's frequency."""
    n_bins = cfg.fft_length // 2 + 1
    edges_mel = np.linspace(hz_to_mel(cfg.min_frequency), hz_to_mel(cfg.max_frequency), cfg.feature_size + 2)
    edges = mel_to_hz(edges_mel)  # (feature_size + 2,)
    bin_hz = np.linspace(0, cfg.sampling_rate // 2, n_bins)  # (n_bins,)
    width = np.diff(edges)
    offset = edges[None, :] - bin_hz[:, None]  # (n_bins, feature_size + 2)
    rising = -offset[:, :-2] / width[:-1]
    falling = offset[:, 2:] / width[1:]
    return np.maximum(0.0, np.minimum(rising, falling))


def frame_signal(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(length,) -> (frames, size): windows of `size` samples every `hop` samples."""
    n = (len(x) - size) // hop + 1
    if n <= 0:
        return np.zeros((0, size), x.dtype)
    return x[hop * np.arange(n)[:, None] + np.arange(size)[None, :]]


def log_mel(samples: np.ndarray, is_real: np.ndarray, cfg: FeatureConfig, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """One padded clip (length,) with its sample mask -> features (frames, feature_size) float32
    and frame mask (frames,) bool.

    Precision follows the reference step by step, because a quiet mel bin next to a loud one
    carries the FFT's rounding error into the log: samples, window and FFT in float32 (the
    reference's padding casts samples to float32), the mel sum and the log in float64."""
    x = np.asarray(samples, np.float32)
    if cfg.dither > 0.0:  # optional noise against hard-zero stretches (off in released models)
        x = x + np.float32(cfg.dither) * (rng or np.random.default_rng(0)).standard_normal(x.shape, np.float32)
    x = x * np.float32(cfg.input_scale_factor)
    # semicausal padding: half a frame of zeros in front centres frame i on sample i * hop
    pad = cfg.frame_length // 2
    x = np.concatenate([np.zeros(pad, np.float32), x])
    is_real = np.concatenate([np.zeros(pad, bool), np.asarray(is_real, bool)])
    # frames one sample longer than the window: preemphasis needs each frame's previous sample
    frames = frame_signal(x, cfg.frame_length + 1, cfg.hop_length)  # (frames, frame_length + 1)
    frames = preemphasize(frames, cfg)  # (frames, frame_length)
    spectrum = np.abs(np.fft.rfft(frames * periodic_hann(cfg.frame_length), n=cfg.fft_length, axis=-1))
    features = np.log(spectrum @ mel_filter_bank(cfg) + cfg.mel_floor)  # (frames, feature_size) float64
    if cfg.per_bin_mean is not None:
        features = features - np.asarray(cfg.per_bin_mean)
    if cfg.per_bin_stddev is not None:
        features = features / np.asarray(cfg.per_bin_stddev)
    # a frame is valid when the last sample of its (frame_length + 1)-sample window is real
    last = np.arange(len(frames)) * cfg.hop_length + cfg.frame_length
    frame_mask = is_real[last]
    return features.astype(np.float32) * frame_mask[:, None], frame_mask


def preemphasize(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(frames, frame_length + 1) -> (frames, frame_length): `y[t] = x[t] - a x[t-1]` (a high-pass
    that boosts consonants); without preemphasis, just drop each frame's extra last sample."""
    a = cfg.preemphasis
    if a <= 0.0:
        return frames[:, :-1]
    if cfg.preemphasis_htk_flavor:  # HTK: the first sample is scaled by (1 - a), not differenced
        return np.concatenate([frames[:, :1] * (1.0 - a), frames[:, 1:-1] - a * frames[:, :-2]], axis=-1)
    return frames[:, 1:] - a * frames[:, :-1]


def extract_features(clips, cfg: FeatureConfig = FeatureConfig(), names=None) -> tuple[np.ndarray, np.ndarray]:
    """Clips (a list of 1-D sample arrays at `cfg.sampling_rate`) -> `input_features`
    (clips, frames, feature_size) float32 and `input_features_mask` (clips, frames) bool, as the
    reference extractor's `__call__` returns them: clips longer than `max_samples` are cut, the
    batch is padded to its longest clip rounded up to a multiple of `pad_to_multiple_of`.
    `names`: what errors call each clip (default "audio clip i")."""
    clips = list(clips)
    names = names or [f"audio clip {i}" for i in range(len(clips))]
    clips = [check_clip(c, name, cfg) for c, name in zip(clips, names)]
    if not clips:
        raise InputError("audio: expected at least one clip, found none")
    longest = max(len(c) for c in clips)
    length = -(-longest // cfg.pad_to_multiple_of) * cfg.pad_to_multiple_of
    feats, masks = [], []
    for c in clips:
        extra = length - len(c)
        before, after = (0, extra) if cfg.padding_side == "right" else (extra, 0)
        padded = np.pad(c, (before, after), constant_values=cfg.padding_value)
        is_real = np.pad(np.ones(len(c), bool), (before, after))
        f, m = log_mel(padded, is_real, cfg)
        feats.append(f)
        masks.append(m)
    return np.stack(feats), np.stack(masks)


def check_clip(clip, name: str, cfg: FeatureConfig) -> np.ndarray:
    """A clip as float64 samples (cut at `max_samples`), or an InputError saying what is wrong."""
    try:
        x = np.asarray(clip, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected an array of samples, found {type(clip).__name__}") from None
    if x.ndim != 1:
        raise InputError(f"{name}: expected 1-D mono samples, found shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: samples must be finite numbers, found NaN or infinity")
    if len(x) < cfg.min_samples:
        raise InputError(
            f"{name}: {len(x)} samples ({1000 * len(x) / cfg.sampling_rate:.1f} ms) is too short, "
            f"expected at least {cfg.min_samples} samples at {cfg.sampling_rate} Hz"
        )
    # the reference rounds the cut up to a multiple of the padding unit before cutting
    limit = -(-cfg.max_samples // cfg.pad_to_multiple_of) * cfg.pad_to_multiple_of
    return x[:limit]
