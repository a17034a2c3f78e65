# %% [markdown]
# # Lesson 7: the GeGLU MLP, mixture of experts and the shared expert
#
# *A gated MLP in every layer, and beside it a router that sends each token to 2 of 8 small experts (8 of 128 in Gemma 4 26B-A4B): more parameters, the same compute per token.*
#
# Reference: `Gemma4TextMLP`, `Gemma4TextRouter` and `Gemma4TextExperts`, combined in `Gemma4TextDecoderLayer`
# (transformers `models/gemma4/modeling_gemma4.py`).
# minigemma: `text/mlp.py` (`mlp`), `text/moe.py` (`route`, `experts`, `moe_block`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, heldout_text, plt, reference_text_model, save, to_numpy
from unittest import mock

import numpy as np

import minigemma
import minigemma.text.moe
from minigemma.text.mlp import mlp
from minigemma.text.moe import experts, route
from minigemma.text.norm import rms_norm
from minigemma.text.ops import activation
from weights_tools.tiny_eval import evaluate

model = minigemma.load()
cfg = model.config.text
act, eps = activation(cfg.hidden_activation), cfg.rms_norm_eps

# %% [markdown]
# ## The GeGLU MLP
#
# After attention has moved information *between* tokens, the MLP transforms each token on its
# own: `down(gelu(gate(x)) * up(x))`. Two projections go up to the wide intermediate size; one of
# them, through a GELU, acts as a per-unit gate on the other. The gate lets the layer switch
# features on and off per token, which trains better than a plain `down(gelu(up(x)))` of the
# same size. The KV-shared layers (lesson 5) save their key and value projections and spend the
# parameters on an MLP twice as wide (`use_double_wide_mlp`).

# %%
for spec, w in zip(cfg.layers, model.weights.layers):
    print(f"layer {spec.index}: gate/up {w.mlp.gate_proj.shape}, down {w.mlp.down_proj.shape}" + ("  double-wide (KV-shared)" if spec.reuses_kv else ""))

# %% [markdown]
# ## Mixture of experts
#
# A bigger MLP knows more but costs more on every token. A mixture of experts splits the extra
# capacity into many small MLPs (*experts*) and lets a *router* pick a few of them per token:
# Gemma 4 26B-A4B holds 26B parameters but runs about 4B per token (128 experts, 8 per token).
# Its dense MLP stays on for every token beside them, as the *shared expert*: general
# knowledge every token needs sits there once, instead of in copies across the experts.
#
# The router, in `route`, in this order:
# 1. RMSNorm of the token's residual vector, without a learned scale;
# 2. times a learned per-dimension `scale`, and `hidden ** -0.5`;
# 3. a projection to one logit per expert, then a softmax over *all* experts;
# 4. keep the top-k probabilities and renormalise them to sum to 1;
# 5. multiply each by its expert's learned `per_expert_scale`.
#
# `model.trace` records the router's three outputs in every layer (`layers.{i}.moe.router.probs`,
# `.top_k_weights`, `.top_k_index`) during a forward pass over one sentence.

# %%
text = "The sort() method modifies the list in place and returns None."
ids = np.array(model.tokenizer.encode(text, add_special_tokens=True))
pieces = [model.tokenizer.decode([i]) for i in ids]
acts = model.trace(ids)
residual = acts["layers.0.attn.residual"]  # (tokens, hidden): what layer 0's router reads
router = model.weights.layers[0].moe.router
probs, top_weights, top_index = route(residual, router, cfg.top_k_experts, eps)  # (tokens, experts), (tokens, k) x 2
assert np.array_equal(top_index, acts["layers.0.moe.router.top_k_index"])
t = pieces.index(" method")
print(f"layer 0, token {pieces[t]!r}: router probabilities {np.round(probs[t], 3)}")
print(f"  top-{cfg.top_k_experts} experts {top_index[t]}, renormalised {np.round(probs[t, top_index[t]] / probs[t, top_index[t]].sum(), 3)}, "
      f"times per_expert_scale {np.round(router.per_expert_scale[top_index[t]], 3)} -> weights {np.round(top_weights[t], 3)}")

