"""The audio tower of Gemma 4's edge models (a USM-style conformer), from WAV file to soft tokens.

Read in the order a clip goes through it:

    wav.py         WAV reading, mono mix, resampling to 16 kHz
    features.py    log-mel features, as Gemma4AudioFeatureExtractor computes them
    config.py      audio_config
    subsample.py   two stride-2 convolutions: 4x fewer frames, one per 40 ms
    attention.py   chunked local attention with relative positions and a logit cap
    tower.py       the conformer layers (macaron feed-forwards, light conv) and the output projection
    prompt.py      audio placeholders in a prompt, and clips encoded for a loaded model
"""

from .features import extract_features
from .wav import load_clip

__all__ = ["extract_features", "load_clip"]
