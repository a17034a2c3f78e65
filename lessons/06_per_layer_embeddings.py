# %% [markdown]
# # Lesson 6: Per-Layer Embeddings (PLE)
#
# *Every layer receives a small vector of its own for every token, looked up in a huge table that can stay on disk, mixed with a projection of the context, gated in by the layer.*
#
# Reference: `Gemma4TextModel.get_per_layer_inputs` and `Gemma4TextModel.project_per_layer_inputs`, and the tail of
# `Gemma4TextDecoderLayer` (transformers `models/gemma4/modeling_gemma4.py`).
# minigemma: `text/ple.py` (`token_identity`, `per_layer_inputs`, `apply_per_layer_input`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, heldout_text, plt, reference_text_model, save, to_numpy
from unittest import mock

import numpy as np

import minigemma
import minigemma.text.layer
import minigemma.text.model
from minigemma.cli.info import memory_bytes
from minigemma.text.ple import per_layer_inputs, token_identity
from weights_tools.tiny_eval import evaluate

model = minigemma.load()
cfg = model.config.text
n_layers, ple_dim = cfg.num_hidden_layers, cfg.hidden_size_per_layer_input

# %% [markdown]
# ## Why: parameters that need not sit in fast memory
#
# The small Gemma 4 models are called E2B and E4B: "effective" 2 and 4 billion parameters. They
# hold several billion more, and most of the difference is one table: for each token of the
# vocabulary and each layer, a 256-dimensional vector. Per token, a forward pass needs just one
# row of it (all the layers' vectors for that token), so the table does not have to live in
# accelerator memory at all: it can stay in flash or on disk, and the few rows a prompt needs are
# read as it arrives. Those parameters add knowledge per token at almost no compute and no
# fast-memory cost. minigemma keeps the table memory-mapped from the checkpoint file, never read
# whole.

# %%
table = model.weights.ple.table
resident, mapped = memory_bytes(model.weights)
print(f"PLE table: {table.shape[0]} tokens x ({n_layers} layers x {ple_dim}) = {table.size:,} values, stored {model.weights.ple.table_dtype}")
print(f"memory: {resident / 2**20:.1f} MiB in RAM, {mapped / 2**20:.1f} MiB memory-mapped (the table)")
print(f"Gemma 4 E2B: 262,144 x 35 x 256 = {262_144 * 35 * 256 / 1e9:.2f}B parameters in its table")

# %% [markdown]
# ## What each layer receives
#
# Two parts, summed and scaled by `1/sqrt(2)`:
#
# * `token_identity`: the token's row of the table, scaled by `sqrt(ple_dim)`, cut into one
#   64-dim slice per layer. It depends on the token alone;
# * the *context* part, in `per_layer_inputs`: the scaled input embedding projected to
#   `layers x ple_dim`, times `1/sqrt(hidden)`, RMS-normed per layer.
#
# Inside layer i, after attention and the MLP, `apply_per_layer_input` gates slice i by the
# hidden state and adds it back: `h + norm(project(gelu(gate(h)) * ple_i))`, a low-rank,
# token-specific nudge to the residual stream.

# %%
text = "Return a new sorted list from the items in iterable."
ids = np.array(model.tokenizer.encode(text, add_special_tokens=True))
embeds, ple_ids = model.embed(ids)  # (seq, hidden) scaled embeddings; ids to read the table with
identity = token_identity(ple_ids, model.weights.ple, n_layers, ple_dim)  # (seq, layers, ple_dim)
inputs = per_layer_inputs(identity, embeds, model.weights.ple, n_layers, ple_dim, cfg.rms_norm_eps)
norm = lambda x: np.linalg.norm(x, axis=-1)  # noqa: E731
print(f"rows read from the table: {len(ple_ids)} of {table.shape[0]}")
print("per layer, mean over tokens:   ", "  ".join(f"layer {i}" for i in range(n_layers)))
print("  |token identity part|        ", "  ".join(f"{v:7.2f}" for v in norm(identity).mean(0)))
print("  |mixed input the layer gets| ", "  ".join(f"{v:7.2f}" for v in norm(inputs).mean(0)))

