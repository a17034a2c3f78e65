# %% [markdown]
# # Lesson 4: attention, GQA, and sliding-window vs global layers
#
# *Most layers look only at the last few hundred tokens, one layer in five (or four) looks at everything, and the last layer is always global; query heads share fewer key/value heads.*
#
# Reference: `Gemma4TextAttention` (transformers `models/gemma4/modeling_gemma4.py`), with
# `sliding_window_mask_function` for the window, and the layer plan of `Gemma4TextConfig`.
# minigemma: `text/attention.py` (`project_queries`, `project_keys_values`, `attention_mask`, `attend`,
# `output_projection`), `text/layer_plan.py` (`layer_types`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, heldout_text, plt, reference_text_model, save, to_numpy
import numpy as np

import minigemma
from minigemma.text.attention import attend, attention_mask, output_projection, project_keys_values, project_queries
from minigemma.text.layer_plan import GLOBAL, layer_types
from minigemma.text.norm import rms_norm
from minigemma.text.rope import apply_rope
from minigemma.text.model import rope_for_positions

model = minigemma.load()
cfg = model.config.text

# %% [markdown]
# ## Which layers look how far
#
# Full attention costs memory and time in proportion to the length of the text, at every layer:
# the keys and values of every earlier token must be kept and read. Yet most of what a layer
# needs is nearby. Gemma 4 therefore makes most layers *sliding-window* layers, whose queries see
# only the last `sliding_window` tokens (512 in the small models, 1024 in the large ones), and
# keeps a few *global* layers that see the whole context. The default pattern is five sliding
# layers then one global (5:1); E2B states its own 4:1 list; and whatever the list says, the
# *last* layer is forced to be global, so the final hidden state has seen everything.

# %%
pattern = lambda types: "".join("G" if t == GLOBAL else "S" for t in types)  # noqa: E731
print("default, 30 layers: ", pattern(layer_types(None, 30, "")))
print("a list ending in S: ", pattern(layer_types(["sliding_attention"] * 6, 6, "")), " (the last layer made global)")
print(f"this model, {cfg.num_hidden_layers} layers:", pattern(s.layer_type for s in cfg.layers), f" window {cfg.sliding_window}")

# %% [markdown]
# ## The masks
#
# Which keys a query may see is a boolean mask built from positions alone
# (`attention_mask(q_positions, k_positions, window)`): causal, plus, on sliding layers, fewer
# than `window` positions back. A query therefore sees itself and the `window - 1` tokens
# before it. Building masks from absolute positions, not from array indices, is what keeps them
# exact when the keys come from a ring-buffer cache (lesson 5).

# %%
seq = 160
positions = np.arange(seq)
sliding_mask = attention_mask(positions, positions, cfg.attention_window)  # (q, k) bool
global_mask = attention_mask(positions, positions, None)
print(f"keys visible to the query at position 150: sliding {sliding_mask[150].sum()}, global {global_mask[150].sum()}")
fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
for ax, mask, title in ((axes[0], sliding_mask, f"sliding window {cfg.sliding_window}"), (axes[1], global_mask, "global (causal)")):
    ax.imshow(mask, cmap="Greys", interpolation="nearest")
    ax.set(xlabel="key position", ylabel="query position", title=title)
save(fig, "04_sliding_mask")

# %% [markdown]
# ## Queries, keys, values, and what Gemma 4 changes
#
# Step by step through minigemma's functions, for every layer of the embedded model on 160
# tokens of Python documentation it never saw in training:
#
# 1. the layer's input is RMS-normed (`input_layernorm`, lesson 2);
# 2. `project_queries`: project to `heads x head_dim`, RMSNorm each head (`q_norm`); then
#    `apply_rope` rotates them (lesson 3);
# 3. `project_keys_values`: the same for keys (`k_norm`, then rotated); values get an RMSNorm
#    *without* scale, and no rotation.
#    Because queries and keys arrive normalised, the scores need no `1/sqrt(head_dim)`: Gemma 4's
#    attention scaling is 1.0;
# 4. **GQA**: 4 query heads share 2 key/value heads on sliding layers, and a single one on global
#    layers. The KV cache holds keys and values only, so fewer KV heads means a smaller cache;
# 5. **`attention_k_eq_v`** (global layers here): the values are the key projection itself, taken
#    before the key's norm and rotation, so the layer needs no value projection at all;
# 6. **KV sharing** (layers 4 and 5): these compute no keys or values; they attend to those of
#    the last earlier layer of their type (lesson 5);
# 7. `attend` and `output_projection`: softmax-weighted sum of values, then back to `hidden`.
#
# Each step is checked against the model's own forward pass, recorded by `model.trace` under the
# names of lesson 12 (`layers.{i}.attn.in`, `.attn.q`, ..., `.attn.out`).
#
# To *see* the attention weights we use a property of `attend` itself: its output is the
# weights times the values, so with one-hot values (the identity matrix) it returns the weights.

