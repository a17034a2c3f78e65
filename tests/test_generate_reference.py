"""Generation against the reference's own: `generate(..., output_logits=True,
return_dict_in_generate=True)` with its `DynamicCache` (sliding layers in
`DynamicSlidingWindowLayer`s). Step logits at 1e-4, greedy ids exactly, stopping on EOS exactly.

transformers 5.23.0's `Gemma4TextModel._maybe_slice_kv_shared_inputs` crashes during the prefill of
a KV-shared model without PLE (it slices `per_layer_inputs`, which is None); like
`reference_logits`, we pass `output_hidden_states=True`, which turns that shortcut off (it only
skips computing unused prompt positions in the shared layers; logits are unchanged). So every
drawn config, KV-shared without PLE included, is compared."""

import numpy as np
import pytest
import torch
from gemma_reference import our_model, reference_text_model, text_config_kwargs
from hypothesis import given, note, settings
from hypothesis import strategies as st
from test_cache import EVERYTHING_ON
from transformers.cache_utils import DynamicSlidingWindowLayer

from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling

TOL = dict(rtol=1e-4, atol=1e-4)
GREEDY = Sampling(temperature=0.0)


def reference_generate(ref, ids, max_new_tokens, eos=None):
    """The reference's greedy generation: (new ids, step logits (steps, vocab), cache)."""
    ref.generation_config.eos_token_id = None  # only the eos we pass may stop it
    with torch.no_grad():
        out = ref.generate(
            torch.as_tensor(ids[None]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
            output_hidden_states=True,  # see the module docstring
        )
    new = out.sequences[0, len(ids) :].numpy()
    return new, torch.stack(out.logits)[:, 0].float().numpy(), out.past_key_values


def our_steps(model, ids, max_new_tokens, stop=frozenset(), soft=()):
    """Our greedy generation with the logits of each step, recorded through `extend`; `soft`: the
    prompt's image/audio soft tokens."""
    logits, extend = [], model.extend

    def recording(step_ids, cache, soft=(), keep=None):
        out = extend(step_ids, cache, soft, keep)
        logits.append(out[-1])
        return out

    model.extend = recording
    try:
        new = list(generate_ids(model, ids, GREEDY, max_new_tokens, stop, soft=soft))
    finally:
        del model.extend
    return np.array(new), np.stack(logits)


@settings(max_examples=10)
@given(kwargs=text_config_kwargs(max_layers=5), data=st.data())
def test_step_logits_and_greedy_ids_match_reference_generate(kwargs, data):
    window = kwargs["sliding_window"]
    prompt_len = data.draw(st.integers(1, 2 * window + 3), label="prompt_len")
    new_tokens = 4 * window + data.draw(st.integers(1, 4), label="extra")  # decode past 4 windows
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}")
    ref = reference_text_model(kwargs, seed=seed)
    ids = np.random.default_rng(seed).integers(0, kwargs["vocab_size"], prompt_len)
    ref_new, ref_logits, ref_cache = reference_generate(ref, ids, new_tokens)
    types = kwargs["layer_types"]
    owners = [i for i in range(len(types)) if i < len(types) - kwargs["num_kv_shared_layers"]]
    assert all(isinstance(ref_cache.layers[i], DynamicSlidingWindowLayer) == (types[i] == "sliding_attention") for i in owners)

    new, logits = our_steps(our_model(ref), ids, new_tokens)
    assert len(ref_new) == new_tokens
    np.testing.assert_allclose(logits, ref_logits, **TOL)
    np.testing.assert_array_equal(new, ref_new)


def test_stops_on_eos_like_reference():
    """Make the 5th greedy token the EOS: both stop right after emitting it."""
    kwargs = dict(
        vocab_size=97, hidden_size=24, intermediate_size=24, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=2, num_kv_shared_layers=1,
        hidden_size_per_layer_input=4, vocab_size_per_layer_input=97,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    )
    ref = reference_text_model(kwargs, seed=8)
    ids = np.array([5, 17, 3, 60])
    free, _, _ = reference_generate(ref, ids, 12)
    eos = int(free[4])
    first = int(np.flatnonzero(free == eos)[0])  # it may already come earlier
    ref_new, _, _ = reference_generate(ref, ids, 12, eos=eos)
    new, _ = our_steps(our_model(ref), ids, 12, stop=frozenset([eos]))
    np.testing.assert_array_equal(ref_new[: first + 1], free[: first + 1])
    assert len(ref_new) == first + 1 and ref_new[-1] == eos
    np.testing.assert_array_equal(new, ref_new)


KV_SHARED_NO_PLE = dict(  # the configuration that crashes the reference's prefill shortcut
    vocab_size=64, hidden_size=16, intermediate_size=16, num_hidden_layers=4, num_attention_heads=2,
    num_key_value_heads=1, head_dim=8, global_head_dim=8, sliding_window=2, num_kv_shared_layers=2,
    hidden_size_per_layer_input=0, layer_types=["sliding_attention", "full_attention"] * 2,
)


@pytest.mark.parametrize("kwargs", [EVERYTHING_ON, KV_SHARED_NO_PLE], ids=["everything_on", "kv_shared_no_ple"])
def test_every_switch_against_reference_generate(kwargs):
    ref = reference_text_model(kwargs, seed=12)
    ids = np.random.default_rng(12).integers(0, kwargs["vocab_size"], 5)
    steps = 4 * kwargs["sliding_window"] + 3
    ref_new, ref_logits, _ = reference_generate(ref, ids, steps)
    new, logits = our_steps(our_model(ref), ids, steps)
    np.testing.assert_allclose(logits, ref_logits, **TOL)
    np.testing.assert_array_equal(new, ref_new)
