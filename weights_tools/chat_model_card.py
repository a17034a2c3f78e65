"""Write the embedded chat model's card (`README.md`) and loss curve (`loss.png`), measuring the
shipped files with minigemma itself.

    python -m weights_tools.chat_model_card MODEL_DIR [--init minigemma/data/tiny]

Measured: the loss of the model's turns in the held-out conversations (`heldout_chat.jsonl`,
pages neither model saw), for this model and for the plain model it started from; how greedy
replies to the held-out questions end (at `<turn|>`, or at the token limit), with and without
thinking; and a short scripted chat, greedy. Needs matplotlib for the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import minigemma
from weights_tools import chat_eval
from weights_tools.model_card import parameter_groups

REPLY_TOKENS = 160  # token limit of the measured replies
REPLY_QUESTIONS = 24  # held-out questions whose replies are measured
TRANSCRIPT = ("Hi!", "What does os.path.join do?", "What is the pass statement?", "Thanks!")
THINKING_TRANSCRIPT = ("What does str.upper do?",)


def transcript(model, turns, thinking=False, system=None) -> str:
    """A scripted chat as `minigemma chat --seed 0` prints it (the model's sampling defaults)."""
    from minigemma.generate.chat import THOUGHT, Conversation
    from minigemma.generate.sampling import load_generation_config, resolve

    sampling = resolve(seed=0, generation_config=load_generation_config(model.path))
    chat = Conversation(model, sampling, REPLY_TOKENS, system, thinking)
    lines = []
    for turn in turns:
        lines.append(f"> {turn}")
        reply, channel = "", None
        for now, piece in chat.reply(turn):
            if now != channel:
                reply += ("\n" if channel == THOUGHT else "") + ("(thinking) " if now == THOUGHT else "")
                channel = now
            reply += piece
        lines.append(reply.strip())
    return "\n".join(lines)


def plot_loss(log: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.array(log["log"])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(rows[:, 3] / 1e6, rows[:, 1], lw=1, label="training loss, model turns (batch)")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("minigemma tiny-chat: fine-tuning loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def measure(model_dir: str, init: str) -> dict:
    model, plain = minigemma.load(model_dir), minigemma.load(init)
    held_out = chat_eval.read_conversations(os.path.join(model_dir, "heldout_chat.jsonl"))
    ce, count = chat_eval.model_turn_loss(model, held_out)
    plain_ce, _ = chat_eval.model_turn_loss(plain, held_out, model.tokenizer)
    questions = [q for q, _ in chat_eval.first_questions(held_out)][:REPLY_QUESTIONS]
    from minigemma.generate.sampling import load_generation_config, resolve

    sampling = resolve(seed=0, generation_config=load_generation_config(model_dir))  # Gemma's defaults, seeded
    return {
        "held_out_conversations": len(held_out), "held_out_model_turn_tokens": count,
        "held_out_ce": ce, "plain_model_held_out_ce": plain_ce,
        "replies": chat_eval.reply_endings(model, questions, False, REPLY_TOKENS),
        "thinking_replies": chat_eval.reply_endings(model, questions, True, REPLY_TOKENS),
        "sampled_replies": chat_eval.reply_endings(model, questions, False, REPLY_TOKENS, sampling),
        "sampled_thinking_replies": chat_eval.reply_endings(model, questions, True, REPLY_TOKENS, sampling),
        "transcript": transcript(model, TRANSCRIPT),
        "thinking_transcript": transcript(model, THINKING_TRANSCRIPT, thinking=True),
    }


def write_model_card(model_dir: str, work: str | None = None, init: str = "minigemma/data/tiny") -> dict:
    with open(os.path.join(model_dir, "training_log.json")) as f:
        log = json.load(f)
    n = measure(model_dir, init)
    groups = parameter_groups(model_dir)
    n["parameters"] = sum(groups.values())
    n["file_bytes"] = os.path.getsize(os.path.join(model_dir, "model.safetensors"))
    try:
        plot_loss(log, os.path.join(model_dir, "loss.png"))
        n["plot"] = True
    except ImportError:
        n["plot"] = False
    with open(os.path.join(model_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(_card(n, log))
    return n


def _card(n: dict, log: dict) -> str:
    hp, corpus = log["hyperparameters"], log["corpus"]
    train, held = corpus["train"], corpus["heldout"]
    last = log["log"][-1]
    steps, tokens_seen, seconds = last[0], last[3], last[4]
    r, t, rs, ts = n["replies"], n["thinking_replies"], n["sampled_replies"], n["sampled_thinking_replies"]
    plot = "![fine-tuning loss](loss.png)\n\n" if n["plot"] else ""
    return f"""# minigemma tiny-chat: a small Gemma 4 that chats

The embedded default model of `minigemma chat`. The plain embedded model (`minigemma/data/tiny`,
{n['parameters'] / 1e6:.1f}M parameters, every Gemma 4 text feature on), fine-tuned with the PyTorch
reference (`transformers.Gemma4ForCausalLM`, transformers 5.23.0) on conversations about the Python
documentation rendered through its own chat template. It answers in the model turn, ends its turn
with `<turn|>`, and with thinking on (`minigemma chat --think`) opens its reply with a short thought
in the channel. It answers in the documentation's words but, at this size, often about the wrong
function: it is a teaching and testing model, not an assistant.

Same architecture, tokenizer and files as the plain model (see its card, `../tiny/README.md`);
`generation_config.json` carries Gemma 4's sampling defaults (temperature 1.0, top-k 64, top-p
0.95), so `minigemma generate --model` on it samples unless given `--temperature 0`.
`model.safetensors`: bf16, {n['file_bytes'] / 1e6:.1f} MB.

## Corpus and licence

- **Entries**: every documented function, method, class, exception and data item of the Python
  3.11 documentation's reStructuredText sources (Debian's `python3.11-doc`, 3.11.2), every
  module page and every section heading with prose under it: a name and the first paragraphs of
  its documentation, markup rendered as plain text (`weights_tools/chat_corpus.py`).
- **Conversations**: a question per entry ("What does os.path.join do?", "Explain the pass
  statement.", ...) answered with the entry's signature and paragraphs; 20% with a system prompt
  (one of them, "Answer in one sentence.", gets the first sentence only), 30% rendered with
  thinking on (the last answer opens with `<|channel>thought\\n...<channel|>`, a thought naming the
  entry and where it is documented), 30% with two or three questions about neighbouring entries
  of a page, a few with a greeting or thanks. Rendered with `chat_template.jinja`, tokenized as
  `minigemma chat` tokenizes; the loss counts the model's turns only.
- **Split**: by page, with the plain model's hash: {train['entries']:,} training entries in
  {train['conversations']:,} conversations ({train['tokens']:,} tokens, {train['model_turn_tokens']:,}
  in model turns); {held['entries']:,} held-out entries in {held['conversations']:,} conversations
  ({held['model_turn_tokens']:,} model-turn tokens), from pages that neither this model nor the plain
  one saw; they ship beside this card as `heldout_chat.jsonl`.
- **Licence of the text**: the Python documentation is © Python Software Foundation, PSF License
  Agreement (version 2). Model weights: Apache-2.0, as the rest of minigemma.

## Training

From the plain model's weights, {steps:,} steps of {hp['batch_size']} x {hp['seq_len']} tokens:
**{tokens_seen:,} tokens seen** ({tokens_seen / train['tokens']:.1f} passes over the training
conversations), in **{seconds / 60:.0f} minutes** on {hp['threads']} CPU thread(s) of a shared, busy
2-core machine (`nice -n 10`). The plain model's pipeline (`train_tiny.train`): AdamW (betas 0.9,
0.95), peak learning rate {hp['lr']:g} after {hp['warmup_steps']} warm-up steps, held, then decayed
linearly over the last {hp['decay_fraction']:.0%} of the steps to {hp['min_lr_fraction']:g} of it,
weight decay {hp['weight_decay']:g} on matrices, gradient clipping {hp['grad_clip']:g}, load-balancing
loss x {hp['aux_loss_weight']:g}, seed {hp['seed']}, corpus seed {hp['corpus_seed']}. The shipped run was
started for more steps and shortened (to 600 at step 100, to 500 at step 250) as the machine's load
allowed, each time before its learning rate began to decay: the schedule makes that exactly a run
of the final length (`tests/test_tiny_model.py::test_run_length_can_change_before_the_decay`).

{plot}## Evaluation (measured by minigemma on the shipped bf16 weights)

Loss of the model's turns in the {n['held_out_conversations']} held-out conversations
({n['held_out_model_turn_tokens']:,} tokens):

| model | cross-entropy (nats / token) |
| --- | --- |
| this model | **{n['held_out_ce']:.3f}** (perplexity {np.exp(n['held_out_ce']):.1f}) |
| the plain model it started from | {n['plain_model_held_out_ce']:.3f} |

Replies to {r['questions']} held-out questions, asked alone ({REPLY_TOKENS} new tokens at most), greedy
and sampled with Gemma's defaults (seed 0). Greedy decoding of a model this small falls into loops
more often, so sampling is its default:

| decoding | thinking | ended at `<turn|>` | opened the thinking channel | mean length (tokens) |
| --- | --- | --- | --- | --- |
| greedy | off | {r['ended_at_turn_end']} / {r['questions']} | {r['opened_thinking']} | {r['mean_new_tokens']:.0f} |
| greedy | on (`--think`) | {t['ended_at_turn_end']} / {t['questions']} | {t['opened_thinking']} | {t['mean_new_tokens']:.0f} |
| sampled | off | {rs['ended_at_turn_end']} / {rs['questions']} | {rs['opened_thinking']} | {rs['mean_new_tokens']:.0f} |
| sampled | on (`--think`) | {ts['ended_at_turn_end']} / {ts['questions']} | {ts['opened_thinking']} | {ts['mean_new_tokens']:.0f} |

A scripted chat, sampled (`printf '...' | minigemma chat --seed 0`):

```text
{n['transcript']}
```

With `--think`:

```text
{n['thinking_transcript']}
```

Known flaws: the corpus's thoughts put "a" before every kind of entry ("a attribute", "a
exception"), and the model writes them so too; its answers name plausible but often wrong
functions; greedy replies can loop until the token limit.

## Reproduce

```bash
apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
nohup nice -n 10 python -m weights_tools.train_chat --docs /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
    --work /tmp/chat-train --out minigemma/data/tiny-chat > /tmp/chat-train.log 2>&1 &
```

The run checkpoints every {hp['checkpoint_every']} steps; the same command resumes it. Deterministic
for a seed on one machine (CPU, float32, {hp['threads']} thread); `tests/test_tiny_chat.py` checks the
corpus, the loss mask, a few resumable steps, and this model's behaviour and logits.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.chat_model_card", description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--init", default="minigemma/data/tiny", help="the plain model it started from")
    args = p.parse_args(argv)
    n = write_model_card(args.model_dir, init=args.init)
    print(json.dumps({k: v for k, v in n.items() if "transcript" not in k}, indent=1))
    print(n["transcript"], n["thinking_transcript"], sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
