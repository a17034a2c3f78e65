"""Speculative decoding with a multi-token-prediction assistant (mirrors
`GenerationMixin._assisted_decoding` driving `SinglePositionMultiTokenCandidateGenerator`).

On a CPU a decode step is bound by reading the weights: feeding the target 1 token or 5 costs
about the same. So a cheap drafter proposes k tokens, the target checks them all in one pass,
and every draft it agrees with is a token gained almost for free:

    prefill the prompt; t = first token; h = target's final hidden state before t
    repeat:
        d1..dk  = assistant drafts from (t, h), reading the target's cache     assistant/
        logits  = target.extend([t, d1..dk])        one pass: k + 1 positions
        accept the longest agreeing prefix d1..dn, plus the target's own next token:
            greedy    dn+1 = argmax of the target where the drafts stop agreeing
            sampling  the speculative-sampling rule (below): the output is distributed
                      exactly as the target's own samples
        roll the cache back by the k - n rejected drafts (ring buffers included)
        t = that next token; h = the target's hidden state before it

Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): draft d ~ q (the drafter's
distribution, with the same temperature / top-k / top-p), accept it with probability
min(1, p(d) / q(d)) (p: the target's); at the first rejection draw from max(0, p - q),
renormalised; if all k are accepted draw one more from the target's next p. For every token,
P(out = x) = p(x).

The number of drafts per round is fixed: the assistant's `num_assistant_tokens`
(generation_config.json), or the caller's `draft_tokens`. Unlike the reference, whose drafter
after a round with rejections still reads one rejected key (full layers) or all of them (sliding
layers), the drafter here reads the target's cache after the rollback: exactly the accepted text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..assistant.decoder import kv_producers, sliding_lookback
from ..errors import InputError
from ..text.ops import no_tap, softmax
from .sampling import Sampling, filtered_logits, sample

DEFAULT_DRAFT_TOKENS = 4  # when the assistant's generation_config.json names none


@dataclass
class SpeculationStats:
    """What the rounds did: the acceptance rate, and how many drafts each round kept."""

    drafted: int = 0
    accepted: int = 0
    accepted_per_round: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def draft_tokens_for(assistant, draft_tokens: int | None) -> int:
    k = draft_tokens if draft_tokens is not None else assistant.num_assistant_tokens or DEFAULT_DRAFT_TOKENS
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"draft_tokens: expected an integer >= 1, found {k!r}")
    return int(k)


def lookback_for(model, assistant) -> int:
    """Positions the target's rings must keep beyond their window, for the drafter's sliding layers."""
    need = sliding_lookback(assistant.config.text)
    producer = kv_producers(model.config.text).get("sliding_attention")
    return max(0, need - (model.config.text.attention_window - 1)) if producer is not None else 0


def check_lookback(model, assistant, cache) -> None:
    producer = kv_producers(model.config.text).get("sliding_attention")
    need = sliding_lookback(assistant.config.text)
    if producer is not None and cache.layers[producer.index].capacity < need:
        raise ValueError(
            f"cache: its sliding rings keep {cache.layers[producer.index].capacity} positions, the assistant reads "
            f"{need}; make it with model.new_cache(lookback=lookback_for(model, assistant))"
        )


def extend_with_hidden(model, ids: np.ndarray, cache, soft=(), keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`model.extend`, also returning the final-normed hidden states (seq, hidden) the drafter reads
    (with `keep`: of the last `keep` positions only)."""
    seen = {}

    def tap(name, value):
        if name == "final_norm":
            seen["h"] = value

    logits = model.extend(ids, cache, soft, keep=keep, tap=tap)
    return logits, seen["h"]


def target_kv(model, cache) -> dict:
    """Layer type -> (keys, values, positions) the target's producer layer of that type holds."""
    return {t: cache.layers[spec.index].held() for t, spec in kv_producers(model.config.text).items()}


def draft(model, assistant, token: int, hidden: np.ndarray, cache, k: int, choose, tap=no_tap):
    """k draft tokens after `token` (not yet in the cache), from the target's hidden state before it.
    `choose(logits) -> (token, q)`: argmax, or a draw with the distribution q it was drawn from."""
    position, kv = cache.length, target_kv(model, cache)
    tokens, qs = [], []
    for _ in range(k):
        embedding = model.embed(np.array([token]))[0][0]  # (backbone,): the target's scaled embedding
        logits, hidden = assistant.step(embedding, hidden, position, kv, tap)
        token, q = choose(logits)
        tokens.append(token)
        qs.append(q)
    return tokens, qs


def accept_greedy(drafts: list[int], target_logits: np.ndarray) -> list[int]:
    """The target's argmax at each of the k + 1 positions; drafts kept while they equal it."""
    choices = np.argmax(target_logits, axis=-1)
    n = 0
    while n < len(drafts) and drafts[n] == choices[n]:
        n += 1
    return [int(t) for t in drafts[:n]] + [int(choices[n])]


