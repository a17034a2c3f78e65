# %% [markdown]
# # Lesson 2: RMSNorm
#
# *Divide each vector by its root-mean-square, then scale it: the normalisation Gemma 4 applies around every block, on queries, keys and values, in the router and at the end.*
#
# Reference: `Gemma4RMSNorm` (transformers `models/gemma4/modeling_gemma4.py`), with and without a learned scale.
# minigemma: `text/norm.py` (`rms_norm`, `norm_weight`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save, to_numpy, watch
import contextlib

import numpy as np

import minigemma
import minigemma.text.attention
import minigemma.text.layer
import minigemma.text.moe
import minigemma.text.ple
import minigemma.text.model
from minigemma.text.norm import rms_norm

model = minigemma.load()
cfg = model.config.text
eps = cfg.rms_norm_eps

# %% [markdown]
# ## What it does
#
# `rms_norm(x, w) = x / sqrt(mean(x**2) + eps) * w`, over the last axis. LayerNorm would also
# subtract the mean and add a bias; RMSNorm skips both. It is cheaper, and what matters for
# stable training turns out to be the *scale*: a vector's direction carries its meaning, its
# length is what grows out of control in a deep residual stream.
#
# The residual stream of a transformer is a running sum: every layer adds its output to it. Its
# size therefore drifts with depth, token by token. Below: the RMS of each token's vector as it
# enters each layer of the embedded model, on one sentence of documentation.

# %%
text = "Return a new list containing all items from the iterable in ascending order."
ids = np.array(model.tokenizer.encode(text, add_special_tokens=True))
acts = model.trace(ids)
entering = [acts["embed"]] + [acts[f"layers.{i}.out"] for i in range(cfg.num_hidden_layers - 1)]
rms = lambda x: np.sqrt(np.mean(x * x, axis=-1))  # noqa: E731
table = np.stack([rms(h) for h in entering])  # (layers, seq)
print("RMS entering each layer (rows), for the first 8 tokens (columns):")
print(table[:, :8])

# %% [markdown]
# `rms_norm` without a scale brings every token back to RMS 1, whatever its size; the learned
# scale `w` (one number per dimension, trained) then sets the size and emphasis the next block
# wants. Gemma 4 stores that scale as is; Gemma 1 to 3 store the scale minus one (zeros mean
# "leave it") and multiply by `1 + w`: a classic porting bug. minigemma folds the offset in once, at load time (`norm_weight`), so
# `rms_norm` is the same function for both.

# %%
h = entering[3]  # the residual stream entering layer 3
w = model.weights.layers[3].input_norm  # input_layernorm of layer 3, trained
normed = rms_norm(h, None, eps)
print("RMS before:", rms(h)[:6], "\nRMS after, no scale:", rms(normed)[:6])
print(f"the trained scale of layer 3's input norm: mean {w.mean():.3f}, min {w.min():.3f}, max {w.max():.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for t in range(len(ids)):
    axes[0].plot(table[:, t], color="C0", alpha=0.4)
axes[0].set(xlabel="layer", ylabel="RMS of the token's vector", title="Residual stream entering each layer")
axes[0].set_xticks(range(cfg.num_hidden_layers))
axes[1].hist(w, bins=30)
axes[1].axvline(1.0, color="gray", ls=":")
axes[1].set(xlabel="scale value", ylabel="dimensions", title="Trained scale of layer 3's input RMSNorm")
save(fig, "02_rmsnorm")

# %% [markdown]
# ## How often Gemma 4 normalises
#
# Gemma norms the *input and the output* of every block before adding it to the residual
# stream ("sandwich" norms: four per layer), and also each query and key head (with a scale),
# each value head (without one), the router's input, the experts' input and outputs, the
# Per-Layer-Embedding signals, and the final hidden state. Since queries and keys are normalised,
# attention needs no `1/sqrt(head_dim)` scaling (lesson 4). We count the calls of `rms_norm` in
# one forward pass by watching it in every feature file that uses it.

# %%
users = [minigemma.text.attention, minigemma.text.layer, minigemma.text.moe, minigemma.text.ple, minigemma.text.model]
with contextlib.ExitStack() as stack:
    calls = {module: stack.enter_context(watch(module, "rms_norm")) for module in users}
    model.trace(ids)
for module, seen in calls.items():
    with_scale = sum(args[1] is not None for args, _ in seen)
    print(f"  {module.__name__:22} {len(seen):3d} calls ({with_scale} with a learned scale)")
total = sum(len(seen) for seen in calls.values())
print(f"  {'total':22} {total:3d} RMSNorms in one forward pass of {cfg.num_hidden_layers} layers")

# %% [markdown]
# ## Check against the reference
#
# The reference's own modules, holding the trained weights: layer 3's `input_layernorm` (with a
# scale) and its value norm `v_norm` (without one), applied to the same residual stream.

# %%
if have_reference():
    import torch
    from transformers.models.gemma4.modeling_gemma4 import Gemma4RMSNorm

    ref = reference_text_model()
    layer = ref.model.layers[3]
    assert isinstance(layer.input_layernorm, Gemma4RMSNorm) and not layer.self_attn.v_norm.with_scale
    with torch.no_grad():
        agree("RMSNorm with scale", rms_norm(h, w, eps), to_numpy(layer.input_layernorm(torch.from_numpy(h))), 1e-5)
        agree("RMSNorm without scale", normed, to_numpy(layer.self_attn.v_norm(torch.from_numpy(h))), 1e-5)
