# %% [markdown]
# # Lesson 8: one whole decoder layer
#
# *Attention, then the MLP beside its experts, then the layer's Per-Layer Embedding, each normed on the way in and on the way out and added to the residual stream, then one learned scale for the whole layer.*
#
# Reference: `Gemma4TextDecoderLayer` (transformers `models/gemma4/modeling_gemma4.py`).
# minigemma: `text/layer.py` (`decoder_layer`, `ForwardContext`), which calls the functions of lessons 2 to 7.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save

import numpy as np

import minigemma
from minigemma.text.layer import ForwardContext, decoder_layer
from minigemma.text.ple import per_layer_inputs, token_identity
from minigemma.text.model import rope_for_positions

model = minigemma.load()
cfg = model.config.text

# %% [markdown]
# ## The layer, in order
#
# ```
# h = h + post_attention_norm(attention(input_norm(h)))        lesson 4
# r = h
# f = mlp(pre_feedforward_norm(h))                             lesson 7: the shared expert
# f = post_norm_1(f) + post_norm_2(experts(pre_norm_2(r), router(r)))   with MoE
# h = r + post_feedforward_norm(f)
# h = h + post_norm(project(gelu(gate(h)) * ple_i))            lesson 6: with PLE
# h = h * layer_scalar
# ```
#
# Every block's input is RMS-normed (so the block sees vectors of a known size), and so is its
# output before it joins the residual stream (so no block can swamp the stream, however large
# its raw output): Gemma's "sandwich" norms. The stream itself is never normed inside the stack,
# only added to, so a token's information flows straight from layer to layer. `layer_scalar`
# scales a whole layer's output; in the reference it is a stored buffer rather than a trained
# parameter, so this model, trained from scratch, keeps it at 1.
#
# `decoder_layer` is one call. Here is layer 0 run by hand on the scaled embeddings, with its own
# slice of the Per-Layer Embeddings and the RoPE tables of both layer types; it returns exactly
# what the full forward pass computed for layer 0.

# %%
text = "Return the number of items in a container."
ids = np.array(model.tokenizer.encode(text, add_special_tokens=True))
positions = np.arange(len(ids))
embeds, ple_ids = model.embed(ids)
ple = model.weights.ple
ple_inputs = per_layer_inputs(
    token_identity(ple_ids, ple, cfg.num_hidden_layers, cfg.hidden_size_per_layer_input),
    embeds, ple, cfg.num_hidden_layers, cfg.hidden_size_per_layer_input, cfg.rms_norm_eps,
)  # (seq, layers, ple_dim)
ctx = ForwardContext(positions=positions, rope=rope_for_positions(positions, cfg))
out0 = decoder_layer(embeds, model.weights.layers[0], cfg.layers[0], cfg, ctx, ple_inputs[:, 0])
acts = model.trace(ids)
assert np.array_equal(out0, acts["layers.0.out"])
print(f"layer 0 by hand: {out0.shape}, equal to the forward pass; layer_scalar per layer:",
      [float(w.layer_scalar[0]) for w in model.weights.layers])

# %% [markdown]
# ## What each block adds
#
# The trace of the forward pass names what each block adds to the residual stream: its output
# after the output norm, `layers.{i}.attn.post_norm`, `.moe.post_norm` (the MLP and experts
# together) and `.ple.post_norm`, token by token.

# %%
rms = lambda x: np.sqrt(np.mean(x * x, axis=-1)).mean()  # noqa: E731  mean over tokens
rows = []
for i in range(cfg.num_hidden_layers):
    h_in = acts["embed"] if i == 0 else acts[f"layers.{i - 1}.out"]
    added = [acts[f"layers.{i}.{block}.post_norm"] for block in ("attn", "moe", "ple")]
    np.testing.assert_allclose(h_in + sum(added), acts[f"layers.{i}.out"], rtol=1e-5, atol=1e-5)  # layer_scalar is 1
    rows.append([rms(h_in)] + [rms(a) for a in added] + [rms(acts[f"layers.{i}.out"])])
rows = np.array(rows)
print("layer  RMS in   + attention  + MLP & experts  + PLE    RMS out")
for i, (h_in, attn, ffn, ple_add, h_out) in enumerate(rows):
    print(f"  {i}    {h_in:5.2f}    {attn:8.2f}   {ffn:12.2f}   {ple_add:6.2f}    {h_out:5.2f}")

# %% [markdown]
# Each block adds a vector of RMS about 1, whatever the size of the stream: its output was normed
# on the way out, so its size is set by that norm's learned scale. The stream, a running sum,
# grows layer by layer; the input norms of the next layer take care of that (lesson 2).

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.8))
width = 0.25
for j, (label, color) in enumerate((("attention", "C0"), ("MLP and experts", "C1"), ("Per-Layer Embedding", "C2"))):
    ax.bar(np.arange(cfg.num_hidden_layers) + (j - 1) * width, rows[:, j + 1], width, label=label, color=color)
ax.plot(np.arange(cfg.num_hidden_layers), rows[:, 4], "k.-", label="residual stream after the layer")
ax.set_xticks(range(cfg.num_hidden_layers), [f"{i} ({'S' if s.is_sliding else 'G'})" for i, s in enumerate(cfg.layers)])
ax.set(xlabel="layer (S sliding, G global)", ylabel="RMS, mean over tokens", title="What each block adds to the residual stream")
ax.legend(fontsize=8)
save(fig, "08_layer_contributions")

# %% [markdown]
# ## Check against the reference
#
# The output of every `Gemma4TextDecoderLayer` of the reference, caught by a forward hook
# (`minigemma.verify.reference.capture`, lesson 12), against ours.

# %%
if have_reference():
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextDecoderLayer

    from minigemma.verify.reference import capture

    ref = reference_text_model()
    assert all(isinstance(layer, Gemma4TextDecoderLayer) for layer in ref.model.layers)
    theirs = capture(ref, ids, names="layers.*.out")
    for spec in cfg.layers:
        agree(f"layer {spec.index} output", acts[f"layers.{spec.index}.out"], theirs[f"layers.{spec.index}.out"], 1e-4)
