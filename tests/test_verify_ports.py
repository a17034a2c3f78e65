"""Verifying a PyTorch port with the adapter (`minigemma.verify.torch_adapter`): the ready table
traces the reference exactly as `reference.capture` does; ports built here from the reference
with one planted bug each (the router fed the normed input; a KV-shared layer reading the wrong
layer; a bf16 port scaling attention by head_dim^-0.5) are traced through the adapter, and
`compare` names the planted step. The bug-free bf16 port gets a clean reduced-precision verdict."""

import copy

import numpy as np
import pytest
import torch
from gemma_reference import reference_text_model
from transformers import Gemma4ForCausalLM

from minigemma.cli import main
from minigemma.errors import InputError
from minigemma.verify import reference as reference_trace
from minigemma.verify.torch_adapter import drop_batch, hf_kv_sources, reference_table, split_heads, trace_torch
from minigemma.verify.trace_file import load_trace, save_trace, trace_metadata

# every text feature: MoE, PLE, double-wide MLP, S S G S | S G with the last two layers KV-shared
CONFIG = {
    "vocab_size": 128, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 6,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "global_head_dim": 16,
    "sliding_window": 6, "hidden_size_per_layer_input": 8, "vocab_size_per_layer_input": 128,
    "num_kv_shared_layers": 2, "use_double_wide_mlp": True, "enable_moe_block": True, "num_experts": 4,
    "top_k_experts": 2, "moe_intermediate_size": 16, "final_logit_softcapping": 30.0,
    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2,
}  # fmt: skip
IDS = [int(i) for i in np.random.default_rng(7).integers(0, CONFIG["vocab_size"], 12)]
TABLE = reference_table(CONFIG["num_attention_heads"], CONFIG["num_hidden_layers"], moe=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The randomised reference, its weights rounded to bf16 (as released checkpoints hold them),
    saved in float32; and its float32 trace written by `trace --reference`."""
    path = tmp_path_factory.mktemp("ckpt")
    ref = reference_text_model(CONFIG, "causal", seed=3)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ref.save_pretrained(path)
    ids = ",".join(map(str, IDS))
    assert main(["trace", "--reference", "--model", str(path), "--ids", ids, "--out", str(path / "ref.safetensors")]) == 0
    return path


def load_port(path, dtype=torch.float32, attn="eager"):
    return Gemma4ForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn).eval()


def trace_port(port, out, kv_sources=None) -> str:
    """The port traced through the adapter with the ready table, written as a port would."""
    run = lambda: port(input_ids=torch.tensor([IDS]), use_cache=False, output_hidden_states=True)  # noqa: E731
    save_trace(str(out), trace_torch(port, TABLE, run), trace_metadata(None, IDS, "a port", kv_sources=kv_sources))
    return str(out)


def compare(capsys, *argv) -> tuple[int, list[str], str]:
    capsys.readouterr()
    status = main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_ready_table_traces_the_reference_as_capture_does(checkpoint):
    ref = load_port(checkpoint)
    ours = trace_torch(ref, TABLE, lambda: ref(input_ids=torch.tensor([IDS]), use_cache=False, output_hidden_states=True))
    captured = reference_trace.capture(ref, IDS)
    assert set(captured) - set(ours) == {"ple.inputs"}  # a stack over layers, not one module's value
    assert list(ours) == [n for n in captured if n in ours]  # forward order
    for name, value in ours.items():
        assert value.dtype == captured[name].dtype, name
        np.testing.assert_array_equal(value, captured[name], err_msg=name)
    assert hf_kv_sources(ref) == {4: 3, 5: 2} == reference_trace.kv_sources(ref)


def test_ready_table_without_ple_or_kv_sharing():
    kwargs = dict(CONFIG, hidden_size_per_layer_input=0, num_kv_shared_layers=0, use_double_wide_mlp=False)
    ref = reference_text_model(kwargs, "causal", seed=5)
    ours = trace_torch(ref, TABLE, lambda: ref(input_ids=torch.tensor([IDS]), use_cache=False, output_hidden_states=True))
    captured = reference_trace.capture(ref, IDS)
    assert list(ours) == list(captured)
    for name, value in ours.items():
        np.testing.assert_array_equal(value, captured[name], err_msg=name)
    assert hf_kv_sources(ref) == {}


def test_table_points_and_fixups_and_errors(checkpoint):
    ref = load_port(checkpoint)
    run = lambda: ref(input_ids=torch.tensor([IDS]), use_cache=False, output_hidden_states=True)  # noqa: E731
    table = [
        ("embed", "model.layers.0", "kwarg:hidden_states"),
        ("ple.inputs.{i}", "model.layers.{i}", "input[1]"),  # per_layer_input, given by position
        ("layers.{i}.attn.context", "model.layers.{i}.self_attn.o_proj", "input", (drop_batch, split_heads(4))),
        ("logits", "", "output.logits"),
    ]
    acts = trace_torch(ref, table, run)
    captured = reference_trace.capture(ref, IDS)
    np.testing.assert_array_equal(acts["embed"], captured["embed"])
    for i in range(CONFIG["num_hidden_layers"]):
        np.testing.assert_array_equal(acts[f"ple.inputs.{i}"], captured["ple.inputs"][:, i])
        np.testing.assert_array_equal(acts[f"layers.{i}.attn.context"], captured[f"layers.{i}.attn.context"])
    np.testing.assert_array_equal(acts["logits"], captured["logits"])
    with pytest.raises(InputError, match="no module of the model matches 'model.blocks.{i}.attn'"):
        trace_torch(ref, [("layers.{i}.attn.q", "model.blocks.{i}.attn", "output")], run)
    with pytest.raises(InputError, match="table point 'outputs'"):
        trace_torch(ref, [("logits", "", "outputs")], run)
    with pytest.raises(InputError, match=r"'out' is a KVSharingDict at its table point, not a tensor"):
        trace_torch(ref, [("out", "model.layers.0.self_attn", "kwarg:shared_kv_states")], run)  # a KVSharingDict
    with pytest.raises(InputError, match="ran twice"):
        trace_torch(ref, [("x", "model.norm", "output")], lambda: (run(), run()))


def test_planted_router_bug_is_named(checkpoint, tmp_path, capsys):
    """Two PyTorch ports and DeepMind's JAX code feed the router the normed input
    (pre_feedforward_layernorm_2(x)); transformers feeds it the raw residual."""
    port = load_port(checkpoint)
    for layer in port.model.layers:
        norm, route = copy.deepcopy(layer.pre_feedforward_layernorm_2), layer.router.forward
        layer.router.forward = lambda x, norm=norm, route=route: route(norm(x))
    ours = trace_port(port, tmp_path / "port.safetensors")
    status, lines, err = compare(capsys, ours, checkpoint / "ref.safetensors")
    assert status == 2 and "missing 1 activation(s)" in err and "ple.inputs" in err  # the table has no ple.inputs
    status, lines, err = compare(capsys, ours, checkpoint / "ref.safetensors", "--common")
    assert status == 1
    assert err.splitlines()[-1] == f"--common: skipped 0 only in {ours}; 1 only in {checkpoint / 'ref.safetensors'} (ple.inputs)"
    assert lines[-1].startswith("first divergence: layers.0.moe.router.probs ("), lines[-1]
    # the experts' input does not depend on the router: it agrees again
    assert lines[-2].startswith("after it: ") and "layers.0.moe.experts.in" in lines[-2]


def test_planted_kv_source_bug_is_named_with_both_sources(checkpoint, tmp_path, capsys):
    """codex and the JAX code hard-code the sources (last unshared layer minus 2 for sliding):
    here layer 4 (sliding, KV-shared) reads layer 1 instead of layer 3."""
    port = load_port(checkpoint)
    attn = [layer.self_attn for layer in port.model.layers]
    attn[3].store_full_length_kv, attn[1].store_full_length_kv = False, True
    assert hf_kv_sources(port) == {4: 1, 5: 2}
    ours = trace_port(port, tmp_path / "port.safetensors", kv_sources=hf_kv_sources(port))
    status, lines, err = compare(capsys, ours, checkpoint / "ref.safetensors", "--common")
    assert status == 1
    assert lines[-1].startswith("first divergence: layers.4.attn.context (")
    assert lines[-1].endswith("; layer 4 is KV-shared: it reads layer 1's keys/values in A, layer 3's in B"), lines[-1]
    assert "note: the traces disagree on which layer's keys/values KV-shared layers read (layer 4: 1 vs 3; A vs B)" in err
    # a port that does not state its sources: compare says the reference's
    ours = trace_port(port, tmp_path / "port_bare.safetensors")
    status, lines, err = compare(capsys, ours, checkpoint / "ref.safetensors", "--common")
    assert lines[-1].endswith("; layer 4 is KV-shared: it reads layer 3's keys/values"), lines[-1]


@pytest.fixture(scope="module")
def bf16_reference(checkpoint):
    out = checkpoint / "ref_bf16.safetensors"
    ids = ",".join(map(str, IDS))
    assert main(["trace", "--reference", "--dtype", "bfloat16", "--model", str(checkpoint), "--ids", ids, "--out", str(out)]) == 0
    assert load_trace(str(out)).metadata["dtype"] == "bfloat16"
    return out


def bf16_port(checkpoint):
    """A correct bf16 port that rounds differently from the reference: another attention kernel."""
    return load_port(checkpoint, torch.bfloat16, "sdpa")


def test_clean_bf16_port_gets_a_clean_verdict(checkpoint, bf16_reference, tmp_path, capsys):
    ours = trace_port(bf16_port(checkpoint), tmp_path / "port.safetensors")
    status, lines, _ = compare(capsys, ours, bf16_reference, "--common")
    assert status == 1  # element-wise, bf16 rounding differs everywhere
    status, lines, _ = compare(capsys, ours, bf16_reference, "--common", "--spread-from", checkpoint / "ref.safetensors")
    assert status == 0, "\n".join(lines)
    assert lines[-1].startswith("all ") and "error within 4x the bfloat16 reference's own spread from float32" in lines[-1]


def test_bf16_port_with_a_real_bug_is_named(checkpoint, bf16_reference, tmp_path, capsys):
    """The habit from Llama-like models: queries scaled by head_dim^-0.5 (Gemma 4's q/k norms make it 1)."""
    port = bf16_port(checkpoint)
    for layer in port.model.layers:
        layer.self_attn.scaling = layer.self_attn.head_dim**-0.5
    ours = trace_port(port, tmp_path / "port.safetensors")
    status, lines, _ = compare(capsys, ours, bf16_reference, "--common", "--spread-from", checkpoint / "ref.safetensors")
    assert status == 1
    assert lines[-1].startswith("first step beyond the bfloat16 spread: layers.0.attn.context ("), lines[-1]


def test_spread_verdict_refuses_a_float32_b(checkpoint, tmp_path, capsys):
    ref = checkpoint / "ref.safetensors"
    status, _, err = compare(capsys, ref, ref, "--spread-from", ref)
    assert status == 2 and "should be the reference at the port's precision" in err
