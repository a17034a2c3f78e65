# %% [markdown]
# # Lesson 3: RoPE, and Gemma 4's dual RoPE
#
# *Positions as rotations: sliding layers turn every pair of dimensions, global layers turn only a quarter of theirs and leave the rest to pure content.*
#
# Reference: `Gemma4TextRotaryEmbedding` and `apply_rotary_pos_emb` (transformers `models/gemma4/modeling_gemma4.py`;
# the proportional frequencies come from `modeling_rope_utils._compute_proportional_rope_parameters`).
# minigemma: `text/rope.py` (`inverse_frequencies`, `rope_tables`, `apply_rope`), `text/model.py` (`rope_for_positions`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save, to_numpy
import numpy as np

import minigemma
from minigemma.text.config import RopeParams
from minigemma.text.layer_plan import GLOBAL, SLIDING
from minigemma.text.rope import apply_rope, inverse_frequencies, rope_tables
from minigemma.text.model import rope_for_positions

model = minigemma.load()
cfg = model.config.text
head_dim = {s.layer_type: s.head_dim for s in cfg.layers}  # sliding and global heads differ in size
for layer_type in (SLIDING, GLOBAL):
    print(f"{layer_type:18} head_dim {head_dim[layer_type]:3d}  {cfg.rope[layer_type]}")

# %% [markdown]
# ## Position as a rotation
#
# Attention compares a query with keys by a dot product, which by itself knows nothing of order.
# RoPE writes the position *into* queries and keys: it splits each head into pairs of dimensions
# `(i, i + head_dim/2)` and turns pair `i` by the angle `position * f_i`, with frequencies
# `f_i = theta ** (-2i / head_dim)` running from one radian per token down to very slow turns.
# Rotating a query by `a` and a key by `b` changes their dot product by the angle `a - b` only:
# the score depends on how far apart two tokens are, not on where they stand.
#
# Below, one fixed query and key are placed at many positions, always 5 tokens apart: the score
# never changes. Placed at other distances, it does.

# %%
inv_freq = inverse_frequencies(cfg.rope[SLIDING], head_dim[SLIDING])  # (head_dim / 2,)
rng = np.random.default_rng(0)
q, k = rng.standard_normal((2, 1, 1, head_dim[SLIDING]), dtype=np.float32)  # (seq=1, heads=1, head_dim)


def score_at(q_pos, k_pos):
    q_rot = apply_rope(q, *rope_tables(np.array([q_pos]), inv_freq))
    k_rot = apply_rope(k, *rope_tables(np.array([k_pos]), inv_freq))
    return float(np.sum(q_rot * k_rot))


print("query at p, key at p - 5:  ", [round(score_at(p, p - 5), 3) for p in (5, 50, 500, 3000)])
print("query at 50, key at 50 - d:", [round(score_at(50, 50 - d), 3) for d in (0, 1, 5, 20)])

# %% [markdown]
# ## Two kinds of layer, two RoPEs
#
# Gemma 4 interleaves *sliding-window* layers, which see only the last few hundred tokens
# (lesson 4), with *global* layers that see the whole context, up to 128K or 256K tokens. The two
# kinds want different things from positions:
#
# * **sliding layers** (`default` RoPE, theta 10,000): every pair turns. They only ever compare
#   tokens a window apart, where precise relative position is exactly what helps.
# * **global layers** (`proportional` RoPE, theta 1,000,000, `partial_rotary_factor` 0.25): only
#   the first quarter of the pairs turn; the other three quarters get frequency 0 and never move.
#   The exponent keeps the full `head_dim` as its denominator, so the pairs that still turn are
#   the *fast* ones; the slow ones are switched off. Those would take thousands to millions of
#   tokens for one turn, far more than training texts show, so at long range they add angles the
#   model never learned to read. Without them, most of each global head matches purely by
#   content, at any distance: what lets the global layers stretch to very long contexts.
#
# The wavelengths (tokens per full turn, `2 pi / f`) make this concrete, for this model's heads
# and for the real Gemma 4 sizes (256-wide sliding heads, 512-wide global heads):

