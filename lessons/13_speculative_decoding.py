# %% [markdown]
# # Lesson 13: speculative decoding and the MTP assistant
#
# *A small drafter proposes the next few tokens; the model checks them all in one pass and keeps the ones it agrees with: the same text, fewer passes.*
#
# Reference: `Gemma4AssistantForCausalLM` (transformers `models/gemma4_assistant/modeling_gemma4_assistant.py`),
# driven by `generation.candidate_generator.SinglePositionMultiTokenCandidateGenerator`.
# minigemma: `assistant/` (`config.py`, `projections.py`, `decoder.py`, `ordered_head.py`, `model.py`),
# `generate/speculative.py`, `KVCache.rollback` in `generate/cache.py`; the shipped drafter
# `minigemma/data/tiny_assistant` (trained by `weights_tools/train_assistant.py`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, heldout_text, plt, reference_text_model, save
import os
import time

import numpy as np

import minigemma
from minigemma.assistant import load_assistant
from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling
from minigemma.generate.speculative import (
    SpeculationStats,
    accept_greedy,
    draft,
    extend_with_hidden,
    lookback_for,
    speculative_ids,
    target_kv,
)
from minigemma.model import default_model_path

model = minigemma.load()
assistant_dir = os.path.join(os.path.dirname(default_model_path()), "tiny_assistant")
assistant = load_assistant(assistant_dir)
greedy = Sampling()
print(model)
print(assistant)

# %% [markdown]
# ## Why checking is (nearly) free
#
# Generating one token means one pass through the model, and on a CPU that pass is bound by
# reading the weights (a big model's gigabytes per token), not by arithmetic. A pass over 4
# tokens reads the same weights once and does 4 times the arithmetic, which the CPU had to spare.
# So if someone proposed the next 3 tokens, the model could check all of them, and produce the
# token after them, in about the time of one step.
#
# The embedded model is tiny (its weights fit in the CPU's caches), so its passes are bound by
# Python's per-operation overhead instead; the effect is the same: one more position costs little.

# %%
text = heldout_text()
prompt = np.array(model.tokenizer.encode(" ".join(text.split()[:40]), add_special_tokens=True))
cache = model.new_cache()
model.extend(prompt, cache)
pass_ms = {}
for n in range(1, 7):
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model.extend(prompt[:n], cache)
        times.append(time.perf_counter() - start)
        cache.rollback(n)  # take the n positions back: every pass sees the same cache
    pass_ms[n] = 1000 * np.median(times)
for n, ms in pass_ms.items():
    print(f"  a pass over {n} position(s): {ms:5.1f} ms  ({ms / pass_ms[1]:.2f} x one decode step)")

# %% [markdown]
# ## What drafts: the assistant
#
# Every Gemma 4 model ships with an *assistant*, a drafter of a few layers that reads the
# model's own state instead of the text:
#
# ```
# x = pre_projection([target_embed(last token) ; target hidden state before it])
# x = a few decoder layers, at the last token's position, attending to the TARGET's keys and
#     values (its last sliding and last full layer: KV sharing across models; no cache of its own)
# h' = post_projection(final_norm(x))   -> the hidden state of the next draft step
# logits = head(final_norm(x))          -> the draft token (the big assistants score only the
#                                          tokens of a few clusters: the ordered-embedding head)
# ```
#
# Drafting k tokens is k steps of this small stack, all at the same position; the target's cache
# is never touched.

# %%
cache = model.new_cache(lookback=lookback_for(model, assistant))  # rings keep what the drafter's sliding layer reads
plain = list(generate_ids(model, prompt, greedy, 6))
logits, hidden = extend_with_hidden(model, prompt, cache)
token = plain[0]  # the target's own next token (the argmax of `logits[-1]`), not yet in the cache
kv = target_kv(model, cache)
print("the target's keys/values the drafter reads:", {t: k.shape for t, (k, v, pos) in kv.items()})
drafts, _ = draft(model, assistant, token, hidden[-1], cache, 4, lambda lg: (int(np.argmax(lg)), None))
print("prompt ends:       ", repr(model.tokenizer.decode(prompt[-12:])))
print("target's next 5:   ", repr(model.tokenizer.decode(plain[:5])), plain[:5])
print("token + 4 drafts:  ", repr(model.tokenizer.decode([token, *drafts])), [token, *drafts])

# %% [markdown]
# ## What checks: one round
#
# The target reads the last token and the k drafts in one pass (k + 1 positions) and gives its own
# choice at each: where a draft equals the target's choice, the draft is accepted and the next one
# is checked; at the first disagreement the target's own choice replaces it. So a round yields
# between 1 and k + 1 tokens, always exactly the tokens plain greedy decoding would give. The keys
# and values of the rejected drafts are taken back out of the cache (`KVCache.rollback`: a global
# layer shortens, a sliding layer's ring buffer restores the slots they overwrote).

# %%
checked = np.array([token, *drafts])  # k + 1 positions in one pass
verify, hidden = extend_with_hidden(model, checked, cache)
kept = accept_greedy(drafts, verify)
print(f"target's choices: {np.argmax(verify, axis=-1).tolist()}; drafts {drafts}")
print(f"accepted {len(kept) - 1} of {len(drafts)} drafts; this round yields {kept}")
cache.rollback(len(drafts) + 1 - len(kept))
print(f"cache holds {cache.length} positions: the prompt, the token and the accepted drafts")

