"""Speculative decoding (generate/speculative.py) proven by its invariants:

* greedy: the output is the target's own plain greedy output, token for token, over drawn
  configs and prompts longer than the windows, with random assistants (which rarely agree) and
  with scripted ones that propose the target's true continuation with drawn errors (so rounds
  accept several drafts, reject mid-round and roll ring buffers back across their wrap);
  and identical to transformers' `generate(assistant_model=...)`;
* rollback: after rejected tokens the cache gives the logits of a cache that never saw them;
* sampling: the tokens are distributed as the target's own samples (chi-square tests on a tiny
  vocabulary, with a threshold a correct sampler fails once in a thousand seeds, and which a
  sampler that skips the acceptance rule fails by a wide margin).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from assistant_reference import assistant_kwargs, our_assistant, patched_kv_sharing, reference_assistant, target_kwargs
from gemma_reference import our_model, reference_text_model, text_config_kwargs
from minigemma.assistant import Assistant
from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling
from minigemma.generate.speculative import (
    SpeculationStats,
    accept_sampling,
    distribution,
    draw,
    lookback_for,
    speculative_ids,
)
from minigemma.text.ops import softmax

GREEDY = Sampling(temperature=0.0)


class ScriptedAssistant(Assistant):
    """Drafts the target's true greedy continuation (`script`, indexed by position), each draft
    replaced by a random token with probability `error`: rounds that accept 0..k drafts."""

    def __init__(self, real: Assistant, script: np.ndarray, error: float, seed: int):
        super().__init__(real.config, real.weights, num_assistant_tokens=real.num_assistant_tokens)
        self.script, self.error, self.rng = script, error, np.random.default_rng(seed)
        self.position, self.calls = None, 0

    def step(self, token_embedding, target_hidden, position, target_kv, tap=None):
        self.calls = self.calls + 1 if position == self.position else 1
        self.position = position
        vocab = self.config.text.vocab_size
        at = position + self.calls  # the position this draft proposes a token for
        token = self.script[at] if at < len(self.script) and self.rng.random() >= self.error else self.rng.integers(vocab)
        return np.eye(vocab, dtype=np.float32)[token], target_hidden


@st.composite
def speculative_case(draw):
    shared = draw(st.booleans(), label="KV-shared target")
    if shared:
        tk = draw(target_kwargs())
    else:  # sliding and full producers: the first two layers, nothing shared
        tk = draw(text_config_kwargs(max_layers=4, kv_shared=False))
        tk["layer_types"][:2] = ["sliding_attention", "full_attention"]
    ak = draw(assistant_kwargs(tk))
    window = max(tk["sliding_window"], ak["text_config"]["sliding_window"])
    n = draw(st.integers(window + 1, 3 * window + 6), label="prompt length (longer than the windows)")
    k = draw(st.integers(1, 6), label="drafts per round")
    error = draw(st.sampled_from([None, 0.0, 0.3, 0.7]), label="scripted error rate (None: random assistant)")
    seed = draw(st.integers(0, 2**16), label="seed")
    note(f"target: {tk}\nassistant: {ak}")
    return tk, ak, np.random.default_rng(seed).integers(0, tk["vocab_size"], n), k, error, seed


@given(speculative_case())
@settings(max_examples=12)
def test_greedy_speculation_is_plain_greedy(case):
    tk, ak, ids, k, error, seed = case
    model = our_model(reference_text_model(tk, seed=seed))
    assistant = our_assistant(reference_assistant(ak, seed + 1))
    new = 24
    plain = list(generate_ids(model, ids, GREEDY, new))
    if error is not None:
        assistant = ScriptedAssistant(assistant, np.concatenate([ids, plain]), error, seed)
    stats = SpeculationStats()
    ours = list(speculative_ids(model, assistant, ids, GREEDY, new, draft_tokens=k, stats=stats))
    note(f"accepted per round: {stats.accepted_per_round}")
    assert ours == plain
    if error == 0.0:
        assert stats.acceptance_rate == 1.0  # a perfect drafter: every draft kept


@given(speculative_case())
@settings(max_examples=6)
def test_greedy_speculation_stops_like_plain_greedy(case):
    """Stop tokens and the token budget end both loops at the same token, and leave the cache
    holding every token but the last (what a chat's next turn continues)."""
    tk, ak, ids, k, error, seed = case
    model = our_model(reference_text_model(tk, seed=seed))
    assistant = our_assistant(reference_assistant(ak, seed + 1))
    plain = list(generate_ids(model, ids, GREEDY, 30))
    stops = frozenset({plain[len(plain) // 2]})
    assistant = ScriptedAssistant(assistant, np.concatenate([ids, plain]), 0.2, seed)
    for budget in (1, 2, 7):
        cache = model.new_cache(lookback=lookback_for(model, assistant))
        ours = list(speculative_ids(model, assistant, ids, GREEDY, budget, stops, cache=cache, draft_tokens=k))
        assert ours == list(generate_ids(model, ids, GREEDY, budget, stops))
        assert cache.length == len(ids) + len(ours) - 1


@given(st.data())
@settings(max_examples=10)
def test_rollback_equals_a_cache_that_never_saw_the_tokens(data):
    """Feed a prefix, then a chunk, take back its last r tokens, continue: the logits equal those
    of a cache fed only what stayed. Chunk lengths around the window make the rings wrap mid-chunk;
    float32 and float16 storage."""
    tk = data.draw(text_config_kwargs(max_layers=4), label="config")
    note(f"config: {tk}")
    w = tk["sliding_window"]
    model = our_model(reference_text_model(tk))
    lookback = data.draw(st.integers(0, 3), label="lookback")
    dtype = data.draw(st.sampled_from([np.float32, np.float16]), label="cache dtype")
    prefix = data.draw(st.integers(1, 3 * w + 2), label="prefix")
    chunk = data.draw(st.integers(1, 2 * w + 3), label="chunk")
    r = data.draw(st.integers(0, chunk), label="taken back")
    rounds = data.draw(st.integers(1, 3), label="rounds")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    ids = rng.integers(0, tk["vocab_size"], prefix)
    spec, clean = model.new_cache(dtype, lookback), model.new_cache(dtype, lookback)
    model.extend(ids, spec)
    model.extend(ids, clean)
    for _ in range(rounds):  # rollback after rollback, as rounds of drafts do
        fed = rng.integers(0, tk["vocab_size"], chunk)
        model.extend(fed, spec)
        spec.rollback(r)
        if chunk - r:
            model.extend(fed[: chunk - r], clean)
        follow = rng.integers(0, tk["vocab_size"], 2)
        np.testing.assert_allclose(model.extend(follow, spec), model.extend(follow, clean), rtol=1e-5, atol=1e-5)
    for a, b in zip(spec.layers, clean.layers):
        if a is not None:
            ka, va, pa = a.held()
            kb, vb, pb = b.held()
            order_a, order_b = np.argsort(pa), np.argsort(pb)
            np.testing.assert_array_equal(pa[order_a], pb[order_b])
            np.testing.assert_allclose(ka[order_a], kb[order_b], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(va[order_a], vb[order_b], rtol=1e-5, atol=1e-5)


def test_greedy_matches_transformers_generate_with_assistant():
    """transformers' assisted generation (the patched assistant, num_assistant_tokens set) and ours
    give the same tokens, on targets with PLE (5.23.0's KV-shared slicing needs it, see gemma_reference)."""
    for seed, (window, k) in enumerate([(3, 2), (5, 4), (2, 3)]):
        tk = dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=5, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=window, num_kv_shared_layers=2,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"],
                  hidden_size_per_layer_input=8, vocab_size_per_layer_input=64, eos_token_id=[])
        ak = dict(text_config=dict(tk, hidden_size=24, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
                                   sliding_window=window + 1, num_kv_shared_layers=0, hidden_size_per_layer_input=0,
                                   vocab_size_per_layer_input=0),
                  backbone_hidden_size=32, use_ordered_embeddings=bool(seed % 2), num_centroids=8, centroid_intermediate_top_k=3)
        target = reference_text_model(tk, seed=seed)
        ref = reference_assistant(ak, seed + 1, num_assistant_tokens=k)
        ids = np.random.default_rng(seed).integers(0, 64, 3 * window + 2)
        with patched_kv_sharing(), torch.no_grad():
            out = target.generate(torch.as_tensor(ids)[None], assistant_model=ref, max_new_tokens=20, do_sample=False)
        theirs = out[0, len(ids) :].tolist()
        ours = list(speculative_ids(our_model(target), our_assistant(ref, k), ids, GREEDY, 20))
        assert ours == theirs


# ------------------------------------------------------------------------------------ sampling


def chi_square_threshold(df: int, z: float = 3.09) -> float:
    """The chi-square statistic a correct sampler exceeds with probability ~1e-3 (z = 3.09):
    Wilson-Hilferty's normal approximation of the quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi_square(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom, cells expected below `min_expected` pooled."""
    n = counts.sum()
    expected = probs * n
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep])), int(keep.sum() - 1)


def always_accept(drafts, qs, ps, rng):
    """A wrong sampler: keeps every draft (the test must catch it)."""
    return [int(t) for t in drafts] + [draw(ps[len(drafts)], rng)]


def test_acceptance_rule_gives_the_target_distribution():
    """Synthetic p, q on 6 tokens, 2 drafts from q: the first token is ~ p0, and after an accepted
    first draft the second is ~ p1 — and skipping the rule is caught."""
    rng = np.random.default_rng(0)
    vocab, n = 6, 40_000
    ps = [softmax(rng.normal(size=vocab) * 1.5) for _ in range(3)]
    qs = [softmax(rng.normal(size=vocab) * 1.5) for _ in range(2)]
    for rule, correct in ((accept_sampling, True), (always_accept, False)):
        first, second = np.zeros(vocab), np.zeros(vocab)
        for _ in range(n):
            drafts = [draw(q, rng) for q in qs]
            out = rule(drafts, qs, ps, rng)
            first[out[0]] += 1
            if len(out) > 1:
                second[out[1]] += 1
        for counts, p in ((first, ps[0]), (second, ps[1])):
            stat, df = chi_square(counts, p)
            assert (stat < chi_square_threshold(df)) == correct, (rule.__name__, stat, df)


def test_speculative_sampling_matches_the_target_end_to_end():
    """A tiny-vocabulary target and a random assistant, 1500 seeds: the first two new tokens (the
    second drafted, then accepted or resampled) are jointly distributed as the target's own
    (computed exactly from its logits)."""
    vocab, T = 6, 4.0  # a high temperature: flat distributions, every cell visited
    tk = dict(vocab_size=vocab, hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
              num_key_value_heads=1, head_dim=8, global_head_dim=8, sliding_window=3, num_kv_shared_layers=1,
              layer_types=["sliding_attention", "full_attention", "full_attention"], hidden_size_per_layer_input=0,
              vocab_size_per_layer_input=vocab, eos_token_id=[])
    ak = dict(text_config=dict(tk, num_hidden_layers=1, layer_types=["full_attention"], num_kv_shared_layers=0,
                               vocab_size_per_layer_input=0), backbone_hidden_size=16, use_ordered_embeddings=False)
    model = our_model(reference_text_model(tk, seed=3))
    assistant = our_assistant(reference_assistant(ak, 4))
    s = Sampling(temperature=T, top_k=5)  # top-k: one token impossible, for target and drafter alike
    ids = np.array([1, 4, 2, 5])
    p1 = distribution(model.forward(ids)[-1], s)
    joint = np.stack([p1[a] * distribution(model.forward(np.append(ids, a))[-1], s) for a in range(vocab)]).reshape(-1)
    counts = np.zeros(vocab * vocab)
    runs = 1500
    stats = SpeculationStats()
    for seed in range(runs):
        a, b, _ = speculative_ids(model, assistant, ids, Sampling(T, 5, 1.0, seed), 3, draft_tokens=1, stats=stats)
        counts[a * vocab + b] += 1
    stat, df = chi_square(counts, joint)
    print(f"chi-square {stat:.1f} on {df} df (threshold {chi_square_threshold(df):.1f}); acceptance {stats.acceptance_rate:.2f}")
    assert stat < chi_square_threshold(df), (stat, df)
    assert 0.05 < stats.acceptance_rate < 0.95  # both branches of the rule ran
    assert counts.reshape(vocab, vocab)[np.argsort(p1)[0]].sum() == 0  # the token top-k removes never comes