# %%
def wavelengths(params: RopeParams, dim: int) -> str:
    f = inverse_frequencies(params, dim)
    turning = f[f > 0]
    return f"{len(turning):3d} of {len(f):3d} pairs turn, wavelengths {2 * np.pi / turning.max():.0f} to {2 * np.pi / turning.min():,.0f} tokens"


for layer_type in (SLIDING, GLOBAL):
    print(f"this model, {layer_type:18}: {wavelengths(cfg.rope[layer_type], head_dim[layer_type])}")
print(f"Gemma 4,    {SLIDING:18}: {wavelengths(RopeParams('default', 10_000.0), 256)}")
print(f"Gemma 4,    {GLOBAL:18}: {wavelengths(RopeParams('proportional', 1_000_000.0, 0.25), 512)}")

# %% [markdown]
# The figure shows both RoPE types of the embedded model: the frequency of every pair (the pairs
# of the global heads past the first quarter sit at 0, drawn at the bottom), and `cos(position *
# f_i)` for every position and pair: the sliding table is striped all the way across, the global
# table only in its first quarter.

# %%
positions = np.arange(256)
tables = rope_for_positions(positions, cfg)  # {layer type: (cos, sin)}, each (seq, head_dim)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [1.1, 1, 1]})
for layer_type, color in ((SLIDING, "C0"), (GLOBAL, "C3")):
    f = inverse_frequencies(cfg.rope[layer_type], head_dim[layer_type])
    floor = 1e-4  # where the frequency-0 pairs are drawn on the log axis
    axes[0].step(np.arange(len(f)), np.maximum(f, floor), where="mid", color=color, label=f"{layer_type} ({cfg.rope[layer_type].rope_type})")
axes[0].set(yscale="log", xlabel="dimension pair i", ylabel="frequency f_i (radians / token)", title="RoPE frequency bands")
axes[0].axhline(1e-4, color="gray", lw=0.5)
axes[0].text(0.3, 1.3e-4, "frequency 0: not rotated", fontsize=8, color="gray")
axes[0].legend(fontsize=8)
for ax, layer_type in zip(axes[1:], (SLIDING, GLOBAL)):
    cos, _ = tables[layer_type]
    half = head_dim[layer_type] // 2
    image = ax.imshow(cos[:, :half].T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    ax.set(xlabel="position", ylabel="dimension pair i", title=f"cos(position * f_i), {layer_type}")
fig.colorbar(image, ax=axes[2], fraction=0.05)
save(fig, "03_rope_frequency_bands")

# %% [markdown]
# ## Check against the reference
#
# The reference's `Gemma4TextRotaryEmbedding` holds one table of frequencies per layer type and
# returns (cos, sin) for given positions; `apply_rotary_pos_emb` rotates. We compare both types,
# over positions far past the training length, and one rotation of a real query layout.

# %%
if have_reference():
    import torch
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextRotaryEmbedding, apply_rotary_pos_emb

    ref = reference_text_model()
    assert isinstance(ref.model.rotary_emb, Gemma4TextRotaryEmbedding)
    far = np.arange(0, 4000, 7)
    ours = rope_for_positions(far, cfg)
    for layer_type in (SLIDING, GLOBAL):
        with torch.no_grad():
            cos, sin = ref.model.rotary_emb(torch.zeros(1), torch.from_numpy(far)[None], layer_type)
        agree(f"{layer_type} cos", ours[layer_type][0], to_numpy(cos[0]), 1e-5)
        agree(f"{layer_type} sin", ours[layer_type][1], to_numpy(sin[0]), 1e-5)
        x = rng.standard_normal((len(far), cfg.num_attention_heads, head_dim[layer_type]), dtype=np.float32)
        theirs = apply_rotary_pos_emb(torch.from_numpy(x), cos, sin, unsqueeze_dim=2)[0]
        agree(f"{layer_type} rotation", apply_rope(x, *ours[layer_type]), to_numpy(theirs), 1e-5)