# %% [markdown]
# ## What each layer does with it
#
# `model.trace` records a forward pass step by step (lesson 12): `layers.{i}.ple.in` is the
# residual stream the PLE step of layer i reads, and `layers.{i}.ple.post_norm` what it adds to
# it, for every token. The figure sets the size of that contribution against the size of the
# stream, per layer and per token.

# %%
acts = model.trace(ids)
contribution = np.stack([acts[f"layers.{i}.ple.post_norm"] for i in range(n_layers)])  # (layers, seq, hidden)
stream = np.stack([acts[f"layers.{i}.ple.in"] for i in range(n_layers)])
np.testing.assert_allclose(identity, acts["ple.identity"], rtol=1e-6, atol=1e-6)
np.testing.assert_allclose(inputs, acts["ple.inputs"], rtol=1e-6, atol=1e-6)
ratio = norm(contribution) / norm(stream)  # (layers, seq)
print("|PLE contribution| / |residual stream|, mean over tokens, per layer:", np.round(ratio.mean(1), 3))
pieces = [model.tokenizer.decode([i]) for i in ids]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 2.4]})
axes[0].bar(range(n_layers), norm(contribution).mean(1))
axes[0].set(xlabel="layer", ylabel="mean |contribution|", title="PLE contribution per layer")
image = axes[1].imshow(ratio, aspect="auto", cmap="viridis")
axes[1].set_xticks(range(len(ids)), pieces, rotation=70, fontsize=8)
axes[1].set(ylabel="layer", title="|PLE contribution| / |residual stream|, per token")
fig.colorbar(image, ax=axes[1], fraction=0.03)
save(fig, "06_ple_contributions")

# %% [markdown]
# ## Does the model use it?
#
# Switch PLE off and measure how well the model predicts held-out text (cross-entropy in nats per
# token; lower is better): first the whole contribution (`apply_per_layer_input` returns `h`
# unchanged), then only the token-identity part (`token_identity` returns zeros), which is the
# part that would live on disk.

# %%
tokens = np.array(model.tokenizer.encode(heldout_text(), add_special_tokens=True)[:768])
with_ple, _ = evaluate(model, tokens, 256)
with mock.patch.object(minigemma.text.layer, "apply_per_layer_input", lambda h, *rest: h):
    without_ple, _ = evaluate(model, tokens, 256)
with mock.patch.object(minigemma.text.model, "token_identity", lambda ids, w, layers, dim: np.zeros((len(ids), layers, dim), np.float32)):
    without_identity, _ = evaluate(model, tokens, 256)
print(f"cross-entropy on {len(tokens)} held-out tokens: with PLE {with_ple:.3f}, without the token table {without_identity:.3f}, "
      f"without PLE {without_ple:.3f} nats/token")

# %% [markdown]
# ## Check against the reference
#
# The reference's `get_per_layer_inputs` (token identity) and `project_per_layer_inputs` (the mix),
# and each layer's contribution: the output of its `post_per_layer_input_norm`, caught by a
# forward hook (`minigemma.verify.reference.capture`, lesson 12).

# %%
if have_reference():
    import torch

    from minigemma.verify.reference import capture

    ref = reference_text_model()
    with torch.no_grad():
        t_ids, t_embeds = torch.from_numpy(ids)[None], torch.from_numpy(embeds)[None]
        ref_identity = ref.model.get_per_layer_inputs(t_ids, t_embeds)
        agree("token identity", identity, to_numpy(ref_identity[0]), 1e-5)
        agree("per-layer inputs", inputs, to_numpy(ref.model.project_per_layer_inputs(t_embeds, ref_identity)[0]), 1e-5)
    theirs = capture(ref, ids, names="layers.*.ple.post_norm")
    for i in range(n_layers):
        agree(f"layer {i} PLE contribution", contribution[i], theirs[f"layers.{i}.ple.post_norm"], 1e-4)
