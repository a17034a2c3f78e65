"""Measure a model with minigemma itself: held-out cross-entropy, a unigram baseline, expert load,
greedy continuations. Used by the model card and by `tests/test_tiny_model.py`.

Cross-entropy is in nats per predicted token, over non-overlapping windows of the training context
(each window's first token has no prediction: it is context only, as in training).
"""

from __future__ import annotations

import numpy as np

from weights_tools import tiny_corpus


def encode_documents(text: str, sp) -> np.ndarray:
    """Every document as `<bos> text <eos>`, concatenated, as training saw them. (tokens,) int64"""
    docs = tiny_corpus.split_documents(text)
    return np.array([i for ids in sp.encode(docs) for i in (sp.bos_id(), *ids, sp.eos_id())], dtype=np.int64)


def windows(tokens: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """Non-overlapping windows of seq_len tokens; a shorter tail (if at least 2 tokens) is kept."""
    out = [tokens[i : i + seq_len] for i in range(0, len(tokens), seq_len)]
    return [w for w in out if len(w) >= 2]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def evaluate(model, tokens: np.ndarray, seq_len: int):
    """Returns (cross-entropy in nats per token, expert load) of a minigemma `Model` on `tokens`.

    Expert load: (moe layers, experts) fraction of the routing slots (tokens x top-k) each expert
    received, read from the `layers.{i}.moe.router.top_k_index` step of the forward pass."""
    cfg = model.config.text
    chosen = {}  # layer -> list of (tokens, k) expert indices

    def tap(name, value):
        if name.endswith(".moe.router.top_k_index"):
            chosen.setdefault(int(name.split(".")[1]), []).append(value)

    nll, count = 0.0, 0
    for window in windows(tokens, seq_len):
        # `_forward_one` with a tap: the named steps of one forward pass (the public `trace` lands later)
        logp = log_softmax(model._forward_one(window, tap=tap).astype(np.float64))  # (seq, vocab)
        nll -= logp[np.arange(len(window) - 1), window[1:]].sum()
        count += len(window) - 1
    load = None
    if cfg.enable_moe_block:
        load = np.stack(
            [np.bincount(np.concatenate(chosen[i]).ravel(), minlength=cfg.num_experts) for i in sorted(chosen)]
        ).astype(np.float64)
        load /= load.sum(axis=1, keepdims=True)
    return nll / count, load


def predicted_targets(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """The tokens `evaluate` scores: every window's tokens but its first."""
    return np.concatenate([w[1:] for w in windows(tokens, seq_len)])


def unigram_cross_entropy(targets: np.ndarray, counts: np.ndarray) -> float:
    """Cross-entropy of a unigram model with add-one smoothed `counts` (vocab,) on `targets`."""
    probs = (counts + 1.0) / (counts.sum() + len(counts))
    return float(-np.log(probs[targets]).mean())


def unigram_entropy(targets: np.ndarray) -> float:
    """The best any unigram model can do on `targets`: the entropy of their own frequencies."""
    freq = np.bincount(targets).astype(np.float64)
    freq = freq[freq > 0] / len(targets)
    return float(-(freq * np.log(freq)).sum())


def greedy(model, prompt_ids, max_new_tokens: int, stop_ids=()) -> list[int]:
    """Greedy continuation by re-running the whole sequence each step (no KV cache): simple, and
    exactly what a cache must reproduce."""
    ids = list(prompt_ids)
    new = []
    for _ in range(max_new_tokens):
        next_id = int(np.argmax(model.forward(np.array(ids))[-1]))
        new.append(next_id)
        ids.append(next_id)
        if next_id in stop_ids:
            break
    return new
