# %% [markdown]
# # Lesson 5: the KV cache, ring buffers and KV sharing
#
# *Generation feeds one token at a time and keeps every layer's keys and values; Gemma 4 keeps that cache small: ring buffers on sliding layers, nothing at all on KV-shared layers.*
#
# Reference: `DynamicCache`, with a `DynamicSlidingWindowLayer` per sliding layer and a `DynamicLayer` per global
# layer (transformers `cache_utils.py`), and `KVSharingDict` for the shared layers.
# minigemma: `generate/cache.py` (`new_cache`, `SlidingKV`, `GlobalKV`), `generate/loop.py` (`generate_ids`), `Model.extend`.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save, to_numpy
import numpy as np

import minigemma
from minigemma.text.config import config_from_dict
from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling
from weights_tools.random_checkpoint import PRESETS

model = minigemma.load()
cfg = model.config.text

# %% [markdown]
# ## Why a cache
#
# A model writes text one token at a time, and each new token attends to all the earlier ones.
# Run the whole text through the model at every step and step t costs t tokens' work in every
# layer: quadratic in the length. But the keys and values of earlier tokens never change, so each
# layer keeps them: the *KV cache*. The prompt goes in once (the *prefill*), then each step feeds
# a single token, whose query reads the cached keys and values.
#
# The cache is what fills memory on long texts. Gemma 4 shrinks it three ways, one per kind of
# layer:
#
# * a **sliding** layer's query only sees the last `window` positions, so the layer keeps a *ring
#   buffer* of the last `window - 1` keys and values: the i-th token written lands in slot
#   `i % (window - 1)`, over one no future query can see. Its size is fixed, however long the text;
# * a **global** layer keeps everything: its cache grows with the text;
# * a **KV-shared** layer (the last `num_kv_shared_layers`) keeps nothing: it reads the keys and
#   values its producer layer (the last earlier layer of its type) computed in the same step.

# %%
cache = model.new_cache()
for spec, layer_cache in zip(cfg.layers, cache.layers):
    kind = "sliding" if spec.is_sliding else "global "
    held = type(layer_cache).__name__ if layer_cache is not None else f"nothing: reads layer {spec.kv_producer}'s"
    print(f"layer {spec.index} {kind}: {held}")

# %% [markdown]
# ## A long generation, watched step by step
#
# `generate_ids` is minigemma's generation loop (prefill, then sample and extend one token at a
# time). Between two tokens we read how many positions each layer holds and how many bytes the
# whole cache takes.

# %%
prompt = np.array(model.tokenizer.encode("An enumeration is a set of symbolic names bound to", add_special_tokens=True))
new_tokens = 256  # four windows' worth
held, nbytes, generated = [], [], []
for token in generate_ids(model, prompt, Sampling(temperature=0.0), new_tokens, cache=cache):
    generated.append(token)
    held.append([c.length if c is not None else 0 for c in cache.layers])
    nbytes.append(cache.nbytes)
held = np.array(held)  # (steps, layers)
print(model.tokenizer.decode(prompt[1:]) + "|" + model.tokenizer.decode(generated)[:240] + " ...")
print(f"\nafter {cache.length} positions, positions held per layer: {held[-1]}")

# %% [markdown]
# The ring buffer of layer 0, slot by slot: the absolute position each slot holds. It wrapped
# around several times; the newest token sits just before the oldest one still kept. The order of
# slots does not matter, because attention masks are built from positions (lesson 4).

# %%
ring = cache.layers[0]
print(f"capacity {ring.capacity}, tokens ever written {ring.written}")
print("positions by slot:", ring.positions)

# %% [markdown]
# The cache changes the cost of a step, not its answer: the greedy tokens equal the argmax of one
# full forward pass over the same text, position by position.

# %%
text = np.concatenate([prompt, generated])
full = model.forward(text[:-1])  # (seq - 1, vocab), no cache
assert np.array_equal(full[len(prompt) - 1 :].argmax(-1), generated)
print(f"{len(generated)} cached greedy steps == argmax of the full forward pass")