def accept_sampling(drafts: list[int], qs: list[np.ndarray], ps: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """The speculative-sampling rule. `qs[i]`: the drafter's distribution d_i was drawn from;
    `ps[i]`: the target's at that position (k + 1 of them). Returns accepted drafts + one token."""
    for i, (d, q) in enumerate(zip(drafts, qs)):
        p = ps[i]
        if rng.random() < min(1.0, p[d] / q[d]):
            continue
        residual = np.maximum(p - q, 0.0)  # what p has that q over-proposed away from
        total = residual.sum()
        return [int(t) for t in drafts[:i]] + [draw(residual / total if total > 0 else p, rng)]
    return [int(t) for t in drafts] + [draw(ps[len(drafts)], rng)]


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token from a probability vector, by inverse CDF (as `sampling.sample`)."""
    cumulative = np.cumsum(probs)
    token = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(token, int(np.flatnonzero(probs)[-1]))


def distribution(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """The distribution `sampling.sample` draws from, float64 (vocab,)."""
    return softmax(filtered_logits(logits, s).astype(np.float64))


def speculative_ids(model, assistant, ids, sampling: Sampling, max_new_tokens: int, stop_ids=frozenset(),
                    cache=None, soft=(), rng=None, draft_tokens: int | None = None,
                    stats: SpeculationStats | None = None) -> Iterator[int]:
    """`loop.generate_ids` with an assistant: the same tokens for greedy decoding, the same
    distribution for sampling. A `cache` passed in must keep `lookback_for(model, assistant)`
    extra positions (`model.new_cache(lookback=lookback)`); afterwards it holds every token but the last
    yielded, as `generate_ids` leaves it. Arguments are checked now, not at the first token."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise InputError("prompt: empty, expected at least one token")
    assistant.check_target(model.config.text)
    k_max = draft_tokens_for(assistant, draft_tokens)
    cache = model.new_cache(lookback=lookback_for(model, assistant)) if cache is None else cache
    check_lookback(model, assistant, cache)
    rng = np.random.default_rng(sampling.seed) if rng is None else rng
    stats = SpeculationStats() if stats is None else stats
    return _rounds(model, assistant, ids, sampling, max_new_tokens, stop_ids, cache, soft, rng, k_max, stats)


def _rounds(model, assistant, ids, sampling, max_new_tokens, stop_ids, cache, soft, rng, k_max, stats) -> Iterator[int]:
    context = model.config.text.max_position_embeddings
    logits, h = extend_with_hidden(model, ids, cache, soft, keep=1)  # the prompt: its last position matters
    token, hidden = sample(logits[-1], sampling, rng), h[-1]
    yield token
    produced = 1
    if token in stop_ids or produced == max_new_tokens:
        return

    def choose(draft_logits):
        if sampling.greedy:
            return int(np.argmax(draft_logits)), None
        q = distribution(draft_logits, sampling)
        return draw(q, rng), q

    while cache.length < context:
        k = min(k_max, max_new_tokens - produced - 1, context - cache.length - 1)
        drafts, qs = draft(model, assistant, token, hidden, cache, k, choose) if k > 0 else ([], [])
        logits, h = extend_with_hidden(model, np.array([token, *drafts]), cache)  # (k + 1, vocab)
        if sampling.greedy:
            emitted = accept_greedy(drafts, logits)
        else:
            emitted = accept_sampling(drafts, qs, [distribution(row, sampling) for row in logits], rng)
        if k > 0:
            stats.drafted += k
            stats.accepted += len(emitted) - 1
            stats.accepted_per_round.append(len(emitted) - 1)
        stop = False
        for i, t in enumerate(emitted):  # cut at a stop token or the budget
            if t in stop_ids or produced + i + 1 == max_new_tokens:
                emitted, stop = emitted[: i + 1], True
                break
        # the cache keeps t and the drafts before the last emitted token: that one is fed next round
        cache.rollback(k + 1 - len(emitted))
        token, hidden = emitted[-1], h[len(emitted) - 1]
        for t in emitted:
            yield t
        produced += len(emitted)
        if stop:
            return


def resolve_assistant(model, assistant):
    """An `Assistant`, or a checkpoint directory to load one from (with the target's backend),
    checked against the target."""
    from ..assistant import Assistant, load_assistant

    if isinstance(assistant, str | os.PathLike):
        assistant = load_assistant(assistant, kernels=model.backend.name != "numpy")
    elif not isinstance(assistant, Assistant):
        raise InputError(f"assistant: expected a checkpoint directory or an Assistant, found {type(assistant).__name__}")
    assistant.check_target(model.config.text)
    return assistant



def trace_draft(model, assistant, ids, next_token: int | None = None, names=None) -> dict[str, np.ndarray]:
    """The named steps of one draft step, for implementers of drafters: the target prefills `ids`,
    then the assistant drafts after `next_token` (default: the target's greedy choice) at the
    position after them. Names `assistant.pre_projection`, `assistant.layers.{i}.*` (as the
    target's layers, less the keys/values they do not compute), `assistant.final_norm`,
    `assistant.post_projection`, `assistant.logits` (docs/verify.md); `names`: glob patterns."""
    from ..verify.trace import Recorder

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise InputError("input_ids: empty, expected at least one token")
    assistant.check_target(model.config.text)
    cache = model.new_cache(lookback=lookback_for(model, assistant))
    logits, h = extend_with_hidden(model, ids, cache)
    token = int(np.argmax(logits[-1])) if next_token is None else int(next_token)
    recorder = Recorder(names)
    draft(model, assistant, token, h[-1], cache, 1, lambda lg: (int(np.argmax(lg)), None), recorder)
    return recorder.result()
