"""Log-mel features against the reference `Gemma4AudioFeatureExtractor`, and WAV files in.

Drawn waveforms (noise, silence, clipping-level square waves, tones; lengths rarely a multiple of
the hop; batches of unequal lengths) under drawn extractor settings (mel count, rates, frame and
hop, frequency range, preemphasis of both flavours, FFT overdrive, per-bin normalisation,
padding side, floor): features at 1e-5 and masks equal. WAV files are written by the tests."""

import json
import struct

import numpy as np
import pytest
from audio_reference import write_wav
from hypothesis import given, note
from hypothesis import strategies as st
from transformers import Gemma4AudioFeatureExtractor

from minigemma.audio.features import FeatureConfig, extract_features, feature_config_from_dict, load_feature_config
from minigemma.errors import InputError
from minigemma.audio.wav import load_clip, read_wav, resample

TOL = dict(rtol=1e-5, atol=1e-5)


@st.composite
def extractor_settings(draw):
    rate = draw(st.sampled_from([16_000, 8_000]))
    n_mels = draw(st.sampled_from([16, 64, 128]))
    settings = dict(
        feature_size=n_mels,
        sampling_rate=rate,
        frame_length_ms=draw(st.sampled_from([20.0, 25.0])),
        hop_length_ms=draw(st.sampled_from([10.0, 12.5])),
        min_frequency=draw(st.sampled_from([0.0, 60.0])),
        max_frequency=draw(st.sampled_from([rate / 2, 0.4 * rate])),
        preemphasis=draw(st.sampled_from([0.0, 0.97])),
        preemphasis_htk_flavor=draw(st.booleans()),
        fft_overdrive=draw(st.booleans()),
        input_scale_factor=draw(st.sampled_from([1.0, 0.5])),
        mel_floor=draw(st.sampled_from([1e-3, 1e-5])),
        padding_side=draw(st.sampled_from(["right", "left"])),
    )
    if draw(st.booleans()):
        rng = np.random.default_rng(n_mels)
        settings.update(per_bin_mean=rng.standard_normal(n_mels).tolist(), per_bin_stddev=rng.uniform(0.5, 2, n_mels).tolist())
    return settings


