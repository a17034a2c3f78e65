"""Train an MTP assistant for the embedded model by distillation from the model itself.

    nohup python -m weights_tools.train_assistant --docs /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
        --work /tmp/assistant-train --out minigemma/data/tiny_assistant > /tmp/assistant-train.log 2>&1 &

The drafter is the reference's `Gemma4AssistantForCausalLM` (built with `kv_sharing_modes`
patched: DESIGN.md, "Known limits of the reference for the MTP assistant"), two layers (sliding,
full) at the target's width, its head and embedding table started from the target's. The target
(the embedded model, frozen, float32) reads windows of the training split of its own corpus;
every position p of a window is one drafting query, unrolled for `draft_steps` steps as at
inference, teacher-forced with the text:

    step 1:  input [target_embed(x[p]) ; h[p - 1]]       label: the target's distribution at p
    step j:  input [target_embed(x[p+j-1]) ; h'_{j-1}]    label: the target's distribution at p+j-1
    every step at position p, reading the target's keys/values before p (the sliding layer: the
    last window + 1 of them), as `minigemma/assistant/decoder.py` does at inference

Loss: cross-entropy against the target's softened distributions (distillation), summed over the
steps. Deterministic for a `--seed`, checkpointed every `--checkpoint-every` steps and resumed
when run again, as `train_tiny.py`. Export: bf16 `save_pretrained` (config.json, model.safetensors,
generation_config.json with `num_assistant_tokens`) and training_log.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from weights_tools import tiny_corpus, tiny_eval
from weights_tools.train_tiny import learning_rate, make_optimizer, resume, save_checkpoint

SLIDING, GLOBAL = "sliding_attention", "full_attention"
TARGET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minigemma", "data", "tiny")
CHECKPOINT = "assistant_checkpoint.pt"
NUM_ASSISTANT_TOKENS = 3  # drafts per round shipped in generation_config.json (measured: weights_tools/assistant_eval.py)


def training_defaults() -> dict:
    return {
        "seq_len": 128,  # two sliding windows of the target
        "batch_size": 8,
        "draft_steps": 3,
        "steps": 600,  # 4.9M token positions x 3 draft steps: 17.5 minutes on a busy 2-core machine
        "lr": 2e-3,
        "decay_fraction": 0.3,
        "min_lr_fraction": 0.1,
        "warmup_steps": 30,
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "checkpoint_every": 50,
        "log_every": 10,
        "seed": 0,
        "threads": 1,
    }


def assistant_config(target: dict) -> dict:
    """Two layers (sliding, full) at the target's width and attention shapes, no PLE / MoE."""
    keep = ("vocab_size", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "attention_k_eq_v",
            "sliding_window", "rope_parameters", "rms_norm_eps", "pad_token_id", "eos_token_id", "bos_token_id",
            "max_position_embeddings", "hidden_activation")
    text = {k: target[k] for k in keep if k in target}
    full = next(i for i, t in enumerate(target["layer_types"]) if t == GLOBAL)
    text.update(model_type="gemma4_text", intermediate_size=2 * target["hidden_size"], num_hidden_layers=2,
                layer_types=[SLIDING, GLOBAL], per_layer_config={"1": target["per_layer_config"][str(full)]},
                hidden_size_per_layer_input=0, vocab_size_per_layer_input=0, num_kv_shared_layers=2)
    return {"text_config": text, "backbone_hidden_size": target["hidden_size"], "use_ordered_embeddings": False}


def load_target():
    import torch
    from transformers import Gemma4ForCausalLM

    target = Gemma4ForCausalLM.from_pretrained(TARGET, dtype=torch.float32, attn_implementation="eager").eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def build_assistant(target, seed: int):
    import torch
    from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM

    with patched_kv_sharing():
        cfg = Gemma4AssistantConfig(**assistant_config(target.config.to_dict()))
        cfg._attn_implementation = "eager"
        cfg.text_config._attn_implementation = "eager"
        torch.manual_seed(seed)
        model = Gemma4AssistantForCausalLM(cfg)
    with torch.no_grad():  # start from the target's own table (the tied head) and final norm
        model.model.embed_tokens.weight.copy_(target.model.embed_tokens.weight)
        model.model.norm.weight.copy_(target.model.norm.weight)
    return model


