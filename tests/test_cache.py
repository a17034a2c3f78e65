"""The KV cache: incremental decoding equals recomputation, chunked prefill equals one-shot
prefill, and the sliding layers' ring buffers stay at `sliding_window - 1` positions however long
the text grows (the sizes themselves are checked, not only the outputs)."""

import numpy as np
import pytest
from gemma_reference import our_model, reference_text_model, text_config_kwargs
from hypothesis import given, note, settings
from hypothesis import strategies as st

from minigemma import ConfigError, InputError
from minigemma.generate.cache import GlobalKV, SlidingKV

TOL = dict(rtol=1e-4, atol=1e-4)

# every switch at once: sliding + global layers, KV sharing of both types, PLE, MoE, k_eq_v,
# double-wide MLP on shared layers, soft-cap; window 3, far shorter than the sequences below
EVERYTHING_ON = dict(
    vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=6, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, global_head_dim=16, num_global_key_value_heads=1, attention_k_eq_v=True,
    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                 "full_attention"],
    sliding_window=3, num_kv_shared_layers=3, use_double_wide_mlp=True, hidden_size_per_layer_input=8,
    vocab_size_per_layer_input=128, enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=8,
    final_logit_softcapping=30.0, max_position_embeddings=4096,
)


def decode_all(model, ids, prompt_len):
    """Prefill ids[:prompt_len], then feed the rest one token at a time; all logits stacked."""
    cache = model.new_cache()
    logits = [model.extend(ids[:prompt_len], cache)]
    logits += [model.extend(ids[t : t + 1], cache) for t in range(prompt_len, len(ids))]
    assert cache.length == len(ids)
    return np.concatenate(logits)


@settings(max_examples=10)
@given(kwargs=text_config_kwargs(max_layers=5), data=st.data())
def test_incremental_decode_equals_full_forward(kwargs, data):
    window = kwargs["sliding_window"]
    prompt_len = data.draw(st.integers(1, window + 2), label="prompt_len")
    steps = data.draw(st.integers(4 * window, 4 * window + 6), label="decode steps")  # >= 4 windows
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}")
    model = our_model(reference_text_model(kwargs, seed=seed))
    ids = np.random.default_rng(seed).integers(0, kwargs["vocab_size"], prompt_len + steps)
    np.testing.assert_allclose(decode_all(model, ids, prompt_len), model.forward(ids), **TOL)


def test_incremental_decode_every_switch_on():
    model = our_model(reference_text_model(EVERYTHING_ON, seed=1))
    spec = model.config.text
    assert spec.num_kv_shared_layers and spec.has_ple and spec.enable_moe_block
    assert {s.layer_type for s in spec.layers if s.reuses_kv} == {"sliding_attention", "full_attention"}
    ids = np.random.default_rng(1).integers(0, 128, 40)  # 13x the window
    np.testing.assert_allclose(decode_all(model, ids, 2), model.forward(ids), **TOL)


@settings(max_examples=10)
@given(kwargs=text_config_kwargs(max_layers=4), data=st.data())
def test_chunked_prefill_equals_one_shot(kwargs, data):
    window = kwargs["sliding_window"]
    n = data.draw(st.integers(2 * window + 2, 4 * window + 8), label="prompt length")
    chunks = data.draw(st.lists(st.integers(1, 2 * window + 1), min_size=1, max_size=n), label="chunk sizes")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}")
    model = our_model(reference_text_model(kwargs, seed=seed))
    ids = np.random.default_rng(seed).integers(0, kwargs["vocab_size"], n)
    one_shot_cache = model.new_cache()
    one_shot = model.extend(ids, one_shot_cache)
    cache, logits, start = model.new_cache(), [], 0
    for size in chunks:  # chunks of any size, straddling the window, then the remainder
        if start < n:
            logits.append(model.extend(ids[start : start + size], cache))
            start += size
    if start < n:
        logits.append(model.extend(ids[start:], cache))
    np.testing.assert_allclose(np.concatenate(logits), one_shot, **TOL)
    # and both caches continue the same way
    nxt = np.array([7])
    np.testing.assert_allclose(model.extend(nxt, cache), model.extend(nxt, one_shot_cache), **TOL)


