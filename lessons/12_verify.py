# %% [markdown]
# # Lesson 12: putting it together, and verifying an implementation
#
# *The whole forward pass as a chain of named steps; and how to find the one step where a port of Gemma 4 goes wrong, by comparing traces with the reference's.*
#
# Reference: `Gemma4ForCausalLM` (transformers `models/gemma4/modeling_gemma4.py`), observed through forward hooks
# on its modules (`minigemma/verify/reference.py`).
# minigemma: `Model.trace`, `verify/trace.py`, `verify/compare.py` (`compare_traces`, `report`), `verify/trace_file.py`; the guide `docs/verify.md`.

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, reference_text_model, save
from pathlib import Path
from unittest import mock

import minigemma
import minigemma.text.attention
import minigemma.text.model
from minigemma.verify.compare import compare_traces, report
from minigemma.text.config import RopeParams
from minigemma.text.rope import inverse_frequencies
from minigemma.verify.trace_file import Trace, load_trace

model = minigemma.load()
cfg = model.config.text

# %% [markdown]
# ## The whole model, one named step at a time
#
# Lessons 1 to 9 took Gemma 4's text model apart (10 and 11 its image and audio towers, whose
# soft tokens join the text at `embed`). Put back together, one forward pass is:
#
# ```
# ids -> embed * sqrt(hidden)                                    lesson 1
#     -> Per-Layer Embeddings: token table + context, per layer  lesson 6
#     -> decoder layers, sliding and global (5:1, last global)   lessons 2, 3, 4, 7, 8
#        (keys/values cached, ring buffers, KV sharing)          lesson 5
#     -> final RMSNorm -> tied head -> soft cap -> logits        lesson 1
#     -> sample the next token                                   lesson 9
# ```
#
# `model.trace(ids)` runs exactly `forward`'s code and records the value after every step under a
# stable name (`embed`, `ple.identity`, `layers.3.attn.q`, `layers.3.moe.router.top_k_index`, ...,
# `logits`). Each name is also the input or output of one module of the reference, so the same
# trace can be taken from PyTorch with forward hooks. The table of names is `docs/verify.md`.

# %%
golden_dir = Path(minigemma.__file__).parent / "data" / "golden_traces"
golden = load_trace(str(golden_dir / "short.safetensors"))  # the reference's trace, shipped with minigemma
ids = golden.token_ids
print(f"prompt {golden.metadata['prompt']!r} -> ids {ids}; traced by {golden.metadata['source']}")
acts = model.trace(ids)
print(f"{len(acts)} named activations; layer 2 (global, MoE, PLE) has:")
for name, value in acts.items():
    if name.startswith("layers.2."):
        print(f"  {name:34} {str(value.shape):14} {value.dtype}")

# %% [markdown]
# ## Verifying a port
#
# Someone porting Gemma 4 to C++, Rust, JAX or MLX has logits that are slightly off. The final
# logits say *that* something is wrong, never *where*. The method: write the port's activations
# under the same names, then compare with the reference's name by name, in forward order; the
# first name that disagrees is the step to fix, since everything after it inherits the error.
#
# minigemma ships the reference's traces of the embedded model (`minigemma/data/golden_traces/`),
# so this needs no PyTorch. minigemma itself, first: every one of the 152 steps agrees.

# %%
ours = Trace("minigemma", acts, {"token_ids": ids})
rows = compare_traces(ours, golden)
print("\n".join(report(rows, 1e-4, 1e-4)[-4:]))

# %% [markdown]
# Now two ports with classic bugs, made by swapping one minigemma function or constant for the
# duration of a trace:
#
# * **the textbook scaling**: attention scores divided by `sqrt(head_dim)`, as in most
#   transformers; Gemma 4's q/k norms make its scaling 1.0 (lesson 4);
# * **RoPE without pruning**: every pair of the global heads rotates, as a default RoPE would;
#   Gemma 4's proportional RoPE turns only the first quarter (lesson 3).

# %%
def rope_without_pruning(params, head_dim):
    return inverse_frequencies(RopeParams("default", params.theta), head_dim)


bugs = {
    "scores / sqrt(head_dim)": mock.patch.object(minigemma.text.attention, "ATTENTION_SCALING", cfg.head_dim**-0.5),
    "RoPE without pruning": mock.patch.object(minigemma.text.model, "inverse_frequencies", rope_without_pruning),
}
first_global = next(s.index for s in cfg.layers if not s.is_sliding)
expected = {"scores / sqrt(head_dim)": "layers.0.attn.context", "RoPE without pruning": f"layers.{first_global}.attn.context"}
results = {"minigemma": rows}
for bug, patch in bugs.items():
    with patch:
        port = Trace(bug, model.trace(ids), {"token_ids": ids})
    results[bug] = compare_traces(port, golden)
    print(f"{bug}: {report(results[bug], 1e-4, 1e-4)[-1]}")
    assert next(r.name for r in results[bug] if not r.ok) == expected[bug]  # compare points at the bug

# %% [markdown]
# The figure: the largest difference from the reference at every step, in forward order. The
# correct trace stays near float32 rounding all the way; each bug jumps at its own step, the
# first one in the first layer, the RoPE bug only at the first global layer (2), and both carry
# the error to the logits.

# %%
names = [r.name for r in rows]
fig, ax = plt.subplots(figsize=(12, 4))
for label, result in results.items():
    ax.plot([max(r.max_abs, 1e-9) for r in result], label=label, lw=1.2)
    first = next((k for k, r in enumerate(result) if not r.ok), None)
    if first is not None:
        ax.annotate(names[first], (first, result[first].max_abs), xytext=(5, 25), textcoords="offset points",
                    fontsize=8, arrowprops=dict(arrowstyle="->", lw=0.6))
ax.axhline(1e-4, color="gray", ls=":", label="tolerance 1e-4")
starts = [k for k, n in enumerate(names) if n.endswith(".attn.in")]
ax.set_xticks(starts, [names[k].split(".attn")[0] for k in starts], fontsize=8)
ax.set(yscale="log", ylabel="max |ours - reference|", xlabel="activation, in forward order", title="Where a port diverges")
ax.legend(fontsize=8)
save(fig, "12_divergence")

# %% [markdown]
# From the command line the same check is three commands (`minigemma trace`, `minigemma trace
# --reference`, `minigemma compare`; see `docs/verify.md`), and a port writes its own activations
# to an `.npz` or `.safetensors` file with the names and shapes of the table.
#
# ## Check against the reference
#
# The golden traces are the reference's, captured once. Here the reference runs live: its trace of
# a longer prompt, past the sliding window (the second golden prompt, 84 tokens), against
# minigemma's, every step.

# %%
if have_reference():
    from transformers import Gemma4ForCausalLM

    from minigemma.verify.reference import capture

    ref = reference_text_model()
    assert isinstance(ref, Gemma4ForCausalLM)
    long_ids = load_trace(str(golden_dir / "long.safetensors")).token_ids
    theirs = Trace("reference", capture(ref, long_ids), {"token_ids": long_ids})
    mine = Trace("minigemma", model.trace(long_ids), {"token_ids": long_ids})
    live = compare_traces(mine, theirs)
    print(report(live, 1e-4, 1e-4)[-1])
    agree(f"all {len(live)} activations", [r.ok for r in live], [True] * len(live), 0)
