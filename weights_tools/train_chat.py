"""Train minigemma's embedded chat model: the plain embedded model, fine-tuned on conversations.

One command, run in the background; it resumes where it stopped when run again:

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    nohup nice -n 10 python -m weights_tools.train_chat --docs /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
        --work /tmp/chat-train --out minigemma/data/tiny-chat > /tmp/chat-train.log 2>&1 &

The same architecture, tokenizer and pipeline as the plain model (`train_tiny.py`: the reference
`Gemma4ForCausalLM` with `TINY_CONFIG`, AdamW with warm-up / stable / decay, the load-balancing
loss, checkpoints every `--checkpoint-every` steps and exact resumption, one thread, a seed), with
two differences:

1. it starts from the plain model's weights (`--init`, default `minigemma/data/tiny`): that model
   already reads and writes the documentation's English, so the hour goes to learning the turns;
2. its corpus is conversations (`chat_corpus.py`): questions about the Python documentation's
   functions, classes, modules and sections answered with the documentation's own words, rendered
   through the model's chat template, and the loss counts the model's turns only.

Stages, each skipped when its output already exists in `--work`: corpus (token streams and loss
masks of the training and held-out conversations), training, export (bf16 weights via
`save_pretrained`, the plain model's tokenizer files unchanged, a generation_config.json with
Gemma's sampling defaults, the held-out conversations, the log), then the model card
(`chat_model_card.py`, which measures the shipped model with minigemma itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

from weights_tools import chat_corpus
from weights_tools.train_tiny import SMOKE_CONFIG, TINY_CONFIG, train, training_defaults

DEFAULT_INIT = os.path.join(os.path.dirname(__file__), "..", "minigemma", "data", "tiny")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json")
# Gemma 4's sampling defaults, as its checkpoints' generation_config.json ship them
GENERATION_CONFIG = {"do_sample": True, "temperature": 1.0, "top_k": 64, "top_p": 0.95}
HELD_OUT_CONVERSATIONS = "heldout_chat.jsonl"


def chat_defaults() -> dict:
    """Hyper-parameters of the shipped run: train_tiny's, with a fine-tuning schedule."""
    return {
        **training_defaults(),
        "steps": 500,  # 1M tokens, 1.3 passes over the training conversations; ~60 minutes on a busy machine
        "lr": 1e-3,  # a third of the plain model's peak: it starts trained
        "warmup_steps": 30,
        "checkpoint_every": 50,
        "corpus_seed": 0,
    }


def prepare(docs: str, work: str, init: str, seed: int) -> None:
    """Token streams, loss masks and held-out conversations in `work`, unless they are there."""
    if os.path.exists(os.path.join(work, "train_tokens.npy")):
        return
    from minigemma.generate.tokenizer import load_tokenizer

    corpus = chat_corpus.build(docs, load_tokenizer(init), seed)
    for split, part in corpus.items():
        np.save(os.path.join(work, f"{split}_mask.npy"), part["mask"])
        with open(os.path.join(work, f"{split}_chat.jsonl"), "w", encoding="utf-8") as f:
            for conversation in part["conversations"]:
                f.write(json.dumps(conversation, ensure_ascii=False) + "\n")
        print(f"corpus {split}: {part['entries']} entries, {len(part['conversations'])} conversations, "
              f"{len(part['tokens']):,} tokens, {int(part['mask'].sum()):,} in model turns", flush=True)
    summary = {split: {"entries": part["entries"], "conversations": len(part["conversations"]),
                       "tokens": len(part["tokens"]), "model_turn_tokens": int(part["mask"].sum())}
               for split, part in corpus.items()}
    with open(os.path.join(work, "corpus.json"), "w") as f:
        json.dump(summary, f, indent=1)
    np.save(os.path.join(work, "heldout_tokens.npy"), corpus["heldout"]["tokens"])
    np.save(os.path.join(work, "train_tokens.npy"), corpus["train"]["tokens"])  # last: marks the stage done


def export(model, work: str, out: str, init: str, hp: dict) -> None:
    """The Hugging Face directory: bf16 weights and config, the plain model's tokenizer files,
    Gemma's sampling defaults, the held-out conversations and the training log."""
    import torch

    from weights_tools.train_tiny import CHECKPOINT

    os.makedirs(out, exist_ok=True)
    model = model.eval().to(torch.bfloat16)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(init, name), os.path.join(out, name))
    with open(os.path.join(out, "generation_config.json")) as f:
        generation = json.load(f)
    eot = json.load(open(os.path.join(init, "tokenizer_config.json")))["added_tokens_decoder"]
    end_of_turn = next(int(i) for i, t in eot.items() if t["content"] == "<turn|>")
    generation.update(GENERATION_CONFIG, eos_token_id=[generation["eos_token_id"], end_of_turn])
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
    shutil.copy(os.path.join(work, "heldout_chat.jsonl"), os.path.join(out, HELD_OUT_CONVERSATIONS))
    saved = torch.load(os.path.join(work, CHECKPOINT), weights_only=False)
    with open(os.path.join(work, "corpus.json")) as f:
        corpus = json.load(f)
    with open(os.path.join(out, "training_log.json"), "w") as f:
        json.dump({"hyperparameters": hp, "corpus": corpus, "initial_weights": "minigemma/data/tiny",
                   "columns": ["step", "loss", "aux_loss", "tokens_seen", "seconds"], "log": saved["state"]["log"]},
                  f, indent=1)


def main(argv=None) -> int:
    hp = chat_defaults()
    p = argparse.ArgumentParser(prog="python -m weights_tools.train_chat", description=__doc__.split("\n")[0],
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", help="the Python documentation's html/_sources directory (the corpus)")
    p.add_argument("--work", required=True, help="working directory: corpus, checkpoint (resumed from)")
    p.add_argument("--out", help="write the finished model here (Hugging Face layout) and its model card")
    p.add_argument("--init", default=os.path.normpath(DEFAULT_INIT), help="the model to start from (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="train the tiny SMOKE_CONFIG model from scratch (for tests)")
    for name, value in hp.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    hp = {name: getattr(args, name) for name in hp}
    os.makedirs(args.work, exist_ok=True)
    if args.docs:
        prepare(args.docs, args.work, args.init, hp["corpus_seed"])
    elif not os.path.exists(os.path.join(args.work, "train_tokens.npy")):
        p.error("--docs is needed the first time (to build the corpus in --work)")

    tokens = np.load(os.path.join(args.work, "train_tokens.npy"))
    mask = np.load(os.path.join(args.work, "train_mask.npy"))
    print(f"training on {len(tokens):,} tokens ({int(mask.sum()):,} in model turns); "
          f"{hp['steps']} steps of {hp['batch_size']} x {hp['seq_len']}", flush=True)
    config, init = (SMOKE_CONFIG, None) if args.smoke else (TINY_CONFIG, args.init)
    model = train(config, tokens, args.work, hp, mask=mask, init=init)
    if args.out:
        export(model, args.work, args.out, args.init, hp)
        if not args.smoke:
            from weights_tools.chat_model_card import write_model_card

            write_model_card(args.out, args.work, args.init)
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
