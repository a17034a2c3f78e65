# %% [markdown]
# # Lesson 1: tokens and the scaled embedding
#
# *Text becomes token ids, ids become vectors scaled by sqrt(hidden), and the same table, tied, reads the next token back out through a soft cap.*
#
# Reference: `Gemma4TextScaledWordEmbedding` and `Gemma4ForCausalLM` (transformers `models/gemma4/modeling_gemma4.py`).
# minigemma: `generate/tokenizer.py` (text to ids), `text/model.py` (`embed_tokens`, the tied head), `text/ops.py` (`soft_cap`).
#
# Every lesson runs on the model that ships inside minigemma: a 5.7M-parameter Gemma 4 trained on
# the Python documentation, with every text feature of Gemma 4 switched on (its model card is
# `minigemma/data/tiny/README.md`). The numbers you see are those of trained weights.
#
# Run it with `minigemma lessons 1`, as a script (`python lessons/01_tokens_and_embedding.py`), or
# open this file as a notebook (VS Code, or Jupyter with jupytext).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save, to_numpy
import numpy as np

import minigemma
from minigemma.cli.info import describe
from minigemma.text.ops import linear, soft_cap
from minigemma.text.model import embed_tokens

model = minigemma.load()  # no path: the embedded model
cfg = model.config.text
print("\n".join(describe(model)))

# %% [markdown]
# ## Text to token ids
#
# A language model reads integers. Gemma's tokenizer is a SentencePiece BPE model: frequent
# pieces of words get one id each, and anything it has never seen falls back to its UTF-8 bytes,
# so no text is ever out of vocabulary. Gemma 4 uses 262,144 pieces; the embedded model, 4,096.
# A prompt starts with `<bos>`, and the special tokens (`<|turn>`, `<|image|>`, ...) are always
# one token each, never cut into pieces.

# %%
tok = model.tokenizer
text = "The sliding window keeps the cache small."
ids = np.array(tok.encode(text, add_special_tokens=True))
print(f"{len(text)} characters -> {len(ids)} tokens")
for i in ids:
    print(f"  {i:5d}  {tok.decode([i])!r}")

# %% [markdown]
# ## Ids to vectors: the scaled embedding
#
# Each id picks a row of the embedding table (vocab x hidden). Gemma multiplies that row by
# `sqrt(hidden)`. Why? The same table is also the output head (below): the logit of token v is
# the dot product of the final, normalised hidden state with row v. For logits of a sensible
# size the rows must be small, about `1/sqrt(hidden)` per entry, and that is the scale the table
# lives at. Multiplied by `sqrt(hidden)`, the same rows enter the residual stream at an RMS of
# about 1, the scale the rest of the model works at.

# %%
rows = model.weights.embed[ids]  # (seq, hidden): the raw table rows
scaled = embed_tokens(ids, model.weights, cfg)  # (seq, hidden): what the first layer receives
rms = lambda x: np.sqrt(np.mean(x * x, axis=-1))  # noqa: E731
print(f"hidden = {cfg.hidden_size}, sqrt(hidden) = {cfg.hidden_size ** 0.5:.2f}")
print(f"RMS of the raw rows:    {rms(rows).mean():.3f} on average")
print(f"RMS of the scaled rows: {rms(scaled).mean():.3f} on average")

# %% [markdown]
# ## The tied head and the final soft cap
#
# At the end, the final hidden state (after one last RMSNorm) is compared with every row of the
# *same* table: `logits = h @ embed.T`. Tying saves a second vocab x hidden matrix, which for
# Gemma 4's 262,144-token vocabulary is 400M to 1.4B parameters.
#
# Then Gemma squashes each logit with `30 * tanh(logit / 30)`: nearly the identity for ordinary
# values, but no logit can pass 30. It keeps a model from growing ever more confident logits
# during training, and keeps sampling well behaved. The figure plots the cap over the range and
# marks where this model's logits for the next token actually fall: a small model trained briefly
# never gets near the cap, so here it is a guard rail that is rarely touched.

# %%
acts = model.trace(ids)
print("the head is the embedding table itself:", model.weights.lm_head is model.weights.embed)
raw = linear(acts["final_norm"], model.weights.lm_head)  # (seq, vocab), before the cap
capped = soft_cap(raw, cfg.final_logit_softcapping)
assert np.array_equal(capped, acts["logits"])  # what the model returned
probs = np.exp(capped[-1] - capped[-1].max())
probs /= probs.sum()
bent = np.abs(capped - raw) > 0.01 * np.abs(raw)
print(f"largest logit before the cap: {raw.max():.2f}; the cap moved {bent.mean():.1%} of all logits by over 1%")
print(f"after {text!r} the most likely next tokens:")
for v in np.argsort(-probs)[:5]:
    print(f"  {tok.decode([v])!r:12} p = {probs[v]:.3f}   logit {raw[-1, v]:6.2f} -> capped {capped[-1, v]:6.2f}")

cap = cfg.final_logit_softcapping
x = np.linspace(-3 * cap, 3 * cap, 400, dtype=np.float32)
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.plot(x, x, ":", color="gray", label="no cap")
ax.plot(x, soft_cap(x, cap), label=f"{cap:g} tanh(x / {cap:g})")
ax.scatter(raw[-1], capped[-1], s=6, color="C3", label="this model's next-token logits")
ax.axhline(cap, color="gray", lw=0.5)
ax.axhline(-cap, color="gray", lw=0.5)
ax.set(xlabel="logit before the cap", ylabel="logit after", title="Final logit soft-cap")
ax.legend(loc="upper left", fontsize=8)
save(fig, "01_soft_cap")

# %% [markdown]
# ## Check against the reference
#
# The reference reads the very same files (`Gemma4ForCausalLM.from_pretrained`). We compare the
# tokenizer's ids, the scaled embedding (`Gemma4TextScaledWordEmbedding`) and the final logits.

# %%
if have_reference():
    import torch
    from transformers import AutoTokenizer
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextScaledWordEmbedding

    ref = reference_text_model()
    ref_ids = AutoTokenizer.from_pretrained(model.path)(text)["input_ids"]
    agree("token ids", ids, ref_ids, 0)
    assert isinstance(ref.model.embed_tokens, Gemma4TextScaledWordEmbedding)
    with torch.no_grad():
        agree("scaled embedding", scaled, to_numpy(ref.model.embed_tokens(torch.tensor(ids)[None])[0]), 1e-5)
        agree("logits", capped, to_numpy(ref(torch.tensor(ids)[None], use_cache=False).logits[0]), 1e-4)
