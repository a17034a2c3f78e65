"""Audio files in: WAV reading (standard library `wave`) and resampling to the extractor's rate.

The audio tower hears 16 kHz mono; a WAV file may hold any rate and any number of channels.

* Decoding: integer PCM of 8 (unsigned), 16, 24 or 32 bits, scaled to [-1, 1) by the sample
  type's full scale (16-bit: divide by 32768, as every audio library does). Compressed or float
  WAVs are an `InputError` that says how to convert them.
* Channels are averaged to mono (what `librosa.load(mono=True)` does).
* Resampling is band-limited interpolation with a Hann-windowed sinc: each output sample is a
  weighted sum of the input samples within `ZERO_CROSSINGS` lobes of the sinc, with the low-pass
  cutoff at `ROLLOFF` of the lower Nyquist frequency so that, when downsampling, frequencies the
  new rate cannot represent are removed instead of folding back as aliases. This is the method of
  `torchaudio.functional.resample` with its defaults (`sinc_interp_hann`, width 6, rolloff 0.99).
"""

from __future__ import annotations

import math
import os
import wave
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

ZERO_CROSSINGS = 6  # sinc lobes kept on each side of an output sample
ROLLOFF = 0.99  # low-pass cutoff as a fraction of the lower of the two Nyquist frequencies
MAX_CHUNK_VALUES = 1 << 22  # outputs x taps computed at once: bounds the resampler's memory
PCM_FULL_SCALE = {1: 2**7, 2: 2**15, 3: 2**23, 4: 2**31}  # bytes per sample -> full-scale value
CONVERT_HINT = "convert it with e.g. `ffmpeg -i IN -ac 1 -ar 16000 -c:a pcm_s16le OUT.wav`"


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A WAV file -> (mono samples (n,) float32 in [-1, 1), sample rate)."""
    path = os.fspath(path)
    try:
        with wave.open(path, "rb") as f:
            channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            data = f.readframes(n)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except (wave.Error, EOFError) as e:
        why = str(e) or "file ends inside the header"
        raise InputError(f"{path}: not an integer PCM WAV file ({why}); {CONVERT_HINT}") from None
    if width not in PCM_FULL_SCALE:
        raise InputError(f"{path}: sample width {8 * width} bits, expected 8, 16, 24 or 32-bit PCM; {CONVERT_HINT}")
    if rate <= 0:
        raise InputError(f"{path}: sample rate {rate} Hz in the header, expected a positive rate")
    frames = len(data) // (channels * width)  # a truncated last frame is dropped
    if frames == 0:
        raise InputError(f"{path}: no audio samples (an empty WAV file)")
    samples = decode_pcm(data[: frames * channels * width], width).reshape(frames, channels)
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32), rate


def decode_pcm(data: bytes, width: int) -> np.ndarray:
    """Little-endian integer PCM bytes -> float64 samples in [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        values = np.frombuffer(data, np.uint8).astype(np.int32) - 128
    elif width == 3:  # no 24-bit NumPy type: assemble three bytes, then sign-extend bit 23
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        values = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        values = (values ^ 0x800000) - 0x800000
    else:
        values = np.frombuffer(data, f"<i{width}")
    return values / float(PCM_FULL_SCALE[width])


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(n,) samples at `rate_in` -> (ceil(n * rate_out / rate_in),) samples at `rate_out`.

    Output sample m sits at input time t = m * rate_in / rate_out (in input samples) and is
    `sum_k x[k] * c * sinc(c * (t - k)) * hann((t - k) / half_width)`, where `c` is the cutoff in
    cycles per input sample (times two) and the window spans ZERO_CROSSINGS lobes each side."""
    x = np.asarray(x, np.float64)
    if rate_in == rate_out:
        return x.astype(np.float32)
    c = ROLLOFF * min(1.0, rate_out / rate_in)
    half_width = ZERO_CROSSINGS / c  # in input samples
    taps = np.arange(-math.ceil(half_width), math.ceil(half_width) + 1)  # (taps,)
    n_out = -(-len(x) * rate_out // rate_in)
    padded = np.concatenate([np.zeros(len(taps)), x, np.zeros(len(taps))])  # silence outside the clip
    out = np.empty(n_out)
    chunk = max(1, MAX_CHUNK_VALUES // len(taps))
    for start in range(0, n_out, chunk):
        m = np.arange(start, min(start + chunk, n_out))
        t = m * rate_in / rate_out  # (chunk,) output times in input samples
        k = np.floor(t).astype(np.int64)[:, None] + taps  # (chunk, taps) input samples nearby
        d = t[:, None] - k  # distance from each input sample
        window = np.where(np.abs(d) <= half_width, np.cos(np.pi * d / (2 * half_width)) ** 2, 0.0)
        weights = c * np.sinc(c * d) * window
        out[m] = np.sum(padded[k + len(taps)] * weights, axis=1)
    return out.astype(np.float32)


def load_clip(path: str | os.PathLike, rate: int) -> np.ndarray:
    """A WAV file as mono float32 samples at `rate` Hz: what `extract_features` reads."""
    samples, file_rate = read_wav(path)
    return resample(samples, file_rate, rate)


@dataclass(frozen=True)
class WavClip:
    """A WAV file read but not yet resampled (the rate it needs is the model's)."""

    path: str
    samples: np.ndarray  # (n,) float32 mono
    rate: int


def read_clip(path: str | os.PathLike) -> WavClip:
    return WavClip(os.fspath(path), *read_wav(path))