# %% [markdown]
# ## Acceptance per position, and the speed-up
#
# Over held-out paragraphs (text neither model trained on): how many drafts each round keeps, for
# 4 drafts per round. The first draft is the easiest (it continues text the target has read);
# each later one must also follow the drafter's own earlier guesses.

# %%
paragraphs = [p for p in text.split("\n\n") if len(p.split()) > 40][:4]
prompts = [np.array(model.tokenizer.encode(" ".join(p.split()[:24]), add_special_tokens=True)) for p in paragraphs]
k, new = 4, 32
stats = SpeculationStats()
timing = {"plain": 0.0, "speculative": 0.0}
for ids in prompts:
    start = time.perf_counter()
    plain = list(generate_ids(model, ids, greedy, new))
    timing["plain"] += time.perf_counter() - start
    start = time.perf_counter()
    fast = list(speculative_ids(model, assistant, ids, greedy, new, draft_tokens=k, stats=stats))
    timing["speculative"] += time.perf_counter() - start
    assert fast == plain  # the same text, token for token
lengths = np.bincount(stats.accepted_per_round, minlength=k + 1)
reached = np.array([lengths[j:].sum() for j in range(1, k + 1)])  # rounds whose j-th draft was accepted
rounds = len(stats.accepted_per_round)
print(f"acceptance rate {100 * stats.acceptance_rate:.0f}% over {rounds} rounds; "
      f"{(stats.accepted + rounds) / rounds:.2f} tokens per target pass")
print(f"wall time, {len(prompts)} prompts x {new} tokens: plain {timing['plain']:.2f} s, "
      f"speculative {timing['speculative']:.2f} s ({timing['plain'] / timing['speculative']:.2f}x)")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
ax1.bar(range(k + 1), lengths / lengths.sum(), color="tab:blue")
ax1.set(xlabel="drafts accepted in a round", ylabel="share of rounds", title=f"Accepted draft lengths (k = {k})")
ax2.bar(range(1, k + 1), reached / rounds, color="tab:green")
ax2.set(xlabel="draft position j", ylabel="share of rounds", ylim=(0, 1), title="Rounds whose j-th draft was accepted")
save(fig, "13_accepted_lengths")

# %% [markdown]
# ## Sampling: the same distribution
#
# With sampling, "the target agrees" cannot mean equality. The speculative-sampling rule: draw
# the draft d from the drafter's distribution q, accept it with probability min(1, p(d) / q(d))
# (p: the target's), and at the first rejection draw from max(0, p - q), renormalised. Every
# token then comes out with exactly the target's probability p (`tests/test_speculative.py`
# checks it with a chi-square test), however poor the drafter: a poor one only costs speed.

# %%
for seed in range(3):
    out = speculative_ids(model, assistant, prompts[0], Sampling(temperature=0.8, top_k=40, seed=seed), 12, draft_tokens=3)
    print(f"  seed {seed}: {model.tokenizer.decode(list(out))!r}")

# %% [markdown]
# ## Check against the reference
#
# The reference cannot build an assistant as shipped (its config check refuses a model whose every
# layer is KV-shared; DESIGN.md), so it is built with that property patched. Then: the drafted
# tokens of a round equal those of `SinglePositionMultiTokenCandidateGenerator`, and transformers'
# assisted `generate` gives our tokens.

# %%
if have_reference():
    import torch
    from transformers import Gemma4AssistantForCausalLM, GenerationConfig
    from transformers.generation.candidate_generator import SinglePositionMultiTokenCandidateGenerator
    from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig

    original = Gemma4TextConfig.kv_sharing_modes
    Gemma4TextConfig.kv_sharing_modes = property(
        lambda c: ["reuse"] * c.num_hidden_layers if c.num_kv_shared_layers == c.num_hidden_layers else original.fget(c))
    try:
        ref_assistant = Gemma4AssistantForCausalLM.from_pretrained(assistant_dir, dtype=torch.float32)
        ref_assistant.eval()
        target = reference_text_model()
        ids = torch.as_tensor(prompts[1])[None]
        with torch.no_grad():
            out = target(input_ids=ids, output_hidden_states=True, return_shared_kv_states=True)
            first = out.logits[0, -1].argmax().item()
            generator = SinglePositionMultiTokenCandidateGenerator(ref_assistant, target.get_input_embeddings(),
                                                                   GenerationConfig(max_length=1000))
            seq = torch.cat([ids, torch.tensor([[first]])], dim=1)
            candidates, _ = generator.get_candidates(seq, model_kwargs={"attention_mask": torch.ones_like(seq)},
                                                     model_outputs=out, is_first_iteration=False, n_last_matches=0)
            theirs = target.generate(ids, assistant_model=ref_assistant, max_new_tokens=16, do_sample=False)
    finally:
        Gemma4TextConfig.kv_sharing_modes = original
    cache = model.new_cache(lookback=lookback_for(model, assistant))
    _, hidden = extend_with_hidden(model, prompts[1], cache)
    n = ref_assistant.generation_config.num_assistant_tokens
    ours, _ = draft(model, assistant, first, hidden[-1], cache, n, lambda lg: (int(np.argmax(lg)), None))
    agree(f"the {n} drafts of a round", ours, candidates[0, len(prompts[1]) + 1 :].tolist(), 0)
    agree("assisted greedy generation, 16 tokens", list(speculative_ids(model, assistant, prompts[1], greedy, 16)),
          theirs[0, len(prompts[1]) :].tolist(), 0)
