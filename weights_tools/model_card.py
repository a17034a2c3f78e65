"""Write the embedded model's card (`README.md`) and loss curve (`loss.png`), measuring the shipped
files with minigemma itself.

    python -m weights_tools.model_card MODEL_DIR --work WORK_DIR

`WORK_DIR` is the training run's working directory (`train_tiny.py --work`), whose held-out split
is scored in full; the unigram baseline is fitted on the training split's token counts, which
`training_log.json` keeps. Needs matplotlib for the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import minigemma
from minigemma.weights.checkpoint import Checkpoint
from weights_tools import tiny_corpus, tiny_eval

SAMPLE_PROMPTS = ("This module provides", "Exceptions are")
SAMPLE_TOKENS = 48
TARGET_FRACTION_OF_UNIGRAM = 0.6  # the quality bar the tests hold the model to


def parameter_groups(model_dir: str) -> dict[str, int]:
    """Parameter counts of the stored tensors, grouped by what they are."""
    ckpt = Checkpoint(model_dir)
    groups = {"token embedding (tied head)": 0, "Per-Layer-Embedding table": 0, "routed experts": 0, "everything else": 0}
    for name in ckpt.names():
        n = int(np.prod(ckpt.refs[name].shape))
        if name.endswith("embed_tokens.weight"):
            groups["token embedding (tied head)"] += n
        elif "embed_tokens_per_layer" in name:
            groups["Per-Layer-Embedding table"] += n
        elif ".experts." in name:
            groups["routed experts"] += n
        else:
            groups["everything else"] += n
    return groups


def plot_loss(log: dict, unigram_ce: float, held_out_ce: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.array(log["log"])
    tokens = rows[:, 3] / 1e6
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(tokens, rows[:, 1], lw=1, label="training loss (batch)")
    ax.axhline(unigram_ce, color="gray", ls="--", lw=1, label=f"unigram baseline, held out ({unigram_ce:.2f})")
    target = TARGET_FRACTION_OF_UNIGRAM * unigram_ce
    ax.axhline(target, color="gray", ls=":", lw=1, label=f"{TARGET_FRACTION_OF_UNIGRAM:.0%} of it, the target ({target:.2f})")
    ax.scatter([tokens[-1]], [held_out_ce], color="red", zorder=3, label=f"final model, held out ({held_out_ce:.2f})")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("minigemma tiny: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(model_dir: str, work: str) -> dict:
    import sentencepiece as spm

    from weights_tools.tiny_corpus import HELD_OUT_SAMPLE

    model = minigemma.load(model_dir)
    cfg = model.config.text
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    with open(os.path.join(model_dir, "training_log.json")) as f:
        log = json.load(f)
    hp = log["hyperparameters"]
    seq_len = hp["seq_len"]

    with open(os.path.join(work, "heldout.txt"), encoding="utf-8") as f:
        held_out = tiny_eval.encode_documents(f.read(), sp)
    with open(os.path.join(model_dir, HELD_OUT_SAMPLE), encoding="utf-8") as f:
        sample = tiny_eval.encode_documents(f.read(), sp)
    train_counts = np.array(log["train_token_counts"])

    ce, load = tiny_eval.evaluate(model, held_out, seq_len)
    targets = tiny_eval.predicted_targets(held_out, seq_len)
    unigram = tiny_eval.unigram_cross_entropy(targets, train_counts)
    oracle = tiny_eval.unigram_entropy(targets)
    sample_ce, _ = tiny_eval.evaluate(model, sample, seq_len)
    sample_oracle = tiny_eval.unigram_entropy(tiny_eval.predicted_targets(sample, seq_len))

    groups = parameter_groups(model_dir)
    n_params = sum(groups.values())
    size = os.path.getsize(os.path.join(model_dir, "model.safetensors"))
    last = log["log"][-1]
    steps, tokens_seen, seconds = last[0], last[3], last[4]
    plot_loss(log, unigram, ce, os.path.join(model_dir, "loss.png"))

    samples = []
    for prompt in SAMPLE_PROMPTS:
        ids = [sp.bos_id(), *sp.encode(prompt)]
        samples.append((prompt, sp.decode(tiny_eval.greedy(model, ids, SAMPLE_TOKENS, stop_ids=(sp.eos_id(),)))))

    special = [(i, sp.id_to_piece(i)) for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)
               or sp.id_to_piece(i) in tiny_corpus.NAMED_TOKENS.values()]
    numbers = {
        "parameters": n_params, "file_bytes": size, "steps": steps, "tokens_seen": tokens_seen,
        "training_seconds": seconds, "train_tokens": int(train_counts.sum()), "held_out_tokens": int(len(targets)), "held_out_ce": ce,
        "unigram_ce": unigram, "unigram_entropy": oracle, "sample_ce": sample_ce, "sample_unigram_entropy": sample_oracle,
        "expert_load_min": float(load.min()), "expert_load_max": float(load.max()),
    }
    with open(os.path.join(model_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(_card(cfg, groups, numbers, hp, load, samples, special, sp.get_piece_size()))
    return numbers


def _card(cfg, groups, n, hp, load, samples, special, vocab) -> str:
    layer_rows = "\n".join(
        f"| {s.index} | {'global' if not s.is_sliding else 'sliding'} | {s.head_dim} | {s.num_kv_heads} | "
        f"{s.kv_sharing or '-'}{f' (reads layer {s.kv_producer})' if s.reuses_kv else ''} | {s.mlp_intermediate} |"
        for s in cfg.layers
    )
    load_header = "| layer | " + " | ".join(f"e{e}" for e in range(load.shape[1])) + " |"
    load_rows = "\n".join(
        f"| {i} | " + " | ".join(f"{100 * x:.1f}" for x in row) + " |" for i, row in enumerate(load)
    )
    group_rows = "\n".join(f"| {name} | {count:,} |" for name, count in groups.items())
    sample_text = "\n\n".join(f"**{p}** →\n\n```text\n{p}{c}\n```" for p, c in samples)
    specials = ", ".join(f"`{piece}` {i}" for i, piece in special)
    return f"""# minigemma tiny: a small trained Gemma 4

