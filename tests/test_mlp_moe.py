"""GeGLU MLP, MoE router, experts and the shared-expert combination against `Gemma4TextMLP`,
`Gemma4TextRouter`, `Gemma4TextExperts` (router scales and per-expert scales random)."""

import numpy as np
import torch
from gemma_reference import as_checkpoint, make_text_config, our_text_config, randomize, text_config_kwargs, to_np
from hypothesis import given, note
from hypothesis import strategies as st
from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts, Gemma4TextMLP, Gemma4TextRouter

from minigemma.weights.checkpoint import ArrayCheckpoint
from minigemma.text.mlp import load_mlp, mlp
from minigemma.text.moe import experts, load_moe, route
from minigemma.text.ops import gelu_tanh

TOL = dict(rtol=1e-5, atol=1e-5)


@given(kwargs=text_config_kwargs(), data=st.data())
def test_mlp_matches_reference_including_double_wide(kwargs, data):
    cfg = make_text_config(kwargs)
    ours = our_text_config(cfg)
    layer = data.draw(st.integers(0, cfg.num_hidden_layers - 1), label="layer")
    tokens = data.draw(st.integers(1, 9), label="tokens")
    spec = ours.layers[layer]
    note(f"config: {kwargs}\nlayer: {spec}")
    ref = randomize(Gemma4TextMLP(cfg, layer), layer)
    assert ref.intermediate_size == spec.mlp_intermediate  # double-wide exactly where the reference is
    x = torch.randn(tokens, cfg.hidden_size)
    w = load_mlp(as_checkpoint(ref, "mlp."), "mlp", cfg.hidden_size, spec.mlp_intermediate)
    np.testing.assert_allclose(mlp(x.numpy(), w, gelu_tanh), to_np(ref(x)), **TOL)


@given(kwargs=text_config_kwargs(moe=True), tokens=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_router_and_experts_match_reference(kwargs, tokens, seed):
    cfg = make_text_config(kwargs)
    ours = our_text_config(cfg)
    note(f"config: {kwargs}")
    router = randomize(Gemma4TextRouter(cfg), seed)
    ref_experts = randomize(Gemma4TextExperts(cfg), seed + 1)
    h = torch.randn(tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(seed)) * 2

    probs_ref, weights_ref, index_ref = router(h)
    state = {f"router.{k}": v for k, v in router.state_dict().items()}
    state.update({f"experts.{k}": v for k, v in ref_experts.state_dict().items()})
    for norm in ("pre_feedforward_layernorm_2", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2"):
        state[f"{norm}.weight"] = torch.ones(cfg.hidden_size)  # loaded, unused here
    ckpt = ArrayCheckpoint({f"m.{k}": to_np(v) for k, v in state.items()})
    w = load_moe(ckpt, "m", cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size)

    probs, weights, index = route(h.numpy(), w.router, ours.top_k_experts, ours.rms_norm_eps)
    np.testing.assert_allclose(probs, to_np(probs_ref), **TOL)
    np.testing.assert_array_equal(index, index_ref.numpy())
    np.testing.assert_allclose(weights, to_np(weights_ref), **TOL)

    x = torch.randn(tokens, cfg.hidden_size)
    with torch.no_grad():
        expected = ref_experts(x, index_ref, weights_ref)
    np.testing.assert_allclose(experts(x.numpy(), index, weights, w.experts, gelu_tanh), to_np(expected), **TOL)


def test_experts_skip_unrouted_experts_and_weight_each_slot():
    """Dispatch by expert: an expert no token chose contributes nothing (its weights may be NaN),
    and a token's output is the weighted sum of its chosen experts' outputs."""
    from minigemma.text.moe import ExpertWeights, expert_ffn

    rng = np.random.default_rng(0)
    n_exp, hidden, inter = 4, 6, 5
    w = ExpertWeights(
        gate_up_proj=rng.standard_normal((n_exp, 2 * inter, hidden)).astype(np.float32),
        down_proj=rng.standard_normal((n_exp, hidden, inter)).astype(np.float32),
    )
    w.gate_up_proj[3] = np.nan  # nobody routes to expert 3
    x = rng.standard_normal((3, hidden)).astype(np.float32)
    index = np.array([[0, 1], [2, 0], [1, 2]])
    weights = np.array([[0.7, 0.3], [0.5, 0.5], [1.0, 0.25]], np.float32)
    out = experts(x, index, weights, w, gelu_tanh)
    for t in range(3):
        expected = sum(weights[t, s] * expert_ffn(x[t : t + 1], w.gate_up_proj[e], w.down_proj[e], gelu_tanh)[0] for s, e in enumerate(index[t]))
        np.testing.assert_allclose(out[t], expected, rtol=1e-5, atol=1e-5)
