"""The MTP assistant (minigemma/assistant/) against the reference's `Gemma4AssistantForCausalLM`.

The reference cannot build an assistant as shipped (DESIGN.md, "Known limits of the reference for
the MTP assistant"): `assistant_reference.patched_kv_sharing` patches `kv_sharing_modes` for
all-shared configs, and the patched reference modules serve as the reference, step by step:
given the same target states (the target's prefill of a prompt, read from our cache and from the
reference's `shared_kv_states`), one draft step's logits and projected hidden state agree at 1e-4,
and a whole drafting round gives the tokens `SinglePositionMultiTokenCandidateGenerator` drafts.
Drawn: target configs (KV-shared, sliding and full producers, PLE or not, windows 1..8), assistant
configs (width, depth, window, RoPE, with and without the ordered-embedding head), prompts shorter
and longer than both windows, fed in one or two chunks (the ring buffers wrap).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from assistant_reference import (
    assistant_kwargs,
    our_assistant,
    reference_assistant,
    reference_round,
    reference_step,
    target_kwargs,
)
from gemma_reference import our_model, reference_text_model
from minigemma import ConfigError
from minigemma.assistant import load_assistant
from minigemma.assistant.config import assistant_config_from_dict
from minigemma.generate.speculative import draft, extend_with_hidden, lookback_for, target_kv

TOL = dict(rtol=1e-4, atol=1e-4)


@st.composite
def drafting_case(draw, ordered=None):
    tk = draw(target_kwargs())
    ak = draw(assistant_kwargs(tk, ordered))
    longest = 4 * max(tk["sliding_window"], ak["text_config"]["sliding_window"]) + 6
    n = draw(st.integers(1, longest), label="prompt length")
    seed = draw(st.integers(0, 2**16), label="seed")
    split = draw(st.integers(0, n - 1), label="first chunk")  # 0: one chunk
    note(f"target: {tk}\nassistant: {ak}")
    rng = np.random.default_rng(seed)
    return tk, ak, rng.integers(0, tk["vocab_size"], n), int(rng.integers(0, tk["vocab_size"])), split, seed


def our_prefill(model, assistant, ids, split):
    cache = model.new_cache(lookback=lookback_for(model, assistant))
    hidden = None
    for chunk in (ids[:split], ids[split:]) if split else (ids,):
        _, hidden = extend_with_hidden(model, chunk, cache)
    return cache, hidden[-1]


@given(drafting_case())
@settings(max_examples=12)
def test_draft_step_matches_reference(case):
    tk, ak, ids, next_token, split, seed = case
    target, ref = reference_text_model(tk, seed=seed), reference_assistant(ak, seed + 1)
    model, assistant = our_model(target), our_assistant(ref)
    cache, hidden = our_prefill(model, assistant, ids, split)
    embedding = model.embed(np.array([next_token]))[0][0]
    logits, projected = assistant.step(embedding, hidden, cache.length, target_kv(model, cache))
    ref_logits, ref_projected = reference_step(target, ref, ids, next_token)
    np.testing.assert_allclose(projected, ref_projected, **TOL)
    np.testing.assert_allclose(logits, ref_logits, **TOL)


@given(drafting_case())
@settings(max_examples=3)
def test_unified_assistant_step_matches_its_reference(case):
    """The 12B's drafter (`Gemma4UnifiedAssistantForCausalLM`, a `gemma4_unified_text` stack) is the
    same model: one step agrees at 1e-4."""
    tk, ak, ids, next_token, split, seed = case
    target, ref = reference_text_model(tk, seed=seed), reference_assistant(ak, seed + 1, unified=True)
    model, assistant = our_model(target), our_assistant(ref)
    assert assistant.config.model_type == "gemma4_unified_assistant"
    cache, hidden = our_prefill(model, assistant, ids, split)
    logits, projected = assistant.step(model.embed(np.array([next_token]))[0][0], hidden, cache.length,
                                       target_kv(model, cache))
    ref_logits, ref_projected = reference_step(target, ref, ids, next_token)
    np.testing.assert_allclose(projected, ref_projected, **TOL)
    np.testing.assert_allclose(logits, ref_logits, **TOL)


@given(drafting_case())
@settings(max_examples=8)
def test_drafted_round_matches_reference_generator(case):
    tk, ak, ids, next_token, split, seed = case
    target, ref = reference_text_model(tk, seed=seed), reference_assistant(ak, seed + 1, num_assistant_tokens=4)
    model, assistant = our_model(target), our_assistant(ref)
    cache, hidden = our_prefill(model, assistant, ids, split)
    ours, _ = draft(model, assistant, next_token, hidden, cache, 4, lambda logits: (int(np.argmax(logits)), None))
    assert ours == reference_round(target, ref, ids, next_token)


@given(drafting_case(ordered=True))
@settings(max_examples=3)
def test_ordered_head_scores_only_the_chosen_clusters(case):
    """Outside the top clusters every logit is the floor, below every real one."""
    tk, ak, ids, next_token, split, seed = case
    model = our_model(reference_text_model(tk, seed=seed))
    assistant = our_assistant(reference_assistant(ak, seed + 1))
    cache, hidden = our_prefill(model, assistant, ids, split)
    logits, _ = assistant.step(model.embed(np.array([next_token]))[0][0], hidden, cache.length, target_kv(model, cache))
    cfg = assistant.config
    scored = cfg.centroid_intermediate_top_k * cfg.tokens_per_centroid
    floor = logits.min()
    if scored == cfg.text.vocab_size:  # every cluster chosen: the full head
        np.testing.assert_allclose(logits, assistant.weights.lm_head @ assistant_hidden(assistant, model, cache, hidden, next_token), **TOL)
        return
    real = logits[logits > floor]
    assert len(real) == scored
    np.testing.assert_allclose(real.min() - 1, floor, rtol=1e-6)


def assistant_hidden(assistant, model, cache, hidden, token):
    """The drafter's final-normed hidden state of one step, from its trace."""
    seen = {}
    assistant.step(model.embed(np.array([token]))[0][0], hidden, cache.length, target_kv(model, cache),
                   tap=lambda name, v: seen.setdefault(name, v))
    return seen["assistant.final_norm"][0]