The embedded default model of minigemma (`minigemma.load()` with no path). A Gemma 4 text model
of {n['parameters'] / 1e6:.1f}M parameters, trained from scratch with the PyTorch reference
(`transformers.Gemma4ForCausalLM`, transformers 5.23.0) on the English prose of the Python
documentation, with every text feature of Gemma 4 switched on, so that attention maps, expert
routing and Per-Layer-Embedding contributions are those of trained weights. It writes text that
is recognisably learned, documentation-flavoured English, but knows little: it is a teaching and
testing model, not an assistant.

## Corpus and licence

- **Text**: the reStructuredText sources of the Python 3.11 documentation (tutorial, FAQ, HOWTOs,
  language and library reference, setup, extending), as Debian's `python3.11-doc` package
  (3.11.2) ships them under `/usr/share/doc/python3.11/html/_sources/`; lightly cleaned
  (index and label lines dropped, `:role:` markup rendered as its text).
- **Licence of the text**: the Python documentation is © Python Software Foundation and licensed
  under the PSF License Agreement (version 2); its example code is also under the Zero-Clause BSD
  licence. `heldout_sample.txt` beside this card is an excerpt of it.
- **Split**: by document (a hash of its path); {n['held_out_tokens']:,} held-out tokens that
  training never saw. Documents are fed as `<bos> text <eos>`.
- **Model weights**: Apache-2.0, as the rest of minigemma.

## Architecture

`config.json` is as `save_pretrained` writes it (transformers 5.23.0). Gemma 4 features on:

- Per-Layer Embeddings: {cfg.hidden_size_per_layer_input} dims per layer per token;
- sliding / global attention, the last layer global; sliding window {cfg.sliding_window} tokens,
  shorter than the {hp['seq_len']}-token training context;
- dual RoPE: default (theta {cfg.rope['sliding_attention'].theta:g}) on sliding layers, proportional
  partial-rotary (factor {cfg.rope['full_attention'].partial_rotary_factor}, theta {cfg.rope['full_attention'].theta:g}) on global layers;
- GQA: {cfg.num_attention_heads} query heads; global layers with wider heads and a single KV head
  whose keys are also its values (`attention_k_eq_v`);
- KV sharing: the last {cfg.num_kv_shared_layers} layers reuse earlier layers' keys and values and
  have the double-wide MLP;
- MoE in every layer: {cfg.num_experts} experts of width {cfg.moe_intermediate_size}, top-{cfg.top_k_experts},
  router with learned `scale` and `per_expert_scale`, the dense MLP as the always-on shared expert;