@st.composite
def waveform(draw, cfg: FeatureConfig):
    """One clip: its kind drawn, its length usually not a multiple of the hop."""
    hop = cfg.hop_length
    length = hop * draw(st.integers(cfg.min_samples // hop + 1, 40)) + draw(st.integers(0, hop - 1))
    kind = draw(st.sampled_from(["noise", "silence", "loud", "tone"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    t = np.arange(length) / cfg.sampling_rate
    if kind == "noise":
        return rng.uniform(-0.5, 0.5, length).astype(np.float32)
    if kind == "silence":
        return np.zeros(length, np.float32)
    if kind == "loud":  # overdriven sine clipped at full scale: a square-ish wave at +-1
        return np.clip(4 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, cfg.sampling_rate / 3) * t)).astype(np.float32)


def reference_features(fe: Gemma4AudioFeatureExtractor, clips) -> tuple[np.ndarray, np.ndarray]:
    out = fe(list(clips), return_tensors="np")
    return out["input_features"], out["input_features_mask"]


@given(settings=extractor_settings(), data=st.data())
def test_features_match_reference_extractor(settings, data):
    note(f"settings: { {k: v for k, v in settings.items() if not k.startswith('per_bin')} }")
    cfg = feature_config_from_dict(settings)
    n = data.draw(st.integers(1, 3), label="clips")
    clips = [data.draw(waveform(cfg), label=f"clip {i}") for i in range(n)]
    note(f"lengths: {[len(c) for c in clips]}")
    expected, expected_mask = reference_features(Gemma4AudioFeatureExtractor(**settings), clips)
    got, mask = extract_features(clips, cfg)
    assert got.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(got, expected, **TOL)


def test_batch_of_unequal_lengths_and_cut_at_thirty_seconds():
    """Default settings; one clip longer than the 30 s the reference keeps, one short, one silent."""
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-1, 1, 480_000 + 1234).astype(np.float32), rng.uniform(-1, 1, 5_001).astype(np.float32), np.zeros(777, np.float32)]
    expected, expected_mask = reference_features(Gemma4AudioFeatureExtractor(), clips)
    got, mask = extract_features(clips)
    assert got.shape == expected.shape == (3, (480_000 + 160 - 321) // 160 + 1, 128)  # frames of 30 s
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(got, expected, **TOL)


def test_shortest_clip_is_the_reference_boundary():
    """`min_samples` is the first length with a valid frame in the reference; one sample fewer
    has none there and is our InputError."""
    fe, cfg = Gemma4AudioFeatureExtractor(), FeatureConfig()
    clip = np.full(cfg.min_samples, 0.25, np.float32)
    assert reference_features(fe, [clip])[1].sum() == 1
    assert reference_features(fe, [clip[:-1]])[1].sum() == 0
    np.testing.assert_allclose(extract_features([clip])[0], reference_features(fe, [clip])[0], **TOL)
    with pytest.raises(InputError, match=rf"audio clip 0: {cfg.min_samples - 1} samples .* too short, expected at least {cfg.min_samples}"):
        extract_features([clip[:-1]])


@pytest.mark.parametrize(
    "clips, message",
    [
        ([], "expected at least one clip"),
        ([np.zeros(0)], "audio clip 0: 0 samples"),
        ([np.zeros(4000), np.zeros((2, 4000))], r"audio clip 1: expected 1-D mono samples, found shape \(2, 4000\)"),
        ([np.full(4000, np.nan)], "audio clip 0: samples must be finite"),
        (["not audio"], "audio clip 0: expected an array of samples"),
    ],
)
def test_bad_clips_are_input_errors(clips, message):
    with pytest.raises(InputError, match=message):
        extract_features(clips)


def test_settings_files_as_checkpoints_ship_them(tmp_path):
    """`preprocessor_config.json` as the reference extractor saves it, and `processor_config.json`
    with a `feature_extractor` block as Google ships it: same settings as the reference reloads."""
    rng = np.random.default_rng(1)
    settings = dict(feature_size=64, preemphasis=0.9, per_bin_mean=rng.standard_normal(64).tolist(), per_bin_stddev=rng.uniform(1, 2, 64).tolist())
    Gemma4AudioFeatureExtractor(**settings).save_pretrained(tmp_path)
    reloaded = Gemma4AudioFeatureExtractor.from_pretrained(tmp_path)
    clips = [rng.uniform(-1, 1, 3333).astype(np.float32)]
    expected = reference_features(reloaded, clips)[0]
    np.testing.assert_allclose(extract_features(clips, load_feature_config(tmp_path))[0], expected, **TOL)

    block = json.loads((tmp_path / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").unlink()
    (tmp_path / "processor_config.json").write_text(json.dumps({"audio_seq_length": 750, "feature_extractor": block}))
    np.testing.assert_allclose(extract_features(clips, load_feature_config(tmp_path))[0], expected, **TOL)
    (tmp_path / "processor_config.json").unlink()
    assert load_feature_config(tmp_path) == FeatureConfig()  # nothing shipped: the reference defaults


# ------------------------------------------------------------------------------------ WAV files


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_wav_decoding_every_pcm_width_and_channel_count(tmp_path, width, channels):
    full = 2 ** (8 * width - 1)
    ints = np.random.default_rng(width).integers(-full, full, (500, channels))
    write_wav(tmp_path / "a.wav", ints / full, rate=22_050, width=width)
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 22_050 and samples.dtype == np.float32 and samples.shape == (500,)
    np.testing.assert_allclose(samples, (ints / full).mean(axis=1), rtol=0, atol=1e-7)  # mono: the mean


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resampling_keeps_tones_below_the_new_nyquist(rate):
    """A tone well inside the 16 kHz band comes out as the same tone sampled at 16 kHz."""
    seconds, freq = 0.5, 1234.5
    x = np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)
    y = resample(x, rate, 16_000)
    assert len(y) == int(16_000 * seconds)
    inner = slice(50, -50)  # the clip's edges see silence beyond them
    np.testing.assert_allclose(y[inner], np.sin(2 * np.pi * freq * np.arange(len(y)) / 16_000)[inner], atol=2e-3)


@pytest.mark.parametrize("rate, freq", [(44_100, 11_000), (48_000, 14_000)])
def test_resampling_removes_what_the_new_rate_cannot_hold(rate, freq):
    """A tone above 8 kHz cannot exist at 16 kHz: it must be filtered out, not folded back down
    as an alias (naive decimation would keep its full power)."""
    x = np.sin(2 * np.pi * freq * np.arange(rate // 2) / rate)
    y = resample(x, rate, 16_000)
    assert np.sqrt(np.mean(y[50:-50] ** 2)) < 5e-3  # the tone had rms 0.707


def test_wav_file_to_features_matches_reference(tmp_path):
    """A 44.1 kHz stereo file: read, mixed, resampled, then features equal the reference's on
    the same samples."""
    t = np.arange(44_100) / 44_100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 3000 * t)], axis=1)
    write_wav(tmp_path / "s.wav", stereo, rate=44_100)
    clip = load_clip(tmp_path / "s.wav", 16_000)
    assert clip.shape == (16_000,)
    expected, expected_mask = reference_features(Gemma4AudioFeatureExtractor(), [clip])
    got, mask = extract_features([clip])
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(got, expected, **TOL)


def riff(format_tag: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    """A WAV file's bytes with any header values (the `wave` writer refuses bad ones)."""
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),  # no such file
        (b"just some text, not audio", "not an integer PCM WAV file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not an integer PCM WAV file"),  # header cut short
        (riff(3, 1, 16_000, 32, np.zeros(100, "<f4").tobytes()), "unknown format: 3"),  # float WAV
        (riff(1, 1, 16_000, 40, bytes(500)), "sample width 40 bits, expected 8, 16, 24 or 32-bit PCM"),
        (riff(1, 1, 16_000, 16, b""), "no audio samples"),
    ],
)
def test_bad_wav_files_are_input_errors(tmp_path, content, message):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as e:
        load_clip(path, 16_000)
    assert str(path) in str(e.value)
