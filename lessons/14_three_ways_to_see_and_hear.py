# %% [markdown]
# # Lesson 14: three ways to see and hear
#
# *Gemma 4's edge models see through a SigLIP-style tower and hear through a conformer; the 12B "unified" model has neither: raw 48-pixel patches and raw 40 ms waveform frames go straight into the decoder. Same tokens, very different costs.*
#
# Reference: `Gemma4VisionModel`, `Gemma4AudioModel`, `Gemma4MultimodalEmbedder` (transformers
# `models/gemma4/modeling_gemma4.py`), and `Gemma4UnifiedVisionEmbedder`, `Gemma4UnifiedMultimodalEmbedder`,
# `Gemma4UnifiedForConditionalGeneration` (`models/gemma4_unified/modeling_gemma4_unified.py`), with
# `Gemma4UnifiedAudioFeatureExtractor` (`feature_extraction_gemma4_unified.py`); the image processor's
# patch merge is its `image_processing_gemma4_unified.py`.
# minigemma: `vision/image.py`, `vision/tower.py`, `audio/features.py`, `audio/tower.py` (lessons 10 and 11),
# `unified/image.py` (`preprocess`), `unified/vision.py` (`embed_patches`, `load_unified_vision`),
# `unified/audio.py` (`extract_frames`, `UnifiedAudio`), `unified/config.py`.
#
# **No trained weights here.** minigemma has no trained vision or audio weights of either kind:
# the small embedders below have *random* weights (`weights_tools.random_checkpoint.RandomWeights`),
# so their soft tokens mean nothing. The pictures, the sound, the patch and frame cuts, the token
# counts and the parameter counts (of the released configurations) are real, and the embedders
# compute exactly what the reference computes with the same weights.
#
# The three ways: (1) an encoder tower (SigLIP for images, a USM-style conformer for audio) turns
# many small pieces into fewer, richer soft tokens; (2) the unified model skips the tower, each
# soft token a raw piece, normalised and projected; (3) video, which is not a third encoder at all
# but a handful of still frames read either way, each stamped with its time.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, save, to_numpy

import numpy as np
from PIL import Image, ImageDraw

from minigemma.audio.config import audio_config_from_dict
from minigemma.audio.features import FeatureConfig, extract_features
from minigemma.audio.subsample import subsampled_mask
from minigemma.audio.tower import load_audio
from minigemma.unified.audio import UnifiedAudio, extract_frames
from minigemma.unified.config import audio_config_from_dict as unified_audio_config
from minigemma.unified.config import vision_config_from_dict as unified_vision_config
from minigemma.unified.image import preprocess as unified_preprocess
from minigemma.unified.vision import embed_patches, load_vision_embedder
from minigemma.text.multimodal import load_embedder
from minigemma.vision.config import vision_config_from_dict
from minigemma.vision.image import preprocess
from minigemma.vision.tower import EMBEDDER_PREFIX, TOWER_PREFIX, load_vision
from minigemma.vision.video import mmss, sample_indices, timestamps
from weights_tools.random_checkpoint import RandomWeights, _ShapeRecorder

TEXT_WIDTH_E2B, TEXT_WIDTH_12B = 1536, 3840  # the text models' widths the embedders project into

# %% [markdown]
# ## One picture, two cuts
#
# A drawn picture (no file needed). At a budget of 280 soft tokens both models resize it the same
# way (lesson 10). Gemma 4's edge models cut it into 16-pixel patches, 9 per soft token, and let
# 16 attention layers look at all of them before averaging each 3 x 3 block. The unified model
# merges each 3 x 3 block up front (`patches_merge`): one 48 x 48-pixel patch, 6912 raw numbers,
# *is* one soft token.

