# %% [markdown]
# # Lesson 10: vision: patches, 2-D RoPE, 3x3 pooling and soft-token budgets
#
# *A picture keeps its aspect ratio, is cut into 16-pixel patches that know their (x, y), encoded, and every 3x3 block of patches becomes one soft token in the prompt.*
#
# Reference: `Gemma4ImageProcessorPil` (transformers `models/gemma4/image_processing_pil_gemma4.py`), and in
# `models/gemma4/modeling_gemma4.py`: `Gemma4VisionPatchEmbedder`, `Gemma4VisionRotaryEmbedding`, `Gemma4VisionPooler`,
# `Gemma4VisionModel`, `Gemma4MultimodalEmbedder`, `create_masks_for_vision_model`.
# minigemma: `vision/image.py` (`preprocess`, `target_size`), `vision/tower.py` (`embed_patches`, `pool`, `encode_images`),
# `vision/encoder.py` (`axial_rope_tables`, `apply_axial_rope`), `text/multimodal.py` (placeholders, merge, image blocks).
#
# **No trained weights here.** The embedded model is a text model: minigemma has no trained
# vision tower. This lesson builds a small vision tower with *random* weights
# (`weights_tools.random_checkpoint.RandomWeights`), so its soft tokens mean nothing; but the
# preprocessing, the patches, their 2-D positions, the pooling and the prompt layout are real,
# shown on a real (generated) picture, and the tower computes exactly what the reference computes
# with the same weights.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, save, to_numpy

import numpy as np
from PIL import Image, ImageDraw

import minigemma
from minigemma.text.attention import attention_mask
from minigemma.vision.image import PATCH_SIZE, POOLING_KERNEL_SIZE, SUPPORTED_SOFT_TOKENS, preprocess, target_size
from minigemma.text.multimodal import expand_image_marks, image_blocks, merge_soft_tokens, placeholder_ids, same_block
from minigemma.text.model import embed_tokens
from minigemma.vision.tower import EMBEDDER_PREFIX, TOWER_PREFIX, encode_images, load_vision, pool
from minigemma.vision.config import vision_config_from_dict
from minigemma.vision.encoder import apply_axial_rope, axial_rope_tables
from weights_tools.random_checkpoint import RandomWeights

# %% [markdown]
# ## A picture
#
# Drawn here, so the lesson needs no file: a wide 800 x 450 landscape.