# %% [markdown]
# The expert load: of all the routing slots (tokens x top-2) in a layer, the share each expert
# gets, measured on 768 tokens of held-out text. Training added a load-balancing loss so that no
# expert starves (uniform would be 12.5% each). And the routing of each token of our sentence in
# every layer: which experts it went to, and with what weight.

# %%
tokens = np.array(model.tokenizer.encode(heldout_text(), add_special_tokens=True)[:768])
ce, load = evaluate(model, tokens, 256)  # load: (layers, experts), fractions of the routing slots
print("expert load per layer (%):")
print(np.round(100 * load, 1))
routing = np.zeros((cfg.num_hidden_layers, len(ids), cfg.num_experts))  # weight each token gives each expert
for layer in range(cfg.num_hidden_layers):
    index, weights = acts[f"layers.{layer}.moe.router.top_k_index"], acts[f"layers.{layer}.moe.router.top_k_weights"]
    np.put_along_axis(routing[layer], index, weights, axis=-1)

fig, axes = plt.subplots(1, 4, figsize=(15, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1.2, 1, 1, 1]})
axes[0].imshow(100 * load, cmap="viridis", vmin=0)
for (i, e), v in np.ndenumerate(100 * load):
    axes[0].text(e, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 12 else "black")
axes[0].set(xlabel="expert", ylabel="layer", title="Router load per expert (% of slots)")
for ax, layer in zip(axes[1:], (0, 2, 5)):
    ax.imshow(routing[layer], cmap="Blues", aspect="auto", vmin=0)
    ax.set_yticks(range(len(ids)), pieces if layer == 0 else [""] * len(ids), fontsize=8)
    ax.set(xlabel="expert", title=f"Routing weight per token, layer {layer}")
save(fig, "07_router_load")

# %% [markdown]
# ## Does the model use its experts?
#
# With every routing weight set to 0 the experts still run but add nothing, and the model is left
# with its shared expert alone:

# %%
def without_experts(h, w, top_k, eps):
    probs, weights, index = route(h, w, top_k, eps)
    return probs, np.zeros_like(weights), index


with mock.patch.object(minigemma.text.moe, "route", without_experts):
    ce_dense_only, _ = evaluate(model, tokens, 256)
print(f"cross-entropy on held-out text: {ce:.3f} nats/token with the experts, {ce_dense_only:.3f} with the shared expert alone")

# %% [markdown]
# ## Check against the reference
#
# Layer 0's `Gemma4TextRouter`, `Gemma4TextExperts` and `Gemma4TextMLP` of the reference, holding
# the trained weights, on the same residual vectors.

# %%
if have_reference():
    import torch
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts, Gemma4TextMLP, Gemma4TextRouter

    layer = reference_text_model().model.layers[0]
    assert isinstance(layer.router, Gemma4TextRouter) and isinstance(layer.experts, Gemma4TextExperts)
    assert isinstance(layer.mlp, Gemma4TextMLP)
    ours = model.weights.layers[0]
    h = torch.from_numpy(residual)
    with torch.no_grad():
        ref_probs, ref_weights, ref_index = layer.router(h)
        agree("router probabilities", probs, to_numpy(ref_probs), 1e-5)
        agree("top-k experts", top_index, ref_index.numpy(), 0)
        agree("top-k weights", top_weights, to_numpy(ref_weights), 1e-5)
        x = rms_norm(residual, ours.moe.pre_norm, eps)
        routed = experts(x, top_index, top_weights, ours.moe.experts, act)
        agree("experts", routed, to_numpy(layer.experts(torch.from_numpy(x), ref_index, ref_weights)), 1e-5)
        x = rms_norm(residual, ours.pre_feedforward_norm, eps)
        agree("GeGLU MLP", mlp(x, ours.mlp, act), to_numpy(layer.mlp(torch.from_numpy(x))), 1e-5)
