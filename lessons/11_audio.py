# %% [markdown]
# # Lesson 11: audio: log-mel features, subsampling and chunked local attention
#
# *A waveform becomes a log-mel spectrogram (a row every 10 ms), convolutions cut it to a frame every 40 ms, and a conformer whose attention only looks at nearby frames turns each frame into one soft token.*
#
# Reference: `Gemma4AudioFeatureExtractor` (transformers `models/gemma4/feature_extraction_gemma4.py`), and in
# `models/gemma4/modeling_gemma4.py`: `Gemma4AudioSubSampleConvProjection`, `Gemma4AudioAttention`,
# `Gemma4AudioRelPositionalEncoding`, `Gemma4AudioLightConv1d`, `Gemma4AudioLayer`, `Gemma4AudioModel`,
# `Gemma4MultimodalEmbedder`.
# minigemma: `audio/features.py` (`extract_features`, `mel_filter_bank`), `audio/subsample.py` (`subsample`),
# `audio/attention.py` (`block_mask`, `audio_attention`), `audio/tower.py` (`conformer_layer`, `audio_forward`,
# `audio_soft_tokens`), `audio/prompt.py`.
#
# **No trained weights here.** The embedded model is a text model: minigemma has no trained
# audio tower. This lesson builds a small conformer with *random* weights
# (`weights_tools.random_checkpoint.RandomWeights`), so its soft tokens mean nothing; but the
# features are real, computed from a real (generated) sound, the frame counts, masks and prompt
# layout are those of Gemma 4, and the tower computes exactly what the reference computes with
# the same weights.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, save, to_numpy

import numpy as np

import minigemma
from minigemma.audio.tower import AudioTower, audio_soft_tokens, load_audio
from minigemma.audio.attention import block_mask
from minigemma.audio.config import audio_config_from_dict
from minigemma.audio.features import FeatureConfig, extract_features, mel_filter_bank
from minigemma.audio.prompt import expand_audio_markers
from minigemma.audio.subsample import subsampled_mask
from minigemma.text.multimodal import load_embedder
from weights_tools.random_checkpoint import RandomWeights

features_cfg = FeatureConfig()  # the released models' settings: 16 kHz, 128 mels, 20 ms frames every 10 ms
rate = features_cfg.sampling_rate

# %% [markdown]
# ## A sound
#
# Made here, so the lesson needs no file (a WAV file would go through `minigemma.audio.wav.load_clip`,
# which also resamples it to 16 kHz): 2.4 seconds of a rising whistle, a pause, two notes, a hiss
# like an "s", and a buzzing vowel-like tone with its harmonics.

