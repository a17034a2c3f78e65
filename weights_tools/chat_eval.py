"""Measure a chat model with minigemma itself: the loss of its turns in held-out conversations,
and how its greedy replies end. Used by the chat model's card and by `tests/test_tiny_chat.py`.

Loss: nats per token over the model-turn tokens only (the same mask training used: role name,
answer, `<turn|>`), each conversation scored whole, from its `<bos>`.
"""

from __future__ import annotations

import json

import numpy as np

from weights_tools import chat_corpus
from weights_tools.tiny_eval import log_softmax


def read_conversations(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_turn_loss(model, conversations: list[dict], tokenizer=None) -> tuple[float, int]:
    """(nats per model-turn token, how many tokens) of a minigemma `Model` on `conversations`."""
    tokenizer = tokenizer or model.tokenizer
    nll, count = 0.0, 0
    for conversation in conversations:
        ids, mask = chat_corpus.encode(conversation, tokenizer)
        ids, scored = np.array(ids), np.flatnonzero(np.array(mask)[1:]) + 1  # target positions
        logp = log_softmax(model.forward(ids).astype(np.float64))  # (seq, vocab)
        nll -= logp[scored - 1, ids[scored]].sum()
        count += len(scored)
    return nll / count, count


def first_questions(conversations: list[dict]) -> list[tuple[str, bool]]:
    """(first question, thinking?) of each conversation that opens with a documentation question."""
    greetings = set(chat_corpus.GREETINGS)
    return [(c["turns"][0][0], c["thinking"]) for c in conversations if c["turns"][0][0] not in greetings]


def reply_endings(model, questions: list[str], thinking: bool, max_new_tokens: int, sampling=None) -> dict:
    """Replies to each question alone (greedy, or with `sampling`): how many ended at `<turn|>`
    (not at the token limit), how many opened the thinking channel, and the mean length in tokens."""
    from minigemma.generate.loop import generate_ids
    from minigemma.generate.sampling import Sampling

    tokenizer = model.tokenizer
    end, channel = tokenizer.token_id("eot_token"), tokenizer.token_id("soc_token")
    switches = {"enable_thinking": True} if thinking else {}
    ended = opened = 0
    lengths = []
    for q in questions:
        ids = tokenizer.encode_chat([{"role": "user", "content": q}], add_generation_prompt=True, **switches)
        new = list(generate_ids(model, ids, sampling or Sampling(temperature=0.0), max_new_tokens, frozenset({end})))
        ended += new[-1] == end
        opened += channel in new
        lengths.append(len(new))
    return {"questions": len(questions), "ended_at_turn_end": ended, "opened_thinking": opened,
            "mean_new_tokens": float(np.mean(lengths))}
