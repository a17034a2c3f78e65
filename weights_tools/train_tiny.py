"""Train minigemma's embedded model: a ~6M-parameter Gemma 4 with every text feature on.

One command, run in the background; it resumes where it stopped when run again:

    pip install protobuf matplotlib   # export only: tokenizer.json conversion, the loss plot
    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    nohup python -m weights_tools.train_tiny --docs /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
        --work /tmp/tiny-train --out minigemma/data/tiny > /tmp/tiny-train.log 2>&1 &

The model is the PyTorch reference itself, `transformers.Gemma4ForCausalLM`, configured so that
every feature minigemma implements is exercised by trained weights (`TINY_CONFIG` below). Stages,
each skipped when its output already exists in `--work`:

1. corpus: the Python documentation's prose, split by document into train / held-out
   (`tiny_corpus.py`);
2. tokenizer: SentencePiece BPE on the training split, Gemma 4's special tokens at the front;
3. training: AdamW (warm-up, stable, decay) on next-token cross-entropy plus a load-balancing
   loss for the experts, checkpointed every `--checkpoint-every` steps (model, optimiser, data sampler, step, log);
   a stopped run picks up from the last checkpoint and continues exactly as if never stopped;
4. export: bf16 safetensors and config.json via `save_pretrained`, the tokenizer files in
   Hugging Face layout, a held-out text sample, the training log, then the model card
   (`model_card.py`, which measures the shipped model with minigemma itself).

Everything is deterministic for a `--seed`: the same command gives the same weights. Before the
learning rate starts to decay, a resumed run may also be given another `--steps` and still equal a
fresh run of that length (the shipped run was lengthened so, from 900 to 1200 steps, as the
machine's load allowed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

from weights_tools import tiny_corpus, tiny_eval

SLIDING, GLOBAL = "sliding_attention", "full_attention"

# The shipped model. Six layers: S S G S S G, the last one global as Gemma 4 requires; the last
# two reuse the keys/values of layers 3 (sliding) and 2 (global), and get the double-wide MLP.
TINY_CONFIG = {
    "model_type": "gemma4_text",
    "vocab_size": tiny_corpus.VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,  # dense MLP, the MoE's shared expert; 512 on KV-shared layers
    "num_hidden_layers": 6,
    "layer_types": [SLIDING, SLIDING, GLOBAL, SLIDING, SLIDING, GLOBAL],
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # sliding layers: GQA, two query heads per KV head
    "head_dim": 32,
    "global_head_dim": 64,  # global layers: wider heads...
    "num_global_key_value_heads": 1,  # ...and a single KV head, whose keys are also its values:
    "attention_k_eq_v": True,  # (the reference reads num_global_key_value_heads only with k_eq_v)
    "sliding_window": 64,  # shorter than the training context, so the window really cuts
    "rope_parameters": {
        SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
        GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
    },
    "hidden_size_per_layer_input": 64,  # Per-Layer Embeddings
    "vocab_size_per_layer_input": tiny_corpus.VOCAB_SIZE,
    "num_kv_shared_layers": 2,
    "use_double_wide_mlp": True,
    "enable_moe_block": True,
    "num_experts": 8,
    "top_k_experts": 2,
    "moe_intermediate_size": 128,  # 8 experts of this width, 2 active per token
    "final_logit_softcapping": 30.0,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
}

# A model small enough to train a few steps in a test, with the same features switched on.
SMOKE_CONFIG = {
    **TINY_CONFIG,
    "hidden_size": 32, "intermediate_size": 64, "head_dim": 8, "global_head_dim": 16,
    "hidden_size_per_layer_input": 8, "moe_intermediate_size": 16, "sliding_window": 8,
}


def training_defaults() -> dict:
    """Hyper-parameters of the shipped run (all overridable on the command line)."""
    return {
        "seq_len": 256,  # training context: four sliding windows
        "batch_size": 8,  # small batches: more updates per token, which a short run needs most
        "steps": 1200,  # 2.5M tokens, 1.1 passes over the training split: 72 minutes on a busy machine
        "lr": 3e-3,
        "decay_fraction": 0.3,  # the last 30% of the steps decay the learning rate...
        "min_lr_fraction": 0.1,  # ...linearly, to lr * this
        "warmup_steps": 100,
        "weight_decay": 0.01,  # on matrices only; norm weights and scales are left alone
        "grad_clip": 1.0,
        "aux_loss_weight": 0.01,  # load balancing (Switch Transformer style)
        "checkpoint_every": 100,
        "log_every": 10,
        "seed": 0,
        "threads": 1,  # one thread: with the cores shared, more threads spin-wait and run slower
    }


# --------------------------------------------------------------------------------------------
# data


def encode_documents(text_path: str, tokenizer_path: str) -> np.ndarray:
    """Token ids of a split: every document as `<bos> text <eos>`, concatenated. (tokens,) uint16"""
    import sentencepiece as spm

    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    return tiny_eval.encode_documents(text, spm.SentencePieceProcessor(model_file=tokenizer_path)).astype(np.uint16)


def sample_batch(tokens, batch_size: int, seq_len: int, generator, mask=None):
    """Random windows of seq_len + 1 tokens: inputs are the first seq_len, targets the last. With a
    loss `mask` (tokens,) (the chat model's: 1 on model turns), masked-out targets become -100,
    which cross-entropy ignores."""
    import torch

    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])  # (batch, seq+1)
    targets = windows[:, 1:]
    if mask is not None:
        keep = torch.stack([mask[s + 1 : s + seq_len + 1] for s in starts.tolist()]).bool()  # (batch, seq)
        targets = torch.where(keep, targets, torch.full_like(targets, -100))
    return windows[:, :-1], targets


# --------------------------------------------------------------------------------------------
# model and losses


def build_model(config: dict, seed: int):
    import torch
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    torch.manual_seed(seed)
    text_config = Gemma4TextConfig(**{k: v for k, v in config.items() if k != "model_type"})
    text_config._attn_implementation = "sdpa"
    return Gemma4ForCausalLM(text_config)


class RouterRecorder:
    """Forward hooks on every MoE router: keeps each call's probabilities (tokens, experts) and
    chosen experts (tokens, k) so the load-balancing loss and the load table can use them."""

    def __init__(self, model):
        self.calls = []
        self.handles = [
            layer.router.register_forward_hook(lambda _m, _i, out: self.calls.append((out[0], out[2])))
            for layer in model.model.layers
            if getattr(layer, "enable_moe_block", False)
        ]

    def pop(self):
        calls, self.calls = self.calls, []
        return calls


def load_balancing_loss(calls, num_experts: int):
    """Switch-Transformer auxiliary loss, averaged over MoE layers: E * sum_e f_e * P_e, where f_e
    is the fraction of routing slots that chose expert e and P_e its mean router probability.
    It is 1 when routing is uniform and grows as experts are favoured, so no expert starves."""
    import torch

    losses = []
    for probs, top_k_index in calls:
        slots = torch.nn.functional.one_hot(top_k_index, num_experts).float().sum(dim=1)  # (tokens, experts)
        f = slots.mean(dim=0) / top_k_index.shape[-1]
        losses.append(num_experts * (f * probs.mean(dim=0)).sum())
    return torch.stack(losses).mean()


def learning_rate(step: int, hp: dict) -> float:
    """Warm-up, stable, decay: linear warm-up to lr, constant, then linear decay to
    lr * min_lr_fraction over the last `decay_fraction` of the steps. Until the decay starts the
    schedule does not depend on the total number of steps, so a run's length can still be
    changed (`--steps` on resume) and give exactly what a run of that length from scratch gives."""
    if step < hp["warmup_steps"]:
        return hp["lr"] * (step + 1) / hp["warmup_steps"]
    decay_steps = max(1, round(hp["decay_fraction"] * hp["steps"]))
    into_decay = step - (hp["steps"] - decay_steps)
    if into_decay < 0:
        return hp["lr"]
    return hp["lr"] * (1 - (1 - hp["min_lr_fraction"]) * (into_decay + 1) / decay_steps)


def make_optimizer(model, hp: dict):
    import torch

    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": hp["weight_decay"]}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp["lr"], betas=(0.9, 0.95))


def load_initial_weights(model, directory: str) -> None:
    """Start from a saved model (its bf16 weights, widened to float32); the tied head follows the
    embedding, so it is the one tensor the file may leave out."""
    import torch
    from safetensors.torch import load_file

    state = {k: v.to(torch.float32) for k, v in load_file(os.path.join(directory, "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise ValueError(f"{directory}: weights do not fit the model (missing {missing}, unexpected {unexpected})")


# --------------------------------------------------------------------------------------------
# training with checkpoint and resume

CHECKPOINT = "checkpoint.pt"


def resume(path: str, model, optimizer, data_rng, quiet: bool) -> dict | None:
    """Load a training checkpoint into model, optimizer and data generator; its state, or None
    when there is none yet."""
    import torch

    if not os.path.exists(path):
        return None
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    data_rng.set_state(saved["data_rng"])
    if not quiet:
        print(f"resumed from {path} at step {saved['state']['step']}", flush=True)
    return saved["state"]


def save_checkpoint(path: str, model, optimizer, data_rng, state: dict, **extra) -> None:
    """What `resume` reads, plus `extra` entries; atomic: a kill mid-save leaves the previous one intact."""
    import torch

    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "data_rng": data_rng.get_state(),
                "state": state, **extra}, tmp)
    os.replace(tmp, path)


def train(config: dict, tokens: np.ndarray, work: str, hp: dict, stop_after: int | None = None, quiet=False,
          mask: np.ndarray | None = None, init: str | None = None):
    """Train until hp["steps"] (or `stop_after` steps, to simulate an interruption), resuming from
    `work/checkpoint.pt` when it exists. Returns the model. `mask` (tokens,): the loss counts only
    targets where it is 1; `init`: a checkpoint directory whose weights the model starts from
    (fine-tuning, as the chat model starts from the plain one)."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(hp["threads"])
    torch.use_deterministic_algorithms(True)
    try:
        return _train(config, tokens, work, hp, stop_after, quiet, mask, init)
    finally:  # leave the process as we found it (tests run other things after this)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(config, tokens, work, hp, stop_after, quiet, mask=None, init=None):
    import torch

    model = build_model(config, hp["seed"])
    if init is not None:
        load_initial_weights(model, init)
    optimizer = make_optimizer(model, hp)
    data_rng = torch.Generator().manual_seed(hp["seed"])
    state = {"step": 0, "seconds": 0.0, "log": []}  # log rows: step, loss, aux loss, tokens seen, seconds

    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, CHECKPOINT)
    state = resume(path, model, optimizer, data_rng, quiet) or state

    def save():
        save_checkpoint(path, model, optimizer, data_rng, state, config=config, hyperparameters=hp)

    data = torch.from_numpy(tokens.astype(np.int64))
    loss_mask = None if mask is None else torch.from_numpy(mask.astype(np.uint8))
    recorder = RouterRecorder(model)
    model.train()
    last = hp["steps"] if stop_after is None else min(hp["steps"], state["step"] + stop_after)
    started = time.perf_counter() - state["seconds"]
    while state["step"] < last:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, hp)
        inputs, targets = sample_batch(data, hp["batch_size"], hp["seq_len"], data_rng, loss_mask)
        logits = model(input_ids=inputs, use_cache=False).logits  # (batch, seq, vocab)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        aux = load_balancing_loss(recorder.pop(), config["num_experts"])
        optimizer.zero_grad(set_to_none=True)
        (ce + hp["aux_loss_weight"] * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - started
        if state["step"] % hp["log_every"] == 0 or state["step"] == last:
            tokens_seen = state["step"] * hp["batch_size"] * hp["seq_len"]
            state["log"].append([state["step"], ce.item(), aux.item(), tokens_seen, round(state["seconds"], 1)])
            if not quiet:
                rate = tokens_seen / max(state["seconds"], 1e-9)
                print(f"step {state['step']:5d}  loss {ce.item():.4f}  aux {aux.item():.4f}  "
                      f"lr {learning_rate(step, hp):.2e}  {rate:.0f} tok/s  {state['seconds'] / 60:.1f} min", flush=True)
        if state["step"] % hp["checkpoint_every"] == 0 or state["step"] == last:
            save()
    return model


# --------------------------------------------------------------------------------------------
# export


def export(model, work: str, out: str, hp: dict) -> None:
    """Write the Hugging Face directory: bf16 weights, config, tokenizer, held-out sample, log."""
    import torch

    from weights_tools.tiny_tokenizer import write_hf_tokenizer

    os.makedirs(out, exist_ok=True)
    model = model.eval().to(torch.bfloat16)
    model.save_pretrained(out)  # config.json, generation_config.json, model.safetensors (tied head dropped)
    write_hf_tokenizer(os.path.join(work, "tokenizer.model"), out)
    shutil.copy(os.path.join(work, HELD_OUT_SAMPLE), os.path.join(out, HELD_OUT_SAMPLE))
    saved = torch.load(os.path.join(work, CHECKPOINT), weights_only=False)
    counts = np.bincount(np.load(os.path.join(work, "train_tokens.npy")), minlength=model.config.vocab_size)
    with open(os.path.join(out, "training_log.json"), "w") as f:
        json.dump({"hyperparameters": hp, "columns": ["step", "loss", "aux_loss", "tokens_seen", "seconds"],
                   "log": saved["state"]["log"],
                   "train_token_counts": counts.tolist()},  # the unigram baseline's statistics
                  f, indent=1)


HELD_OUT_SAMPLE = tiny_corpus.HELD_OUT_SAMPLE  # the model card reads it from tiny_corpus too
HELD_OUT_SAMPLE_CHARS = 16_000  # the start of the held-out split, shipped for the tests (~5k tokens)


def prepare(docs: str, work: str) -> None:
    """Corpus splits and tokenizer in `work`, unless they are there already."""
    train_txt, held_txt = os.path.join(work, "train.txt"), os.path.join(work, "heldout.txt")
    if not os.path.exists(held_txt):
        n_train, n_held = tiny_corpus.write_splits(docs, train_txt, held_txt)
        print(f"corpus: {n_train} training documents, {n_held} held out", flush=True)
    with open(held_txt, encoding="utf-8") as f:
        held_out = f.read()
    cut = held_out.rindex("\n\n", 0, HELD_OUT_SAMPLE_CHARS)  # end on a paragraph break
    with open(os.path.join(work, HELD_OUT_SAMPLE), "w", encoding="utf-8") as f:
        f.write(held_out[:cut] + "\n")
    if not os.path.exists(os.path.join(work, "tokenizer.model")):
        tiny_corpus.train_tokenizer(train_txt, os.path.join(work, "tokenizer"))
        print("tokenizer: trained", flush=True)
    if not os.path.exists(os.path.join(work, "train_tokens.npy")):
        np.save(os.path.join(work, "train_tokens.npy"), encode_documents(train_txt, os.path.join(work, "tokenizer.model")))


def main(argv=None) -> int:
    hp = training_defaults()
    p = argparse.ArgumentParser(prog="python -m weights_tools.train_tiny", description=__doc__.split("\n")[0],
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", help="the Python documentation's html/_sources directory (the corpus)")
    p.add_argument("--work", required=True, help="working directory: corpus, tokenizer, checkpoint (resumed from)")
    p.add_argument("--out", help="write the finished model here (Hugging Face layout) and its model card")
    p.add_argument("--smoke", action="store_true", help="train the tiny SMOKE_CONFIG model (for tests)")
    for name, value in hp.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    hp = {name: getattr(args, name) for name in hp}
    os.makedirs(args.work, exist_ok=True)
    if args.docs:
        prepare(args.docs, args.work)
    elif not os.path.exists(os.path.join(args.work, "train_tokens.npy")):
        p.error("--docs is needed the first time (to build the corpus and tokenizer in --work)")

    config = SMOKE_CONFIG if args.smoke else TINY_CONFIG
    tokens = np.load(os.path.join(args.work, "train_tokens.npy"))
    print(f"training on {len(tokens):,} tokens; {hp['steps']} steps of {hp['batch_size']} x {hp['seq_len']}", flush=True)
    model = train(config, tokens, args.work, hp)
    if args.out:
        export(model, args.work, args.out, hp)
        from weights_tools.model_card import write_model_card

        write_model_card(args.out, args.work)
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