# %%
width, height = 640, 360
picture = Image.new("RGB", (width, height))
draw = ImageDraw.Draw(picture)
for y in range(height):
    draw.line([(0, y), (width, y)], fill=(60 + y // 3, 120 + y // 4, 215))
draw.ellipse([470, 40, 560, 130], fill=(255, 210, 80))
draw.polygon([(0, 270), (150, 140), (270, 240), (380, 120), (640, 280), (640, 360), (0, 360)], fill=(70, 115, 80))
draw.rectangle([90, 220, 170, 290], fill=(200, 80, 60))

budget = 280
edge = preprocess([picture], budget)  # 16-pixel patches for the tower
unified = unified_preprocess([picture], budget)  # merged 48-pixel patches, one per soft token
real_edge = np.all(edge.image_position_ids[0] != -1, axis=-1)
real_unified = np.all(unified.image_position_ids[0] != -1, axis=-1)
print(f"edge models: {real_edge.sum()} patches of {edge.pixel_values.shape[-1]} values -> "
      f"{edge.num_soft_tokens_per_image[0]} soft tokens after the tower")
print(f"unified:     {real_unified.sum()} merged patches of {unified.pixel_values.shape[-1]} values -> "
      f"{unified.num_soft_tokens_per_image[0]} soft tokens, no tower")
cols, rows = unified.image_position_ids[0][real_unified][-1] + 1  # merged patches come row by row

# %% [markdown]
# ## The unified vision embedder
#
# Without a tower, each merged patch goes through LayerNorm -> Dense -> LayerNorm, gets its place
# from two learned tables (one for its column, one for its row: factorised, so any grid works),
# then LayerNorm -> RMSNorm -> Linear into the decoder's width. A small one with random weights:

# %%
vision_cfg = unified_vision_config(dict(mm_embed_dim=64, output_proj_dims=64, mm_posemb_size=64))
random_weights = RandomWeights(seed=0)
text_width = 128
embedder = load_vision_embedder(random_weights, vision_cfg, text_width)
patches, positions = unified.pixel_values[0][real_unified], unified.image_position_ids[0][real_unified]
steps = {}
soft = embed_patches(patches, positions, embedder, vision_cfg, tap=lambda name, value: steps.setdefault(name, value))
print(f"merged patches {patches.shape} -> patch embedding {steps['patch_embed'].shape} -> soft tokens {soft.shape}")

# %% [markdown]
# ## One sound, two cuts
#
# Three seconds of a chirp and a click train at 16 kHz. The conformer's way: a log-mel row every
# 10 ms, two stride-2 convolutions (a frame every 40 ms), then attention and convolutions over the
# frames (lesson 11). The unified way: cut the waveform itself every 640 samples (40 ms), each
# frame a soft token through RMSNorm -> Linear. Both make 25 tokens a second.

# %%
rate = 16_000
t = np.arange(3 * rate) / rate
sound = (0.4 * np.sin(2 * np.pi * (300 + 400 * t) * t) + 0.3 * (np.sin(2 * np.pi * 4 * t) > 0.95)).astype(np.float32)
features, feature_mask = extract_features([sound], FeatureConfig())
conformer_tokens = int(subsampled_mask(feature_mask).sum())
frames, frame_mask = extract_frames([sound], 640)
print(f"conformer: {features.shape[1]} mel rows -> {conformer_tokens} soft tokens after subsampling")
print(f"unified:   {frames.shape[1]} raw frames of {frames.shape[2]} samples -> {int(frame_mask.sum())} soft tokens")
audio_cfg = unified_audio_config(dict(audio_embed_dim=640))
ears = UnifiedAudio(audio_cfg, load_embedder(random_weights, "model.embed_audio", 640, text_width))
heard = ears.encode(frames, frame_mask)
print(f"unified audio soft tokens: {heard.shape}")

# %% [markdown]
# ## What each costs: parameters and work
#
# Parameters of the released configurations, counted by minigemma's own loaders on a shape
# recorder (no weights made): the edge models' vision tower (`Gemma4VisionConfig`'s defaults, 16
# layers of width 768) and audio conformer (`Gemma4AudioConfig`'s, 12 layers of width 1024), each
# with its embedder into E2B's text width; the 12B's two embedders into its width 3840.

# %%
def parameters(load) -> int:
    shapes = _ShapeRecorder()
    load(shapes)
    return sum(int(np.prod(s)) for s in shapes.shapes.values())


released_vision, released_audio = vision_config_from_dict({}), audio_config_from_dict({})
counts = {
    "SigLIP tower + embedder": parameters(lambda c: load_vision(c, TOWER_PREFIX, EMBEDDER_PREFIX, released_vision, TEXT_WIDTH_E2B)),
    "conformer + embedder": parameters(lambda c: (load_audio(c, "model.audio_tower", released_audio),
                                                  load_embedder(c, "model.embed_audio", released_audio.output_proj_dims, TEXT_WIDTH_E2B))),
    "unified vision embedder": parameters(lambda c: load_vision_embedder(c, unified_vision_config({}), TEXT_WIDTH_12B)),
    "unified audio embedder": parameters(lambda c: load_embedder(c, "model.embed_audio", 640, TEXT_WIDTH_12B)),
}
for name, n in counts.items():
    print(f"{name:26s} {n / 1e6:8.1f} M parameters")

# The tower's work per image: every patch through 16 layers, attention over all patches; the
# unified embedder: one Dense per merged patch. Multiply-adds, roughly:
n_patches, d, layers = int(real_edge.sum()), released_vision.hidden_size, released_vision.num_hidden_layers
tower_macs = layers * (n_patches * (4 * d * d + 3 * d * released_vision.intermediate_size) + 2 * n_patches**2 * d)
unified_macs = int(real_unified.sum()) * 6912 * 3840
print(f"work per {budget}-token image: tower {tower_macs / 1e9:.1f} G multiply-adds, unified embedder {unified_macs / 1e9:.1f} G")

# %% [markdown]
# ## Video: frames, either way
#
# A video is 32 frames spread evenly over it, each read as a picture at 70 soft tokens and
# preceded in the prompt by its time, `mm:ss`. A 10-second clip at 30 fps:

# %%
picked = sample_indices(300, 32)
stamps = [mmss(s) for s in timestamps(picked, 30.0)]
print(f"frames {picked[:5].tolist()} ... {picked[-2:].tolist()}; times {stamps[:4]} ... {stamps[-1]}")
print(f"prompt: {32 * 70} soft tokens at most (32 frames x 70), as many for either kind of model")

# %%
fig = plt.figure(figsize=(13, 8.5), layout="constrained")
grid = fig.add_gridspec(2, 3)
ax = fig.add_subplot(grid[0, 0])
ax.imshow(picture)
ax.set_title(f"the picture, {width} x {height}")
ax = fig.add_subplot(grid[0, 1])
side = 48
merged_image = patches.reshape(rows, cols, side, side, 3).transpose(0, 2, 1, 3, 4).reshape(rows * side, cols * side, 3)
ax.imshow(merged_image)
for x in range(0, cols * side + 1, side):
    ax.axvline(x - 0.5, color="white", lw=0.6)
for y in range(0, rows * side + 1, side):
    ax.axhline(y - 0.5, color="white", lw=0.6)
ax.set_title(f"unified: {rows} x {cols} merged 48-px patches = {len(patches)} tokens")
ax = fig.add_subplot(grid[0, 2])
ax.imshow(np.linalg.norm(soft, axis=-1).reshape(rows, cols), cmap="viridis")
ax.set_title("soft-token norms (random embedder)")
for a in fig.axes:
    a.set_xticks([])
    a.set_yticks([])
ax = fig.add_subplot(grid[1, 0:2])
ax.imshow(features[0].T, origin="lower", aspect="auto", extent=[0, 3, 0, features.shape[2]], cmap="magma")
for k in range(0, 76, 5):
    ax.axvline(k * 0.04, color="white", lw=0.4)
ax.set_xlabel("seconds (white lines: every 5th 40 ms frame, one soft token each way)")
ax.set_ylabel("mel bin")
ax.set_title(f"the conformer reads a log-mel spectrogram ({conformer_tokens} tokens); the unified model the raw frames ({frames.shape[1]})")
ax = fig.add_subplot(grid[1, 2])
names = list(counts)
ax.barh(names, [counts[n] / 1e6 for n in names], color=["tab:blue", "tab:orange", "tab:green", "tab:red"])
ax.set_xscale("log")
ax.set_xlabel("parameters (millions, log scale)")
ax.set_title("what each way costs")
save(fig, "14_three_ways")

# %% [markdown]
# ## Check against the reference
#
# The reference's unified embedders (`Gemma4UnifiedVisionEmbedder`, `Gemma4UnifiedMultimodalEmbedder`)
# loaded with the same random weights; its `patches_merge` on the 16-pixel patches of the picture;
# its `Gemma4UnifiedAudioFeatureExtractor` on the sound; and the released towers' parameter counts
# from the reference modules themselves (built on the meta device: no memory).

# %%
if have_reference():
    import torch
    from transformers import (
        Gemma4AudioConfig,
        Gemma4TextConfig,
        Gemma4UnifiedAudioConfig,
        Gemma4UnifiedTextConfig,
        Gemma4UnifiedVisionConfig,
        Gemma4VisionConfig,
    )
    from transformers.models.gemma4.modeling_gemma4 import Gemma4AudioModel, Gemma4MultimodalEmbedder, Gemma4VisionModel
    from transformers.models.gemma4_unified.feature_extraction_gemma4_unified import Gemma4UnifiedAudioFeatureExtractor
    from transformers.models.gemma4_unified.modeling_gemma4_unified import (
        Gemma4UnifiedMultimodalEmbedder,
        Gemma4UnifiedVisionEmbedder,
    )

    ref_vision = Gemma4UnifiedVisionEmbedder(Gemma4UnifiedVisionConfig(mm_embed_dim=64, output_proj_dims=64, mm_posemb_size=64),
                                             Gemma4UnifiedTextConfig(hidden_size=text_width)).eval()
    state = {name.removeprefix("model.embed_vision."): torch.from_numpy(t) for name, t in random_weights.tensors.items()
             if name.startswith("model.embed_vision.")}
    ref_vision.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = ref_vision(torch.from_numpy(unified.pixel_values), torch.from_numpy(unified.image_position_ids))
    agree("unified vision soft tokens", soft, to_numpy(out.pooler_output[0][real_unified]), 1e-4)

    ref_audio = Gemma4UnifiedMultimodalEmbedder(Gemma4UnifiedAudioConfig(), Gemma4UnifiedTextConfig(hidden_size=text_width)).eval()
    ref_audio.load_state_dict({"embedding_projection.weight": torch.from_numpy(random_weights.tensors["model.embed_audio.embedding_projection.weight"])})
    reference_frames = Gemma4UnifiedAudioFeatureExtractor()([sound], return_tensors="np")
    agree("raw frames", frames, reference_frames["input_features"], 0)
    agree("frame mask", frame_mask, reference_frames["input_features_mask"], 0)
    with torch.no_grad():
        agree("unified audio soft tokens", heard, to_numpy(ref_audio(torch.from_numpy(frames))[0]), 1e-4)

    import importlib.util  # the processor module imports torchvision (absent beside torch 2.13.0) for its resize only
    import types

    spec = importlib.util.find_spec("transformers.models.gemma4_unified.image_processing_gemma4_unified")
    source = open(spec.origin).read().replace("from torchvision.transforms.v2 import functional as tvF", "tvF = None")
    helpers = types.ModuleType("unified_image_functions")
    helpers.__package__ = "transformers.models.gemma4_unified"
    exec(compile(source[: source.index("@auto_docstring")], spec.origin, "exec"), helpers.__dict__)
    small = edge.pixel_values[0][real_edge]  # the same resize: 16-pixel patches of the same pixels
    small_positions = edge.image_position_ids[0][real_edge]
    merged, merged_positions = helpers.patches_merge(torch.from_numpy(small)[None], torch.from_numpy(small_positions)[None], len(patches))
    # 1e-7: the two processors rescale by 1/255 in different precision (the last bit of some values)
    agree("merged patches (from the 16-px patches)", patches, merged[0].numpy(), 1e-7)
    agree("merged positions", positions, merged_positions[0].numpy(), 0)

    with torch.device("meta"):
        ref_counts = {
            "SigLIP tower + embedder": [Gemma4VisionModel(Gemma4VisionConfig()),
                                        Gemma4MultimodalEmbedder(Gemma4VisionConfig(), Gemma4TextConfig(hidden_size=TEXT_WIDTH_E2B))],
            "conformer + embedder": [Gemma4AudioModel(Gemma4AudioConfig()),
                                     Gemma4MultimodalEmbedder(Gemma4AudioConfig(), Gemma4TextConfig(hidden_size=TEXT_WIDTH_E2B))],
            "unified vision embedder": [Gemma4UnifiedVisionEmbedder(Gemma4UnifiedVisionConfig(), Gemma4UnifiedTextConfig(hidden_size=TEXT_WIDTH_12B))],
            "unified audio embedder": [Gemma4UnifiedMultimodalEmbedder(Gemma4UnifiedAudioConfig(), Gemma4UnifiedTextConfig(hidden_size=TEXT_WIDTH_12B))],
        }
    for name, modules in ref_counts.items():
        persistent = sum(b.numel() for m in modules for n, b in m.named_buffers() if n.rsplit(".", 1)[-1] not in m.get_submodule(n.rpartition(".")[0])._non_persistent_buffers_set)
        agree(f"{name} parameters", counts[name], sum(p.numel() for m in modules for p in m.parameters()) + persistent, 0)