# %%
def attention_weights(q, k, mask):
    """(heads, q_len, k_len) weights, read out of `attend` with one-hot values. Its values must be
    head_dim wide, so the identity goes in head_dim columns at a time."""
    k_len, kv_heads, d = k.shape
    eye = np.eye(k_len, -(-k_len // d) * d, dtype=np.float32)  # (k_len, k_len rounded up to a multiple of d)
    columns = [attend(q, k, np.broadcast_to(eye[:, None, c : c + d], (k_len, kv_heads, d)), mask) for c in range(0, eye.shape[1], d)]
    return np.concatenate(columns, axis=-1)[..., :k_len].transpose(1, 0, 2)


same = lambda ours, recorded: np.testing.assert_allclose(ours, recorded, rtol=1e-5, atol=1e-5)  # noqa: E731
ids = np.array(model.tokenizer.encode(heldout_text(), add_special_tokens=True)[:seq])
acts = model.trace(ids)
rope = rope_for_positions(positions, cfg)
eps = cfg.rms_norm_eps
kv, weights = {}, {}
for spec, w in zip(cfg.layers, model.weights.layers):
    i = spec.index
    x = rms_norm(acts["embed"] if i == 0 else acts[f"layers.{i - 1}.out"], w.input_norm, eps)
    same(x, acts[f"layers.{i}.attn.in"])
    cos, sin = rope[spec.layer_type]
    q = project_queries(x, w.attention, spec, eps)  # (seq, heads, head_dim)
    same(q, acts[f"layers.{i}.attn.q"])
    q = apply_rope(q, cos, sin)
    if spec.reuses_kv:
        k, v = kv[spec.kv_producer]
    else:
        k, v = project_keys_values(x, w.attention, spec, eps)  # (seq, kv_heads, head_dim)
        same(k, acts[f"layers.{i}.attn.k"])
        same(v, acts[f"layers.{i}.attn.v"])
        k = apply_rope(k, cos, sin)
        kv[i] = k, v  # what the KV-shared layers of this type will read
    mask = attention_mask(positions, positions, cfg.attention_window if spec.is_sliding else None)
    context = attend(q, k, v, mask)  # (seq, heads, head_dim)
    same(context, acts[f"layers.{i}.attn.context"])
    same(output_projection(context, w.attention), acts[f"layers.{i}.attn.out"])
    weights[i] = attention_weights(q, k, mask)  # (heads, q, k)
    print(
        f"layer {i} {'sliding' if spec.is_sliding else 'global '}: q {q.shape}, k {k.shape}"
        + (f" (layer {spec.kv_producer}'s)" if spec.reuses_kv else "")
        + (", values = key projection" if spec.k_eq_v and not spec.reuses_kv else "")
    )

# %% [markdown]
# Two summaries of each layer's weights, averaged over the queries past the window: how far back
# the attention lands on average, and how much of it goes to the very first token, `<bos>`.
# Sliding layers cannot reach past 63 tokens back; heads of the global layers split into ones
# that read the last token or two and ones that reach far back. (Large models often park
# attention on `<bos>` when nothing else is relevant, an "attention sink": the weights must sum
# to 1 somewhere. This small model barely does, only a few percent in its last layer.)

# %%
late = positions >= cfg.sliding_window  # queries whose window no longer reaches the start
distance = np.subtract.outer(positions, positions)  # (q, k): how far back each key lies
print("layer  kind     mean distance per head       weight on <bos> per head")
for spec in cfg.layers:
    a = weights[spec.index][:, late]  # (heads, late queries, k)
    mean_distance = (a * distance[late]).sum(-1).mean(-1)
    on_bos = a[..., 0].mean(-1)
    print(f"  {spec.index}    {'sliding' if spec.is_sliding else 'global '}  {np.round(mean_distance, 1)}    {np.round(on_bos, 2)}")

# %% [markdown]
# The attention maps of a sliding layer (0) and a global layer (2), every head: the sliding
# layer's weights live in a band 64 tokens wide; in the global layer two heads keep to the
# diagonal (the current and previous token) while two reach back to the start of the text (the
# colour scale is logarithmic, so small weights stay visible).

# %%
from matplotlib.colors import LogNorm  # noqa: E402

fig, axes = plt.subplots(2, cfg.num_attention_heads, figsize=(3.2 * cfg.num_attention_heads, 6.6))
for row, layer in enumerate((0, 2)):
    for head in range(cfg.num_attention_heads):
        ax = axes[row, head]
        image = ax.imshow(weights[layer][head] + 1e-6, cmap="magma", norm=LogNorm(1e-4, 1), interpolation="nearest")
        kind = "sliding" if cfg.layers[layer].is_sliding else "global"
        ax.set_title(f"layer {layer} ({kind}), head {head}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
fig.colorbar(image, ax=axes, fraction=0.02, label="attention weight")
save(fig, "04_attention_maps")

# %% [markdown]
# ## Check against the reference
#
# The reference returns its attention weights with `output_attentions=True` (eager attention):
# they must equal ours for every layer and head. And each layer's attention output (what its
# `Gemma4TextAttention` returns, caught by a forward hook: `minigemma.verify.reference.capture`, lesson 12)
# must equal ours, `layers.{i}.attn.out`.

# %%
if have_reference():
    import torch
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextAttention

    from minigemma.verify.reference import capture

    ref = reference_text_model()
    assert all(isinstance(layer.self_attn, Gemma4TextAttention) for layer in ref.model.layers)
    with torch.no_grad():
        attentions = ref(torch.from_numpy(ids)[None], output_attentions=True, use_cache=False).attentions
    theirs = capture(ref, ids, names="layers.*.attn.out")
    for spec in cfg.layers:
        i = spec.index
        agree(f"layer {i} attention weights", weights[i], to_numpy(attentions[i][0]), 1e-4)
        agree(f"layer {i} attention output", acts[f"layers.{i}.attn.out"], theirs[f"layers.{i}.attn.out"], 1e-4)