def test_load_from_directory(tmp_path):
    """save_pretrained -> load_assistant: same step as from the module; num_assistant_tokens read."""
    tk = dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=4, num_attention_heads=2,
              num_key_value_heads=1, head_dim=8, global_head_dim=16, layer_types=["sliding_attention", "full_attention"] * 2,
              sliding_window=4, num_kv_shared_layers=2, hidden_size_per_layer_input=8, vocab_size_per_layer_input=64)
    ak = dict(text_config=dict(tk, hidden_size=24, num_hidden_layers=2, layer_types=tk["layer_types"][:2],
                               num_kv_shared_layers=0, hidden_size_per_layer_input=0, vocab_size_per_layer_input=0),
              backbone_hidden_size=32, use_ordered_embeddings=True, num_centroids=8, centroid_intermediate_top_k=3)
    ref = reference_assistant(ak, num_assistant_tokens=5)
    ref.save_pretrained(tmp_path)
    loaded = load_assistant(tmp_path, kernels=False)
    assert loaded.num_assistant_tokens == 5
    model = our_model(reference_text_model(tk))
    direct = our_assistant(ref)
    cache, hidden = our_prefill(model, direct, np.arange(11), 0)
    args = (model.embed(np.array([3]))[0][0], hidden, cache.length, target_kv(model, cache))
    for a, b in zip(loaded.step(*args), direct.step(*args)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


BASE = {"model_type": "gemma4_assistant", "backbone_hidden_size": 32,
        "text_config": {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "num_key_value_heads": 1, "head_dim": 8, "hidden_size_per_layer_input": 0}}


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma4_text"}, "model_type"),
    ({"text_config": {**BASE["text_config"], "hidden_size_per_layer_input": 8}}, "hidden_size_per_layer_input"),
    ({"text_config": {**BASE["text_config"], "enable_moe_block": True}}, "enable_moe_block"),
    ({"text_config": {**BASE["text_config"], "num_kv_shared_layers": 1}}, "num_kv_shared_layers"),
    ({"use_ordered_embeddings": True, "num_centroids": 5}, "num_centroids"),
    ({"use_ordered_embeddings": True, "num_centroids": 4, "centroid_intermediate_top_k": 9}, "centroid_intermediate_top_k"),
])
def test_bad_configs_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        assistant_config_from_dict({**BASE, **change})


def test_unified_variant_takes_its_own_defaults():
    cfg = assistant_config_from_dict({**BASE, "model_type": "gemma4_unified_assistant",
                                      "text_config": {k: v for k, v in BASE["text_config"].items() if k != "hidden_size_per_layer_input"}})
    assert cfg.text.sliding_window == 1024 and not cfg.text.has_ple
    assert all(s.reuses_kv for s in cfg.text.layers) and cfg.text.num_kv_shared_layers == 2


def test_pairing_with_a_wrong_target_is_a_config_error():
    tk = dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
              num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=4, num_kv_shared_layers=1,
              layer_types=["sliding_attention", "full_attention", "full_attention"], hidden_size_per_layer_input=0)
    model = our_model(reference_text_model(tk))
    for change, message in [({"backbone_hidden_size": 24}, "backbone_hidden_size"),
                            ({"text_config": {**BASE["text_config"], "head_dim": 16}}, "head_dim")]:
        cfg = assistant_config_from_dict({**BASE, **change})
        from minigemma.assistant.decoder import check_pairing

        with pytest.raises(ConfigError, match=message):
            check_pairing(cfg.text, cfg.backbone_hidden_size, model.config.text)
    json.dumps(BASE)  # the base config itself is valid JSON, as a file would hold it


@given(drafting_case())
@settings(max_examples=4)
def test_trace_names_match_the_reference_hooks(case):
    """`trace_draft` names every step of a draft step; the reference's modules, hooked as
    `verify/reference.py` hooks the target's, give the same values under the same names."""
    from minigemma.generate.speculative import trace_draft
    from minigemma.verify.reference import _has, _keeper, layer_points
    from minigemma.verify.torch_adapter import hook as _hook

    tk, ak, ids, next_token, split, seed = case
    target, ref = reference_text_model(tk, seed=seed), reference_assistant(ak, seed + 1)
    ours = trace_draft(our_model(target), our_assistant(ref), ids, next_token)
    raw = {}
    handles = [_hook(ref.pre_projection, "output", _keeper(raw, "assistant.pre_projection")),
               _hook(ref.model.norm, "output", _keeper(raw, "assistant.final_norm")),
               _hook(ref.post_projection, "output", _keeper(raw, "assistant.post_projection"))]
    for i, layer in enumerate(ref.model.layers):
        handles += [_hook(layer.get_submodule(path), point, _keeper(raw, f"assistant.layers.{i}.{name}"))
                    for name, path, point in layer_points(layer) if _has(layer, path)]
    try:
        logits, _ = reference_step(target, ref, ids, next_token)
    finally:
        for h in handles:
            h.remove()
    raw = {name: t[0].float().numpy() for name, t in raw.items()}
    raw["assistant.logits"] = logits[None]
    assert set(ours) == set(raw)
    for name, value in ours.items():
        np.testing.assert_allclose(value, raw[name].reshape(value.shape), **TOL, err_msg=name)
    assert list(ours)[0] == "assistant.pre_projection" and list(ours)[-1] == "assistant.logits"
