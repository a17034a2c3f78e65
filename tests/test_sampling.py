"""Sampling: temperature / top-k / top-p against the reference's logits warpers, draws never leave
the allowed set, seeds repeat exactly, frequencies follow the probabilities; argument checks;
defaults and stop tokens read from the checkpoint."""

import json

import numpy as np
import pytest
import torch
from gemma_reference import our_model, reference_text_model
from hypothesis import given, note, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from minigemma import InputError
from minigemma.generate.loop import stop_token_ids
from minigemma.text.ops import softmax
from minigemma.generate.sampling import Sampling, check_sampling, filtered_logits, resolve, sample

SAMPLINGS = st.builds(
    Sampling,
    temperature=st.floats(0.05, 3.0),
    top_k=st.integers(0, 70),
    top_p=st.one_of(st.just(1.0), st.floats(0.01, 1.0)),
    seed=st.integers(0, 2**32),
)


def random_logits(data, scale=None):
    vocab = data.draw(st.integers(2, 64), label="vocab")
    scale = data.draw(st.sampled_from([0.1, 1.0, 5.0]), label="scale") if scale is None else scale
    seed = data.draw(st.integers(0, 2**16), label="logits seed")
    return (scale * np.random.default_rng(seed).standard_normal(vocab)).astype(np.float32)


def reference_filtered(logits, s: Sampling) -> np.ndarray:
    """The reference's warpers, in `generate`'s order."""
    scores = torch.as_tensor(logits)[None]
    warpers = [TemperatureLogitsWarper(s.temperature)]
    if s.top_k > 0:
        warpers.append(TopKLogitsWarper(s.top_k))
    if s.top_p < 1.0:
        warpers.append(TopPLogitsWarper(s.top_p))
    for w in warpers:
        scores = w(None, scores)
    return scores[0].numpy()


@settings(max_examples=60)
@given(s=SAMPLINGS, data=st.data())
def test_filtering_matches_reference_warpers(s, data):
    logits = random_logits(data)
    note(f"{s}, logits {logits}")
    ours, ref = filtered_logits(logits, s), reference_filtered(logits, s)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))  # the same allowed set
    np.testing.assert_allclose(softmax(ours), softmax(ref), rtol=1e-5, atol=1e-6)


@settings(max_examples=30)
@given(s=SAMPLINGS, data=st.data())
def test_draws_never_leave_the_allowed_set(s, data):
    logits = random_logits(data)
    allowed = set(np.flatnonzero(np.isfinite(reference_filtered(logits, s))))
    if s.top_k:
        assert len(allowed) >= min(s.top_k, len(logits)) or s.top_p < 1  # top-k keeps k (ties: more)
        assert set(np.argsort(-logits)[: s.top_k]) >= allowed
    rng = np.random.default_rng(s.seed)
    drawn = {sample(logits, s, rng) for _ in range(200)}
    assert drawn <= allowed
    assert int(np.argmax(logits)) in allowed  # the most likely token always stays


def test_frequencies_follow_probabilities():
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)
    s = Sampling(temperature=0.7, top_k=5, top_p=0.9, seed=11)
    probs = softmax(filtered_logits(logits, s))
    rng = np.random.default_rng(s.seed)
    counts = np.bincount([sample(logits, s, rng) for _ in range(6_000)], minlength=len(logits))
    np.testing.assert_allclose(counts / counts.sum(), probs, atol=0.025)  # ~4 standard errors
    assert counts[probs == 0].sum() == 0 and (probs == 0).any()


@settings(max_examples=20)
@given(s=SAMPLINGS, data=st.data())
def test_seed_repeats_and_greedy_is_argmax(s, data):
    logits = random_logits(data, scale=0.1)  # flat: draws vary a lot between seeds

    def run(seed):
        rng = np.random.default_rng(seed)
        return [sample(logits, s, rng) for _ in range(50)]

    assert run(s.seed) == run(s.seed)
    greedy = Sampling(temperature=0.0, top_k=s.top_k, top_p=s.top_p)
    assert sample(logits, greedy, np.random.default_rng(0)) == int(np.argmax(logits))


@pytest.mark.parametrize(
    "args, flag",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=True), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(seed=-3), "seed"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ],
)
def test_bad_arguments_raise_input_error_naming_them(args, flag):
    full = dict(temperature=None, top_k=None, top_p=None, seed=None, max_new_tokens=8) | args
    with pytest.raises(InputError, match=f"^{flag}: expected"):
        check_sampling(**full)
    with pytest.raises(InputError, match=f"^--{flag.replace('_', '-')}: expected"):
        check_sampling(**full, spell=lambda name: "--" + name.replace("_", "-"))


def test_unset_arguments_come_from_generation_config():
    gen = {"do_sample": True, "temperature": 0.6, "top_k": 64, "top_p": 0.95}
    assert resolve(generation_config=gen) == Sampling(0.6, 64, 0.95, None)
    assert resolve(temperature=0.0, top_k=5, generation_config=gen) == Sampling(0.0, 5, 0.95, None)
    assert resolve(generation_config={}) == Sampling(0.0, 0, 1.0, None)  # greedy without one
    assert resolve(generation_config={"do_sample": False, "temperature": 0.6}).greedy


SMALL = dict(
    vocab_size=97, hidden_size=24, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
    num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=3, eos_token_id=[1],
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)


def test_model_generate_seeds_stops_and_limits(tmp_path):
    ref = reference_text_model(SMALL, seed=3)
    model = our_model(ref, str(tmp_path))
    ids = np.array([2, 40, 41, 42])
    one = model.generate(ids, max_new_tokens=12, temperature=1.5, seed=5)
    assert isinstance(one, np.ndarray) and one.dtype == np.int64 and len(one) <= 12
    np.testing.assert_array_equal(one, model.generate(ids, max_new_tokens=12, temperature=1.5, seed=5))
    others = [model.generate(ids, max_new_tokens=12, temperature=1.5, seed=s) for s in range(6, 9)]
    assert any(not np.array_equal(one, o) for o in others)
    greedy = model.generate(ids, max_new_tokens=10, temperature=0)
    assert len(greedy) == 10 or greedy[-1] == 1
    # generation_config.json lists the 3rd greedy token as an end token: generation stops on it
    stop = int(greedy[2])
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, stop], "do_sample": False}))
    assert stop_token_ids(model) == {1, stop}
    first = int(np.flatnonzero(greedy == stop)[0])
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=10), greedy[: first + 1])
    with pytest.raises(InputError, match="prompt: expected one sequence"):
        model.generate(np.zeros((2, 3), np.int64))
    with pytest.raises(InputError, match="top_p"):
        model.stream(ids, top_p=2.0)  # checked at the call, not at the first piece