def patched_kv_sharing():
    """The reference's `kv_sharing_modes` answering "every layer reuses" for all-shared configs."""
    import contextlib

    from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig

    original = Gemma4TextConfig.kv_sharing_modes

    def modes(self):
        if self.num_kv_shared_layers and self.num_kv_shared_layers == self.num_hidden_layers:
            return ["reuse"] * self.num_hidden_layers
        return original.fget(self)

    @contextlib.contextmanager
    def patch():
        Gemma4TextConfig.kv_sharing_modes = property(modes)
        try:
            yield
        finally:
            Gemma4TextConfig.kv_sharing_modes = original

    return patch()


def draft_masks(queries: int, keys: int, window: int, dtype):
    """Additive masks (1, 1, queries, keys) for queries at positions 1..queries: full layers see
    keys before the query; sliding layers the last window + 1 of them."""
    import torch

    q = torch.arange(1, queries + 1)[:, None]
    k = torch.arange(keys)[None, :]
    lowest = torch.finfo(dtype).min
    full = torch.where(k < q, 0.0, lowest).to(dtype)[None, None]
    sliding = torch.where((k < q) & (k >= q - window - 1), 0.0, lowest).to(dtype)[None, None]
    return {GLOBAL: full, SLIDING: sliding}


def distillation_loss(target, assistant, inputs, steps: int):
    """Sum over draft steps of the cross-entropy between the target's distribution and the drafter's."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = target(input_ids=inputs, use_cache=False, output_hidden_states=True, return_shared_kv_states=True)
        probs = out.logits.float().softmax(-1)  # (batch, seq, vocab)
        embeds = target.get_input_embeddings()(inputs)  # (batch, seq, hidden), scaled
    batch, seq = inputs.shape
    queries = seq - steps  # positions 1 .. seq - steps
    masks = draft_masks(queries, seq, assistant.config.text_config.sliding_window, torch.float32)
    masks = {k: v.expand(batch, 1, queries, seq) for k, v in masks.items()}
    positions = torch.arange(1, queries + 1)[None].expand(batch, queries)
    hidden = out.hidden_states[-1][:, :queries]  # h[p - 1] for p = 1 .. queries
    total, losses = 0.0, []
    for j in range(steps):
        token_embeds = embeds[:, 1 + j : 1 + j + queries]  # x[p + j]
        x = assistant.pre_projection(torch.cat([token_embeds, hidden], dim=-1))
        h = assistant.model(inputs_embeds=x, attention_mask=masks, position_ids=positions,
                            shared_kv_states=dict(out.shared_kv_states), use_cache=False,
                            output_hidden_states=True).last_hidden_state
        hidden = assistant.post_projection(h)
        logits = assistant.lm_head(h)
        label = probs[:, 1 + j : 1 + j + queries]  # the target's distribution at p + j
        loss = -(label * F.log_softmax(logits, -1)).sum(-1).mean()
        losses.append(loss.item())
        total = total + loss
    return total, losses


def train(target, tokens: np.ndarray, work: str, hp: dict, stop_after: int | None = None, quiet=False):
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(hp["threads"])
    torch.use_deterministic_algorithms(True)
    try:
        return _train(target, tokens, work, hp, stop_after, quiet)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(target, tokens, work, hp, stop_after, quiet):
    import torch

    from weights_tools.train_tiny import sample_batch

    assistant = build_assistant(target, hp["seed"])
    optimizer = make_optimizer(assistant, hp)
    data_rng = torch.Generator().manual_seed(hp["seed"])
    state = {"step": 0, "seconds": 0.0, "log": []}  # rows: step, loss, per-step losses, seconds
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, CHECKPOINT)
    state = resume(path, assistant, optimizer, data_rng, quiet) or state

    def save():
        save_checkpoint(path, assistant, optimizer, data_rng, state, hyperparameters=hp)

    data = torch.from_numpy(tokens.astype(np.int64))
    assistant.train()
    last = hp["steps"] if stop_after is None else min(hp["steps"], state["step"] + stop_after)
    started = time.perf_counter() - state["seconds"]
    while state["step"] < last:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, hp)
        inputs, _ = sample_batch(data, hp["batch_size"], hp["seq_len"], data_rng)
        loss, per_step = distillation_loss(target, assistant, inputs, hp["draft_steps"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(assistant.parameters(), hp["grad_clip"])
        optimizer.step()
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - started
        if state["step"] % hp["log_every"] == 0 or state["step"] == last:
            state["log"].append([state["step"], loss.item(), per_step, round(state["seconds"], 1)])
            if not quiet:
                steps = " ".join(f"{x:.3f}" for x in per_step)
                print(f"step {state['step']:5d}  loss {loss.item():.4f}  per draft step {steps}  "
                      f"{state['seconds'] / 60:.1f} min", flush=True)
        if state["step"] % hp["checkpoint_every"] == 0 or state["step"] == last:
            save()
    return assistant


def export(assistant, work: str, out: str, hp: dict) -> None:
    import torch

    os.makedirs(out, exist_ok=True)
    assistant = assistant.eval().to(torch.bfloat16)
    assistant.generation_config.num_assistant_tokens = NUM_ASSISTANT_TOKENS
    with patched_kv_sharing():
        assistant.save_pretrained(out)
    saved = torch.load(os.path.join(work, CHECKPOINT), weights_only=False)
    with open(os.path.join(out, "training_log.json"), "w") as f:
        json.dump({"hyperparameters": hp, "columns": ["step", "loss", "loss_per_draft_step", "seconds"],
                   "log": saved["state"]["log"]}, f, indent=1)


def prepare(docs: str, work: str) -> None:
    """The target's corpus split (the same documents held out) and its tokens, in `work`."""
    import sentencepiece as spm

    train_txt, held_txt = os.path.join(work, "train.txt"), os.path.join(work, "heldout.txt")
    if not os.path.exists(held_txt):
        tiny_corpus.write_splits(docs, train_txt, held_txt)
    if not os.path.exists(os.path.join(work, "train_tokens.npy")):
        with open(train_txt, encoding="utf-8") as f:
            text = f.read()
        sp = spm.SentencePieceProcessor(model_file=os.path.join(TARGET, "tokenizer.model"))
        np.save(os.path.join(work, "train_tokens.npy"), tiny_eval.encode_documents(text, sp).astype(np.uint16))


def main(argv=None) -> int:
    hp = training_defaults()
    p = argparse.ArgumentParser(prog="python -m weights_tools.train_assistant", description=__doc__.split("\n")[0],
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", help="the Python documentation's html/_sources directory (the target's corpus)")
    p.add_argument("--work", required=True, help="working directory: corpus tokens, checkpoint (resumed from)")
    p.add_argument("--out", help="write the finished assistant here (Hugging Face layout)")
    for name, value in hp.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    hp = {name: getattr(args, name) for name in hp}
    os.makedirs(args.work, exist_ok=True)
    if args.docs:
        prepare(args.docs, args.work)
    elif not os.path.exists(os.path.join(args.work, "train_tokens.npy")):
        p.error("--docs is needed the first time (to build the corpus tokens in --work)")
    tokens = np.load(os.path.join(args.work, "train_tokens.npy"))
    print(f"distilling on {len(tokens):,} tokens; {hp['steps']} steps of {hp['batch_size']} x {hp['seq_len']}", flush=True)
    assistant = train(load_target(), tokens, args.work, hp)
    if args.out:
        export(assistant, args.work, args.out, hp)
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