- final logit soft-cap {cfg.final_logit_softcapping:g}; tied embedding; hidden size {cfg.hidden_size};
  vocabulary {cfg.vocab_size}.

| layer | attention | head dim | KV heads | KV sharing | MLP width |
| --- | --- | --- | --- | --- | --- |
{layer_rows}

| parameters | count |
| --- | --- |
{group_rows}
| **total** | **{n['parameters']:,}** |

`model.safetensors`: bf16, {n['file_bytes'] / 1e6:.1f} MB.

## Tokenizer

SentencePiece BPE, {vocab} pieces with byte fallback, trained on the training split (digits split,
whitespace kept). Special tokens, spelled as Gemma 4 spells them, at these ids (also declared in
`tokenizer_config.json`): {specials}. Files in Hugging Face layout: `tokenizer.model`,
`tokenizer.json`, `tokenizer_config.json` (with a chat template shaped like Gemma 4's:
`<bos><|turn>user\\n...<turn|>\\n<|turn>model\\n`), `chat_template.jinja`, `special_tokens_map.json`.
The model was not trained on chat turns.

## Training

{n['steps']:,} steps of {hp['batch_size']} x {hp['seq_len']} tokens: **{n['tokens_seen']:,} tokens seen**
({n['tokens_seen'] / n['train_tokens']:.1f} passes over the {n['train_tokens']:,}-token training split), in **{n['training_seconds'] / 60:.0f} minutes**
on {hp['threads']} CPU thread(s) of a shared 2-core machine. AdamW (betas 0.9, 0.95), peak learning
rate {hp['lr']:g} after {hp['warmup_steps']} warm-up steps, held, then decayed linearly over the last
{hp['decay_fraction']:.0%} of the steps to {hp['min_lr_fraction']:g} of it,
weight decay {hp['weight_decay']:g} on matrices, gradient clipping {hp['grad_clip']:g}, seed {hp['seed']}.
Loss: next-token cross-entropy plus {hp['aux_loss_weight']:g} x a Switch-Transformer load-balancing loss
(experts x sum over experts of slot fraction x mean router probability, averaged over layers).

![training loss](loss.png)

## Evaluation (measured by minigemma on the shipped bf16 weights)

On the held-out split, in windows of {hp['seq_len']} tokens:

| model | cross-entropy (nats / token) |
| --- | --- |
| this model | **{n['held_out_ce']:.3f}** (perplexity {np.exp(n['held_out_ce']):.1f}) |
| unigram, fitted on the training split (add-one) | {n['unigram_ce']:.3f} |
| best possible unigram (the held-out text's own frequencies) | {n['unigram_entropy']:.3f} |

Ratio to the training-split unigram: **{n['held_out_ce'] / n['unigram_ce']:.0%}**; to the best unigram:
{n['held_out_ce'] / n['unigram_entropy']:.0%}. On `heldout_sample.txt` alone (what the tests score):
{n['sample_ce']:.3f} vs a best unigram of {n['sample_unigram_entropy']:.3f}.

Expert load on the held-out split, percent of routing slots (tokens x top-{cfg.top_k_experts}) per expert;
range {100 * n['expert_load_min']:.1f}% to {100 * n['expert_load_max']:.1f}% (uniform would be
{100 / cfg.num_experts:.1f}%):

{load_header}
| --- | {' | '.join('---' for _ in range(load.shape[1]))} |
{load_rows}

Greedy continuations ({SAMPLE_TOKENS} tokens at most, no sampling):

{sample_text}

## Reproduce

```bash
pip install protobuf matplotlib          # export-time only: tokenizer.json conversion, the plot
apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
nohup python -m weights_tools.train_tiny --docs /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
    --work /tmp/tiny-train --out minigemma/data/tiny > /tmp/tiny-train.log 2>&1 &
```

The run checkpoints every {hp['checkpoint_every']} steps; the same command resumes it. Deterministic for a
seed on one machine (CPU, float32, {hp['threads']} thread(s)); `tests/test_tiny_model.py` checks that and
resumption on a small configuration.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.model_card", description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--work", required=True, help="the training run's --work directory")
    args = p.parse_args(argv)
    print(json.dumps(write_model_card(args.model_dir, args.work), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
