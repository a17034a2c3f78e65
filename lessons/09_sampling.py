# %% [markdown]
# # Lesson 9: sampling
#
# *From logits to the next token: greedy, or a draw shaped by temperature, top-k and top-p, repeatable with a seed.*
#
# Reference: `TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper`, applied in that order by
# `GenerationMixin.generate` (transformers `generation/logits_process.py`, `generation/utils.py`).
# minigemma: `generate/sampling.py` (`Sampling`, `filtered_logits`, `sample`), `generate/loop.py`, `Model.generate`.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save

import numpy as np

import minigemma
from minigemma.text.ops import softmax
from minigemma.generate.sampling import Sampling, filtered_logits, sample

model = minigemma.load()

# %% [markdown]
# ## The choice at every step
#
# The model gives a score (logit) to every token of the vocabulary; softmax turns them into
# probabilities. *Greedy* decoding takes the most likely token every time: deterministic, and
# for small models prone to loops (lesson 5's continuation repeats itself). Sampling draws from
# the distribution instead, reshaped first:
#
# * **temperature** divides the logits: below 1 sharpens the distribution, above 1 flattens it;
# * **top-k** keeps only the k most likely tokens;
# * **top-p** (nucleus) keeps the fewest most likely tokens whose probabilities add up to p, so
#   the cut adapts: a few tokens when the model is sure, many when it is not.
#
# A checkpoint ships its recommended settings in `generation_config.json`, and `generate` uses
# them for any you leave unset; the embedded model ships none, so it decodes greedily by default.

# %%
prompt = "To read a file line by line, use the"
ids = np.array(model.tokenizer.encode(prompt, add_special_tokens=True))
logits = model.forward(ids)[-1]  # (vocab,): the scores for the next token
settings = {
    "greedy": Sampling(temperature=0.0),
    "temperature 1": Sampling(temperature=1.0),
    "temperature 0.5": Sampling(temperature=0.5),
    "temperature 1.5": Sampling(temperature=1.5),
    "top-k 5": Sampling(temperature=1.0, top_k=5),
    "top-p 0.9": Sampling(temperature=1.0, top_p=0.9),
}
top = np.argsort(-logits)[:12]
labels = [repr(model.tokenizer.decode([t])) for t in top]
print(f"after {prompt!r}, the probabilities of the most likely next tokens:")
print(f"  {'':16} {'tokens kept':>11} {''.join(f'{s:>13}' for s in labels[:6])}")
fig, axes = plt.subplots(1, len(settings) - 1, figsize=(15, 3.4), sharey=True)
rng = np.random.default_rng(0)
for ax, (name, s) in zip(axes, list(settings.items())[1:]):
    p = softmax(filtered_logits(logits, s))  # (vocab,)
    kept = int(np.sum(p > 0))
    draws = np.bincount([sample(logits, s, rng) for _ in range(200)], minlength=len(logits))
    print(f"  {name:16} {kept:11d} {''.join(f'{v:13.3f}' for v in p[top[:6]])}   200 draws: {np.count_nonzero(draws)} distinct tokens")
    ax.bar(range(len(top)), p[top])
    ax.set_xticks(range(len(top)), labels, rotation=80, fontsize=7)
    ax.set_title(f"{name}: {kept} tokens kept", fontsize=9)
axes[0].set_ylabel("probability")
save(fig, "09_sampling")
print(f"  greedy picks {model.tokenizer.decode([sample(logits, settings['greedy'], rng)])!r}")

# %% [markdown]
# ## Seeds
#
# Every generation owns its random generator, seeded by `seed`: the same seed writes the same
# text, a different seed another one, and no global random state is touched.

# %%
for seed in (1, 1, 2):
    text = model.generate(prompt, max_new_tokens=16, temperature=0.8, top_k=64, top_p=0.95, seed=seed)
    print(f"seed {seed}: {text!r}")

# %% [markdown]
# ## Check against the reference
#
# The reference's logits warpers, applied to the same logits in the same order, keep the same
# tokens with the same values; and its greedy `generate` writes the same tokens as ours.

# %%
if have_reference():
    import torch
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    for name, s in list(settings.items())[1:]:
        scores = torch.from_numpy(logits)[None]
        scores = TemperatureLogitsWarper(s.temperature)(None, scores)
        if s.top_k:
            scores = TopKLogitsWarper(s.top_k)(None, scores)
        if s.top_p < 1:
            scores = TopPLogitsWarper(s.top_p)(None, scores)
        ours, theirs = filtered_logits(logits, s), scores[0].numpy()
        agree(f"{name}: tokens kept", np.isfinite(ours), np.isfinite(theirs), 0)
        agree(f"{name}: their logits", ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], 1e-6)
    with torch.no_grad():
        ref_new = reference_text_model().generate(torch.from_numpy(ids)[None], max_new_tokens=24, do_sample=False)[0, len(ids) :]
    agree("greedy generation", model.generate(ids, max_new_tokens=24, temperature=0), ref_new.numpy(), 0)