# %%
t = np.arange(int(2.4 * rate)) / rate
sound = np.zeros_like(t)
part = lambda a, b: (t >= a) & (t < b)  # noqa: E731
sound += part(0.0, 0.8) * 0.5 * np.sin(2 * np.pi * (300 * t + (3000 - 300) / (2 * 0.8) * t**2))  # 300 -> 3000 Hz
sound += part(1.0, 1.3) * 0.4 * np.sin(2 * np.pi * 440 * t) + part(1.3, 1.6) * 0.4 * np.sin(2 * np.pi * 660 * t)
sound += part(1.6, 1.8) * 0.3 * np.diff(np.random.default_rng(0).standard_normal(len(t) + 1))  # hiss: high-passed noise
sound += part(1.8, 2.4) * sum(0.3 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
sound = (0.9 * sound / np.abs(sound).max()).astype(np.float32)  # samples in [-1, 1], as a WAV file holds them
print(f"{len(sound)} samples, {len(sound) / rate:.1f} s at {rate} Hz, peak {np.abs(sound).max():.2f}")

# %% [markdown]
# ## Log-mel features
#
# The tower does not hear samples; it reads a spectrogram. Every 10 ms a 20 ms window of the
# signal goes through an FFT; its magnitudes are summed into 128 triangular *mel* filters, spaced
# evenly on the mel scale (close together at low frequencies, where hearing, and speech, resolve
# finely; wide apart at high ones), and the log of each sum is taken (loudness is heard on a log
# scale, and the log tames the huge range of energies). USM, the speech model whose encoder
# Gemma 4's audio tower follows, was trained on exactly these features.

# %%
features, mask = extract_features([sound], features_cfg)  # (clips, frames, 128), (clips, frames)
print(f"features {features.shape}: a row of {features.shape[2]} log-mel energies every {features_cfg.hop_length_ms:g} ms; "
      f"{mask.sum()} valid frames")
filters = mel_filter_bank(features_cfg)  # (fft bins, mels)
bin_hz = np.linspace(0, rate // 2, filters.shape[0])
centres = bin_hz[filters.argmax(axis=0)]
print("mel filter centres (Hz), every 16th:", np.round(centres[::16]).astype(int))

fig, axes = plt.subplots(3, 1, figsize=(10, 8), gridspec_kw={"height_ratios": [1, 2.2, 1.2]}, layout="constrained")
axes[0].plot(t, sound, lw=0.4)
axes[0].set(xlim=(0, t[-1]), ylabel="sample", title="the sound")
frame_time = np.arange(features.shape[1]) * features_cfg.hop_length_ms / 1000
axes[1].imshow(features[0].T, origin="lower", aspect="auto", cmap="magma", extent=(0, frame_time[-1], 0, features.shape[2]))
axes[1].set(xlabel="time (s)", ylabel="mel bin", title="log-mel spectrogram (what the tower reads)")
for m in range(0, filters.shape[1], 8):
    axes[2].plot(bin_hz, filters[:, m], lw=0.8)
axes[2].set(xlabel="frequency (Hz)", ylabel="weight", title="every 8th of the 128 mel filters")
save(fig, "11_mel_spectrogram")

# %% [markdown]
# ## Fewer frames: subsampling
#
# One row every 10 ms is 100 a second, too many for attention over a 30-second clip. Two 3x3
# convolutions with stride 2 halve the spectrogram along time and frequency twice: one frame
# every 40 ms, 25 a second. Each of those frames becomes one soft token in the prompt: 30 s of
# audio (the most the processor takes) is 750 tokens.

# %%
frames = subsampled_mask(mask)  # (clips, frames after subsampling)
print(f"{mask.sum()} feature frames -> {frames.sum()} conformer frames -> {frames.sum()} soft tokens "
      f"({frames.sum() / (len(sound) / rate):.0f} per second)")

# %% [markdown]
# ## Chunked local attention
#
# Speech is local: a frame needs the sounds around it, not the whole minute. The conformer cuts
# its frames into blocks of 12 (`attention_chunk_size`) and gives each block a window of 24 keys
# (itself and the 12 frames before it); inside that window a mask lets each query frame see
# itself and the 11 frames before it, nothing after (`attention_context_left` 13,
# `attention_context_right` 0). The cost grows linearly with the length of the clip instead of
# quadratically. Scores get a relative-position term (Transformer-XL style) and a soft
# cap, and between the attention and the feed-forwards a *light convolution* (a GLU, then a
# causal depthwise conv over the last 5 frames) picks up the very local patterns.
#
# The figure lays both out as frames x frames for our clip: in gray the keys each block fetches,
# in black those each query may actually see.

# %%
audio_cfg = audio_config_from_dict(dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        subsampling_conv_channels=[128, 8], output_proj_dims=96))
n = int(frames.sum())
allowed = block_mask(frames, audio_cfg)[0]  # (blocks, chunk, context): query in a block, key in its window
chunk, past = audio_cfg.attention_chunk_size, audio_cfg.max_past_horizon
seen = np.zeros((n, n))  # the same, laid out as (query frame, key frame): 0.3 fetched, 1 seen
for block, query, key in np.ndindex(allowed.shape):
    q, k = block * chunk + query, block * chunk - past + key
    if q < n and 0 <= k < n:
        seen[q, k] = 1.0 if allowed[block, query, key] else 0.3
visible = (seen == 1).sum(1).max()
print(f"blocks of {chunk} queries, each fetching a window of {audio_cfg.context_size} keys; "
      f"a query sees at most {visible} frames ({visible * 40} ms) of the {n}")
fig, ax = plt.subplots(figsize=(5.5, 5.5))
ax.imshow(seen, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
ax.set(xlabel="key frame (40 ms each)", ylabel="query frame", title="audio attention: blocks of 12 (gray), what each frame sees (black)")
save(fig, "11_audio_attention_mask")

# %% [markdown]
# ## The tower (random weights) and the soft tokens
#
# The released E2B/E4B tower has 12 conformer layers of width 1024, about 305M parameters; this
# one has 2 layers of width 64. Its output frames are projected (`output_proj_dims`), then the
# embedder carries them into the text model's width. In the prompt, a clip becomes `<|audio>`,
# one `<|audio|>` placeholder per soft token, then `<audio|>`.

# %%
text_model = minigemma.load()  # the embedded text model: only its width and its tokenizer are used here
random_weights = RandomWeights(seed=0)
tower = AudioTower(
    audio_cfg,
    load_audio(random_weights, "model.audio_tower", audio_cfg),
    load_embedder(random_weights, "model.embed_audio", audio_cfg.output_proj_dims, text_model.config.text.hidden_size),
    features_cfg,
)
soft = audio_soft_tokens(tower, features, mask)  # (soft tokens, text hidden)
print(f"random tower: {sum(t.size for t in random_weights.tensors.values()):,} parameters; soft tokens {soft.shape}")
tok = text_model.tokenizer
prompt = expand_audio_markers("Transcribe <|audio|> please.", [len(soft)], (tok.named["boa_token"], tok.named["audio_token"], tok.named["eoa_token"]))
ids = tok.encode(prompt, add_special_tokens=True)
print(f"prompt: {len(ids)} tokens, {ids.count(tok.token_id('audio_token'))} of them audio placeholders")

# %% [markdown]
# ## Check against the reference
#
# The reference feature extractor on the same sound, and its audio tower and embedder
# (`Gemma4AudioModel`, `Gemma4MultimodalEmbedder`) loaded with the same random weights.

# %%
if have_reference():
    import torch
    from transformers import Gemma4AudioConfig, Gemma4AudioFeatureExtractor, Gemma4TextConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4AudioModel, Gemma4MultimodalEmbedder

    ref_features = Gemma4AudioFeatureExtractor()([sound], return_tensors="np")
    agree("feature mask", mask, ref_features["input_features_mask"], 0)
    agree("log-mel features", features, ref_features["input_features"], 1e-4)

    ref_cfg = Gemma4AudioConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                subsampling_conv_channels=[128, 8], output_proj_dims=96)
    ref_cfg._attn_implementation = "eager"
    ref_tower = Gemma4AudioModel(ref_cfg).eval()
    ref_embedder = Gemma4MultimodalEmbedder(ref_cfg, Gemma4TextConfig(hidden_size=text_model.config.text.hidden_size)).eval()
    for module, prefix in ((ref_tower, "model.audio_tower"), (ref_embedder, "model.embed_audio")):
        state = {name[len(prefix) + 1 :]: torch.from_numpy(t) for name, t in random_weights.tensors.items() if name.startswith(prefix + ".")}
        module.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = ref_tower(torch.from_numpy(features), torch.from_numpy(mask))
        agree("conformer frame mask", frames, out.attention_mask.numpy(), 0)
        agree("soft tokens", soft, to_numpy(ref_embedder(out.last_hidden_state[out.attention_mask])), 1e-4)