# %%
width, height = 800, 450
picture = Image.new("RGB", (width, height))
draw = ImageDraw.Draw(picture)
for y in range(height):  # sky: a vertical gradient
    draw.line([(0, y), (width, y)], fill=(70 + y // 4, 130 + y // 5, 220))
draw.ellipse([600, 50, 700, 150], fill=(255, 215, 90))  # sun
draw.polygon([(0, 330), (180, 170), (330, 300), (470, 140), (800, 340), (800, 450), (0, 450)], fill=(70, 110, 80))  # hills
draw.rectangle([0, 370, 800, 450], fill=(60, 140, 210))  # lake
draw.rectangle([120, 280, 220, 370], fill=(200, 80, 60))  # a house
draw.polygon([(110, 280), (170, 230), (230, 280)], fill=(120, 60, 50))
print(f"picture: {picture.size[0]} x {picture.size[1]} pixels")

# %% [markdown]
# ## Keep the aspect ratio, spend a budget
#
# Gemma 4 does not squash every image into one square. The user picks a *soft-token budget*
# (70, 140, 280, 560 or 1120 tokens in the prompt); the image is resized, keeping its shape, to
# the largest size whose patches fit that budget and whose sides are multiples of 48 pixels
# (3 x 3 patches of 16 pixels pool into one token). A quick look at a photo costs 70 tokens; a
# page of small print can get 1120.

# %%
print("budget   resized to    patch grid   patches   soft tokens")
for budget in SUPPORTED_SOFT_TOKENS:
    h, w = target_size(height, width, PATCH_SIZE, budget * POOLING_KERNEL_SIZE**2, POOLING_KERNEL_SIZE)
    rows, cols = h // PATCH_SIZE, w // PATCH_SIZE
    print(f"{budget:6d}   {w:4d} x {h:4d}   {rows:3d} x {cols:3d}   {rows * cols:7d}   {rows * cols // POOLING_KERNEL_SIZE**2:11d}")

budget = 280
inputs = preprocess([picture], max_soft_tokens=budget)  # what the Hugging Face processor emits
pixels, positions = inputs.pixel_values[0], inputs.image_position_ids[0]  # (max patches, 768), (max patches, 2)
real = np.all(positions != -1, axis=-1)
cols, rows = positions[real][-1] + 1  # patches come row by row: the last real one is bottom-right
n_tokens = inputs.num_soft_tokens_per_image[0]
print(f"\nat {budget}: {real.sum()} real patches of {len(positions)} slots (the rest is padding at (-1, -1)), "
      f"a {rows} x {cols} grid, {n_tokens} soft tokens")
print("first patch positions (x, y):", positions[:3].tolist(), "...", positions[real][-2:].tolist())

# %% [markdown]
# ## Pooling, seen on the pixels
#
# The encoder works on patches; at the end `pool` averages each 3 x 3 block of the grid into one
# soft token. Run on the raw patches instead of the encoder's outputs, the same function shows
# what a soft token covers: one 48 x 48-pixel square (`pool` also multiplies by
# `sqrt(width)`, undone here to get colours back).

# %%
patch_pixels = pixels[real]  # (rows * cols, 16 * 16 * 3): each patch flattened as (row, column, channel)
pooled = pool(patch_pixels, rows, cols, POOLING_KERNEL_SIZE) / np.float32(patch_pixels.shape[1] ** 0.5)
token_colours = pooled.reshape(rows // 3, cols // 3, PATCH_SIZE, PATCH_SIZE, 3).mean(axis=(2, 3))  # one colour per soft token
resized = patch_pixels.reshape(rows, cols, PATCH_SIZE, PATCH_SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(rows * PATCH_SIZE, cols * PATCH_SIZE, 3)

fig = plt.figure(figsize=(12, 9.5), layout="constrained")
grid = fig.add_gridspec(2, 2, height_ratios=[1.6, 1])
top, left, right = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
top.imshow(resized)
for x in range(0, cols * PATCH_SIZE + 1, PATCH_SIZE):  # thin lines: patches; thick: 3x3 pooling blocks
    top.axvline(x - 0.5, color="white", lw=0.3 if x % (3 * PATCH_SIZE) else 1.2)
for y in range(0, rows * PATCH_SIZE + 1, PATCH_SIZE):
    top.axhline(y - 0.5, color="white", lw=0.3 if y % (3 * PATCH_SIZE) else 1.2)
top.set_title(f"resized for {budget} tokens: {rows} x {cols} patches of 16 x 16 pixels, pooled in 3 x 3 blocks")
left.imshow(picture)
left.set_title(f"the picture, {width} x {height}")
right.imshow(token_colours, interpolation="nearest")
right.set_title(f"{n_tokens} soft tokens ({rows // 3} x {cols // 3}), the mean colour of each")
for ax in (top, left, right):
    ax.set_xticks([])
    ax.set_yticks([])
save(fig, "10_pooled_patch_grid")

# %% [markdown]
# ## Where a patch is: a learned table per axis, and 2-D RoPE
#
# A patch knows its place twice. The patch embedder adds a learned vector for its column `x` and
# one for its row `y` (two tables, not one per cell, so any grid shape works). And inside the
# encoder, *axial* RoPE rotates the first half of every query and key head by `x` and the second
# half by `y`, each half a 1-D RoPE (lesson 3). The score between two patches then depends on
# their horizontal and vertical offsets only, not on where in the image they sit:

# %%
head_dim, theta = 16, 100.0
q, k = np.random.default_rng(0).standard_normal((2, 1, 1, head_dim), dtype=np.float32)


def score(q_xy, k_xy):
    q_rot = apply_axial_rope(q, axial_rope_tables(np.array([q_xy]), head_dim, theta))
    k_rot = apply_axial_rope(k, axial_rope_tables(np.array([k_xy]), head_dim, theta))
    return float(np.sum(q_rot * k_rot))


print("key 2 right and 1 down of the query, query at (0,0), (10,4), (40,20):",
      [round(score((x, y), (x + 2, y + 1)), 4) for x, y in ((0, 0), (10, 4), (40, 20))])
print("key 1 right and 2 down instead:", round(score((0, 0), (1, 2)), 4))

# %% [markdown]
# ## The tower (random weights) and the soft tokens
#
# The encoder layers are the text decoder's layers without the causal mask: every patch sees
# every patch, with sandwich norms and q/k/v norms. Then pooling, and the *embedder* (an RMSNorm
# without scale and a projection) carries each pooled vector into the language model's width,
# 128 for the embedded model. The reference's default tower (`Gemma4VisionConfig`) has 16 layers
# of width 768; this one has 2 of width 64.

# %%
vision_config = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=head_dim, position_embedding_size=128)
cfg = vision_config_from_dict(vision_config)
text_model = minigemma.load()  # the embedded text model: only its width and its tokenizer are used here
text_hidden = text_model.config.text.hidden_size
random_weights = RandomWeights(seed=0)
tower = load_vision(random_weights, TOWER_PREFIX, EMBEDDER_PREFIX, cfg, text_hidden)
n_params = sum(t.size for t in random_weights.tensors.values())
soft = encode_images(inputs.pixel_values, inputs.image_position_ids, tower, cfg)  # (soft tokens, text_hidden)
print(f"random tower: {n_params:,} parameters; {real.sum()} patches in -> soft tokens {soft.shape}")

# %% [markdown]
# ## Into the prompt
#
# The prompt marks where the image goes with `<|image|>`; it is expanded to `<|image>`, one
# `<|image|>` placeholder per soft token, then `<image|>`. The placeholders are embedded as the
# pad token, then overwritten, in order, by the soft tokens. In the language model, the tokens of
# one image see each other *both ways* on sliding-window layers (an image is not read left to
# right), while text stays causal, and global layers stay causal for everyone
# (`use_bidirectional_attention: "vision"`). A short prompt with a tiny image makes the mask
# visible:

# %%
tok = text_model.tokenizer
marks = dict(image=tok.named["image_token"], boi=tok.named["boi_token"], eoi=tok.named["eoi_token"])
prompt = expand_image_marks("Describe <|image|> briefly.", [n_tokens], **marks)
ids = np.array(tok.encode(prompt, add_special_tokens=True))
image_id = tok.token_id("image_token")
embeds = embed_tokens(placeholder_ids(ids, [image_id], text_model.config.text.pad_token_id), text_model.weights, text_model.config.text)
merged = merge_soft_tokens(embeds, ids, image_id, soft, "image")  # (seq, hidden): what the decoder layers read
print(f"prompt: {len(ids)} tokens, {np.sum(ids == image_id)} of them image placeholders; merged embeddings {merged.shape}")

small = np.array(tok.encode(expand_image_marks("A <|image|> and text.", [6], **marks), add_special_tokens=True))
pos = np.arange(len(small))
both_ways = same_block(image_blocks(small, image_id), pos, pos)
masks = {"sliding layer (window 4)": attention_mask(pos, pos, 4, True, both_ways), "global layer": attention_mask(pos, pos, None, True)}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
labels = [tok.decode([t]) for t in small]
for ax, (title, mask) in zip(axes, masks.items()):
    ax.imshow(mask, cmap="Greys", interpolation="nearest")
    ax.set_xticks(range(len(small)), labels, rotation=80, fontsize=7)
    ax.set_yticks(range(len(small)), labels, fontsize=7)
    ax.set_title(title)
save(fig, "10_image_attention_mask")

# %% [markdown]
# ## Check against the reference
#
# The reference's image processor on the same picture; its vision tower and embedder
# (`Gemma4VisionModel`, `Gemma4MultimodalEmbedder`) loaded with the same random weights; and its
# mask builder, `create_masks_for_vision_model`, on the small prompt.

# %%
if have_reference():
    import torch
    from transformers import Gemma4TextConfig, Gemma4VisionConfig
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
    from transformers.models.gemma4.modeling_gemma4 import (
        Gemma4MultimodalEmbedder,
        Gemma4VisionModel,
        create_masks_for_vision_model,
        get_block_sequence_ids_for_mask,
    )

    ref_inputs = Gemma4ImageProcessorPil(max_soft_tokens=budget)(images=[picture], return_tensors="np")
    agree("patch positions", inputs.image_position_ids, ref_inputs["image_position_ids"], 0)
    agree("pixel values", inputs.pixel_values, ref_inputs["pixel_values"], 1e-6)
    agree("soft-token count", inputs.num_soft_tokens_per_image, ref_inputs["num_soft_tokens_per_image"], 0)

    ref_cfg = Gemma4VisionConfig(**vision_config)
    ref_cfg._attn_implementation = "eager"
    ref_tower = Gemma4VisionModel(ref_cfg).eval()
    ref_embedder = Gemma4MultimodalEmbedder(ref_cfg, Gemma4TextConfig(hidden_size=text_hidden)).eval()
    for module, prefix in ((ref_tower, TOWER_PREFIX), (ref_embedder, EMBEDDER_PREFIX)):
        state = {name[len(prefix) + 1 :]: torch.from_numpy(t) for name, t in random_weights.tensors.items() if name.startswith(prefix + ".")}
        module.load_state_dict(state, strict=True)
    with torch.no_grad():
        hidden = ref_tower(torch.from_numpy(inputs.pixel_values), torch.from_numpy(inputs.image_position_ids)).last_hidden_state
        agree("soft tokens", soft, to_numpy(ref_embedder(hidden)), 1e-4)

    text_cfg = Gemma4TextConfig(hidden_size=8, sliding_window=4, use_bidirectional_attention="vision")
    text_cfg._attn_implementation = "eager"
    ref_masks = create_masks_for_vision_model(
        config=text_cfg, inputs_embeds=torch.zeros(1, len(small), 8), attention_mask=None, past_key_values=None,
        position_ids=torch.from_numpy(pos)[None],
        block_sequence_ids=get_block_sequence_ids_for_mask(torch.from_numpy((small == image_id).astype(np.int64))[None], "cpu"),
    )
    for (title, ours), kind in zip(masks.items(), ("sliding_attention", "full_attention")):
        theirs = ref_masks[kind][0, 0].numpy()
        agree(f"{title} mask", ours, theirs if theirs.dtype == bool else theirs == 0, 0)