def test_sliding_cache_size_is_flat_while_global_grows():
    model = our_model(reference_text_model(EVERYTHING_ON, seed=2))
    cfg = model.config.text
    window = cfg.sliding_window
    cache = model.new_cache()
    expected = [None if s.reuses_kv else SlidingKV if s.is_sliding else GlobalKV for s in cfg.layers]
    assert [None if c is None else type(c) for c in cache.layers] == expected  # shared layers keep nothing
    sliding = [c for c in cache.layers if isinstance(c, SlidingKV)]
    globals_ = [c for c in cache.layers if isinstance(c, GlobalKV)]
    assert sliding and globals_ and any(c is None for c in cache.layers)
    sliding_bytes = {c.nbytes for c in sliding}
    ids = np.random.default_rng(2).integers(0, 128, 30 * window)
    model.extend(ids[:5], cache)
    for t in range(5, len(ids)):
        model.extend(ids[t : t + 1], cache)
        seen = t + 1
        for c in sliding:
            assert c.length == min(seen, window - 1)
            assert c.keys.shape[0] == window - 1 and {c.nbytes} <= sliding_bytes  # never reallocated
            held = np.sort(c.positions[: c.length])
            np.testing.assert_array_equal(held, np.arange(seen - c.length, seen))  # exactly the last window - 1
        for c in globals_:
            assert c.length == seen
            np.testing.assert_array_equal(c.positions[:seen], np.arange(seen))


def test_window_of_one_keeps_nothing():
    kwargs = dict(EVERYTHING_ON, sliding_window=1)
    model = our_model(reference_text_model(kwargs, seed=4))
    ids = np.arange(12) % 128
    np.testing.assert_allclose(decode_all(model, ids, 3), model.forward(ids), **TOL)
    cache = model.new_cache()
    model.extend(ids, cache)
    assert all(c.length == 0 and c.nbytes == 0 for c in cache.layers if isinstance(c, SlidingKV))


def test_context_overflow_and_bidirectional_models_raise():
    model = our_model(reference_text_model(dict(EVERYTHING_ON, max_position_embeddings=10), seed=5))
    cache = model.new_cache()
    model.extend(np.arange(8), cache)
    with pytest.raises(InputError, match="max_position_embeddings=10"):
        model.extend(np.arange(3), cache)
    with pytest.raises(InputError, match="one sequence"):
        model.extend(np.zeros((2, 2), np.int64), model.new_cache())
    bidirectional = our_model(reference_text_model(dict(EVERYTHING_ON, use_bidirectional_attention="all"), seed=5))
    with pytest.raises(ConfigError, match="use_bidirectional_attention"):
        bidirectional.new_cache()


@settings(max_examples=10)
@given(data=st.data())
def test_restore_returns_to_a_saved_state(data):
    """save; feed a detour; restore; continue: the same logits as never having taken the detour
    (a chat rewinds to the end of its history this way). Short chunks after the restore are the
    hard case: the ring must overwrite its oldest slot next, as before the detour."""
    model = our_model(reference_text_model(dict(EVERYTHING_ON, sliding_window=5), seed=6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    before = rng.integers(0, 128, data.draw(st.integers(1, 12), label="before"))
    detour = rng.integers(0, 128, data.draw(st.integers(1, 9), label="detour"))
    after = [rng.integers(0, 128, n) for n in data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=6), label="after")]
    straight, rewound = model.new_cache(), model.new_cache()
    model.extend(before, straight)
    model.extend(before, rewound)
    saved = rewound.save()
    model.extend(detour, rewound)
    rewound.restore(saved)
    assert rewound.length == straight.length == len(before)
    for chunk in after:
        np.testing.assert_allclose(model.extend(chunk, rewound), model.extend(chunk, straight), rtol=1e-5, atol=1e-5)


@settings(max_examples=25)
@given(window=st.integers(1, 9), lookback=st.integers(0, 3), chunks=st.lists(st.integers(1, 12), min_size=1, max_size=8),
       rollback=st.integers(0, 12))
def test_ring_returns_what_it_holds_oldest_first_then_the_new(window, lookback, chunks, rollback):
    """What `SlidingKV.update` hands attention is the last `capacity` positions fed before this
    update, oldest first, then the new ones, keys and values matching their positions (each
    token's key is its position), also after a rollback; `held` agrees."""
    ring, fed = SlidingKV(window, 1, 2, lookback=lookback), []
    for size in chunks:
        new = np.arange(len(fed), len(fed) + size)
        before = fed[max(0, len(fed) - ring.capacity):] if ring.capacity else []
        k, v, pos = ring.update(new[:, None, None] * np.ones((1, 1, 2), np.float32), -new[:, None, None] * np.ones((1, 1, 2), np.float32), new)
        note(f"capacity {ring.capacity}, before {before}, new {new.tolist()}, got {pos.tolist()}")
        np.testing.assert_array_equal(pos, [*before, *new])
        np.testing.assert_array_equal(k[:, 0, 0], pos)
        np.testing.assert_array_equal(v[:, 0, 1], -pos)
        fed += new.tolist()
        n = min(rollback, size)
        ring.rollback(n)
        fed = fed[: len(fed) - n]
        held_k, _, held_pos = ring.held()
        np.testing.assert_array_equal(held_pos, fed[max(0, len(fed) - ring.capacity):] if ring.capacity else [])
        np.testing.assert_array_equal(held_k[:, 0, 0], held_pos)