# %% [markdown]
# The figure: positions held by each layer as the text grows (sliding layers stop at 63, the
# global layer grows, the shared layers hold nothing), and the bytes of keys and values held
# against a cache that would keep every position in every layer. (minigemma allocates the ring
# buffers whole at the start and doubles a global buffer when it fills, hence the dotted steps.)

# %%
context = len(prompt) + np.arange(len(generated))  # positions in the cache at each step
per_position = np.array([2 * s.num_kv_heads * s.head_dim * 4 for s in cfg.layers])  # bytes of k + v, float32
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for spec in cfg.layers:
    kind = "sliding" if spec.is_sliding else "global"
    shared = f", reads layer {spec.kv_producer}" if spec.reuses_kv else ""
    axes[0].plot(context, held[:, spec.index], label=f"layer {spec.index} ({kind}{shared})", ls="--" if spec.reuses_kv else "-")
axes[0].set(xlabel="tokens in the context", ylabel="positions held", title="KV cache per layer")
axes[0].legend(fontsize=8)
axes[1].plot(context, context * per_position.sum() / 1024, label="every layer keeps every position")
axes[1].plot(context, held @ per_position / 1024, label="Gemma 4's cache: keys and values held")
axes[1].plot(context, np.array(nbytes) / 1024, ":", color="gray", label="minigemma's buffers, as allocated")
axes[1].set(xlabel="tokens in the context", ylabel="KiB", title="Cache size")
axes[1].legend(fontsize=8)
save(fig, "05_cache_sizes")

# %% [markdown]
# At the real model's size the savings are what make long contexts fit. The same arithmetic for
# Gemma 4 E2B's text model (35 layers, 4:1 sliding:global, window 512, the last 20 layers
# KV-shared, one KV head of 256 or 512 dims), in bf16:

# %%
e2b = config_from_dict(PRESETS["e2b"]).text
kv_bytes = lambda s, positions: 2 * s.num_kv_heads * s.head_dim * 2 * positions  # noqa: E731  k and v, bf16
for n in (8_192, 32_768, 131_072):
    naive = sum(kv_bytes(s, n) for s in e2b.layers)
    gemma = sum(0 if s.reuses_kv else kv_bytes(s, min(n, e2b.sliding_window - 1) if s.is_sliding else n) for s in e2b.layers)
    print(f"E2B at {n:7,} tokens: every layer keeps everything {naive / 2**20:7,.0f} MiB, Gemma 4's cache {gemma / 2**20:5,.0f} MiB")

# %% [markdown]
# ## Check against the reference
#
# Two things. Our cached greedy tokens are the argmax of the reference's logits (one forward pass
# over the same text). And the reference's own `DynamicCache`, filled by a forward pass over the
# positions ours has consumed, holds the same keys and values as our ring buffers and global
# buffers (sorted by position), and nothing for the KV-shared layers.

# %%
if have_reference():
    import torch
    from transformers import DynamicCache

    ref = reference_text_model()
    with torch.no_grad():
        result = ref(torch.from_numpy(text[:-1])[None], use_cache=True)
    agree("greedy tokens", result.logits[0, len(prompt) - 1 :].argmax(-1).numpy(), generated, 0)
    ref_cache = result.past_key_values
    assert isinstance(ref_cache, DynamicCache)
    for spec, ours, theirs in zip(cfg.layers, cache.layers, ref_cache.layers):
        kind = type(theirs).__name__
        if ours is None:
            assert getattr(theirs, "keys", None) is None, kind
            print(f"  layer {spec.index}: nothing kept, as the reference's {kind}")
            continue
        order = np.argsort(ours.positions[: ours.length])  # slots in position order
        keys, values = ours.keys[: ours.length][order], ours.values[: ours.length][order]  # (held, kv_heads, head_dim)
        agree(f"layer {spec.index} keys ({kind}, {ours.length} positions)", keys, to_numpy(theirs.keys[0].transpose(0, 1)), 1e-4)
        agree(f"layer {spec.index} values", values, to_numpy(theirs.values[0].transpose(0, 1)), 1e-4)
