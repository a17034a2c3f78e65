"""Audio in a prompt (mirrors `Gemma4Processor` with audio: `replace_audio_token` and the
placeholder expansion of `ProcessorMixin.__call__`).

A prompt says where each clip goes with the tokenizer's audio token, `<|audio|>`, once per clip.
Each marker is expanded to

    <|audio>  <|audio|> x n  <audio|>          (begin, n placeholders, end)

where n is the number of soft tokens the clip becomes: its count of real mel frames after the
two stride-2 subsampling convs, as the processor computes it from the feature mask. The text
model then reads the clip's soft tokens in place of the placeholders, in order.

For convenience a prompt without any marker gets one per clip at its start (the reference
processor would refuse it); otherwise markers and clips must pair up exactly.
"""

from __future__ import annotations

import os

import numpy as np

from .tower import AudioTower
from .features import extract_features
from .subsample import subsampled_mask
from ..errors import ConfigError, InputError, plural
from .wav import WavClip, read_clip, resample

TOKEN_NAMES = ("boa_token", "audio_token", "eoa_token")  # tokenizer_config.json: begin, placeholder, end


def clip_samples(clip, index: int, tower: AudioTower) -> np.ndarray:
    """A clip given as a WAV path or `WavClip` (resampled to the extractor's rate) or as samples
    at that rate already."""
    if isinstance(clip, str | os.PathLike):
        clip = read_clip(clip)
    if isinstance(clip, WavClip):
        return resample(clip.samples, clip.rate, tower.features.sampling_rate)
    if isinstance(clip, np.ndarray | list | tuple):
        return clip
    raise InputError(f"audio clip {index}: expected a WAV file path or an array of samples, found {type(clip).__name__}")


def clip_path(clip) -> str | None:
    return os.fspath(clip) if isinstance(clip, str | os.PathLike) else clip.path if isinstance(clip, WavClip) else None


def audio_tokens(model) -> tuple[str, str, str]:
    """The tokenizer's (begin, placeholder, end) audio tokens, checked against config.json's ids."""
    tok = model.tokenizer
    names = [tok.named.get(name) for name in TOKEN_NAMES]
    if None in names or any(tok.specials.get(t) is None for t in names):
        missing = [n for n, t in zip(TOKEN_NAMES, names) if t is None or tok.specials.get(t) is None]
        raise ConfigError(
            f"{tok.path}: the tokenizer has no audio tokens ({', '.join(missing)} missing from tokenizer_config.json)"
        )
    expected = model.config.tokens.get("audio_token_id")
    if tok.specials[names[1]] != expected:
        raise ConfigError(
            f"{tok.path}: the tokenizer's audio token {names[1]!r} is id {tok.specials[names[1]]}, "
            f"but config.json says audio_token_id={expected}"
        )
    return tuple(names)


def expand_audio_markers(text: str, counts, tokens: tuple[str, str, str], unmarked_first: bool = True) -> str:
    """Replace the i-th audio marker of `text` by begin + counts[i] placeholders + end.
    `unmarked_first`: a text without markers gets the clips at its start."""
    begin, marker, end = tokens
    parts = text.split(marker)
    if len(parts) == 1 and unmarked_first:  # no marker: the clips go first
        parts = [""] * len(counts) + [text]
    if len(parts) - 1 != len(counts):
        raise InputError(f"prompt: {plural(len(parts) - 1, marker + ' marker')}, but {plural(len(counts), 'audio clip')} given")
    out = [parts[0]]
    for n, rest in zip(counts, parts[1:]):
        out += [begin + marker * int(n) + end, rest]
    return "".join(out)


def clip_features(model, clips) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Clips (WAV paths or sample arrays) -> (features, feature mask, soft tokens per clip)."""
    if model.audio is None:
        raise InputError(f"audio: {model.path} has no audio tower (its config.json has no audio_config)")
    clips = [clips] if isinstance(clips, str | os.PathLike | np.ndarray | WavClip) else list(clips)
    samples = [clip_samples(c, i, model.audio) for i, c in enumerate(clips)]
    names = [f"audio clip {i}" + (f" ({clip_path(c)})" if clip_path(c) else "") for i, c in enumerate(clips)]
    if hasattr(model.audio, "frames"):  # the unified model: raw 640-sample frames, a token each (`unified/audio.py`)
        return model.audio.frames(samples, names)
    features, mask = extract_features(samples, model.audio.features, names)
    return features, mask, [int(n) for n in subsampled_mask(mask).sum(axis=1)]


def heard(model, features, mask) -> np.ndarray:
    """The soft tokens of extracted clips: the conformer's, or the unified model's embedded frames."""
    [(_, _, tokens)] = model.encode_media(input_features=features, input_features_mask=mask)
    return tokens


def encode_clips(model, clips) -> tuple[list[int], np.ndarray]:
    """Clips -> (soft tokens per clip, all soft tokens (n, hidden))."""
    features, mask, counts = clip_features(model, clips)
    return counts, heard(model, features, mask)


def prompt_with_audio(
    model, text: str, clips, add_special_tokens: bool = True, unmarked_first: bool = True
) -> tuple[np.ndarray, list]:
    """Prompt text with audio markers and the clips (WAV paths or sample arrays) -> the prompt's
    token ids and the soft tokens to merge at its placeholders, [(placeholder id, "audio", (n, hidden))]."""
    features, mask, counts = clip_features(model, clips)
    expanded = expand_audio_markers(text, counts, audio_tokens(model), unmarked_first)
    ids = np.array(model.tokenizer.encode(expanded, add_special_tokens=add_special_tokens), dtype=np.int64)
    soft = heard(model, features, mask)  # the tower runs once the prompt is known to be right
    return ids, [(model.config.tokens["audio_token_id"], "audio", soft)]
