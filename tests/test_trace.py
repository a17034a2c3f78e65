"""Named activations: minigemma's trace against the reference's forward hooks on drawn configs
(every switch, both layouts), the forward order, glob selection, and the docs table kept equal
to the code that captures the reference."""

import re
from pathlib import Path

import numpy as np
import pytest
from gemma_reference import reference_text_model, text_config_kwargs
from hypothesis import given, note, settings
from hypothesis import strategies as st
from test_model import EVERYTHING_ON

import minigemma
from minigemma.trace import LAYER_STEPS, SECTIONS, TEXT_AFTER_LAYERS, TEXT_BEFORE_LAYERS, forward_order, order_key
from weights_tools import reference_trace

TOL = dict(rtol=1e-4, atol=1e-4)  # every name is a value of a whole forward pass
DOC = Path(__file__).resolve().parents[1] / "docs" / "verify.md"


def saved_model(ref, tmp):
    ref.save_pretrained(tmp)
    return minigemma.load(tmp)


@settings(max_examples=15)
@given(
    kwargs=text_config_kwargs(),
    layout=st.sampled_from(["causal", "conditional"]),
    bidirectional=st.sampled_from([None, None, "all"]),
    data=st.data(),
)
def test_every_name_matches_the_reference_hooks(kwargs, layout, bidirectional, data, tmp_path_factory):
    kwargs = dict(kwargs, use_bidirectional_attention=bidirectional)
    seq = data.draw(st.integers(1, 2 * kwargs["sliding_window"] + 3), label="seq")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}\nlayout: {layout}")
    ref = reference_text_model(kwargs, layout, seed)
    model = saved_model(ref, tmp_path_factory.mktemp("model"))
    ids = np.random.default_rng(seed).integers(0, kwargs["vocab_size"], seq)

    ours = model.trace(ids)
    theirs = reference_trace.capture(ref, ids)
    assert list(ours) == list(theirs)  # the same names, in the same (forward) order
    assert all(order_key(n)[0] < len(SECTIONS) for n in ours), "a name missing from the forward-order tables"
    for name, expected in theirs.items():
        got = ours[name]
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        np.testing.assert_allclose(got, expected, err_msg=name, **TOL)
    np.testing.assert_array_equal(ours["logits"], model.forward(ids))  # the trace is the forward pass


@pytest.mark.parametrize("moe", [True, False])
def test_trace_names_every_step(tmp_path, moe):
    """With every switch on, each layer of its kind names every step of the table; KV-shared
    layers have no k/v of their own; without MoE the feed-forward block ends at mlp.post_norm."""
    kwargs = dict(EVERYTHING_ON, enable_moe_block=moe)
    model = saved_model(reference_text_model(kwargs, "causal", seed=2), tmp_path)
    acts = model.trace(np.arange(6))
    layers = model.config.text.layers
    steps = {i: [n.split(".", 2)[2] for n in acts if n.startswith(f"layers.{i}.")] for i in range(len(layers))}
    own_kv = [s for s in LAYER_STEPS if moe or not s.startswith("moe.")]
    for spec in layers:
        expected = [s for s in own_kv if not (spec.reuses_kv and s in ("attn.k", "attn.v"))]
        assert steps[spec.index] == expected, spec
    assert [n for n in acts if not n.startswith("layers.")] == list(TEXT_BEFORE_LAYERS + TEXT_AFTER_LAYERS)
    t = model.config.text
    assert acts["layers.3.attn.q"].shape == (6, t.num_attention_heads, layers[3].head_dim)
    assert acts["layers.1.attn.k"].shape == (6, layers[1].num_kv_heads, layers[1].head_dim)
    assert acts["layers.4.mlp.gated"].shape == (6, layers[4].mlp_intermediate)  # double-wide
    assert acts["ple.inputs"].shape == (6, t.num_hidden_layers, t.hidden_size_per_layer_input)
    if moe:
        assert acts["layers.0.moe.router.top_k_index"].dtype == np.int64


def test_glob_patterns_select_names_in_forward_order(tmp_path):
    model = saved_model(reference_text_model(EVERYTHING_ON, "causal", seed=4), tmp_path)
    ids = np.array([3, 1, 4, 1, 5])
    everything = model.trace(ids)
    layer3 = model.trace(ids, names="layers.3.*")
    assert list(layer3) == [n for n in everything if n.startswith("layers.3.")]
    for name, value in layer3.items():
        np.testing.assert_array_equal(value, everything[name])
    both = model.trace(ids, names=["logits", "layers.?.out", "emb*"])
    assert list(both) == ["embed"] + [f"layers.{i}.out" for i in range(5)] + ["logits"]
    with pytest.raises(minigemma.InputError, match="'layers.9.*' matches no activation"):
        model.trace(ids, names=["layers.9.*"])
    with pytest.raises(minigemma.InputError, match=r"input_ids: trace takes one sequence of shape \(seq,\)"):
        model.trace(ids[None])
    with pytest.raises(minigemma.InputError, match="token id 999"):
        model.trace([999])


def test_forward_order_is_numeric_by_layer_and_puts_unknown_names_last():
    names = ["logits", "layers.10.attn.in", "mystery", "layers.2.out", "layers.2.attn.in", "embed", "ple.inputs"]
    assert forward_order(names) == [
        "embed", "ple.inputs", "layers.2.attn.in", "layers.2.out", "layers.10.attn.in", "logits", "mystery",
    ]  # fmt: skip


def doc_table() -> list[tuple[str, str, str, str]]:
    """(name, dtype, module, point) of each row of the names table in docs/verify.md."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[3].startswith("`{text}"):
            rows.append((cells[0].strip("`"), cells[2], cells[3].strip("`"), cells[4]))
        elif len(cells) == 6 and cells[0] == "`logits`":
            rows.append(("logits", cells[2], "", cells[4]))
    return rows


def test_docs_table_is_the_reference_mapping_in_code():
    """docs/verify.md's table lists exactly the names of the forward-order tables and, for each,
    exactly the module and point `reference_trace` hooks."""
    documented = set()
    for name, dtype, module, point in doc_table():
        assert dtype == ("int64" if name.endswith("top_k_index") else "float32"), name
        if name.startswith("layers.{i}."):
            step = name[len("layers.{i}.") :]
            path = module[len("{text}.layers.{i}") :].lstrip(".")
            documented.add(("layer", step, path, point))
        else:
            documented.add(("model", name, module[len("{text}.") :], point))
    points = reference_trace.ATTENTION_POINTS + reference_trace.DENSE_POINTS + reference_trace.MOE_POINTS
    points += reference_trace.PLE_POINTS + reference_trace.LAYER_OUTPUT
    in_code = {("layer", *p) for p in points}
    in_code |= {("model", n, path, point) for n, path, point in reference_trace.MODEL_POINTS}
    in_code |= {("model", "ple.inputs", "layers.{i}", "input 1"), ("model", "logits", "", "output `.logits`")}
    assert documented == in_code
    assert {s for kind, s, _, _ in documented if kind == "layer"} == set(LAYER_STEPS)
    table_order = [n for n, *_ in doc_table()]
    assert [n for n in table_order if not n.startswith("layers.")] == list(TEXT_BEFORE_LAYERS + TEXT_AFTER_LAYERS)
    steps = list(dict.fromkeys(n[len("layers.{i}.") :] for n in table_order if n.startswith("layers.")))
    assert steps == list(LAYER_STEPS)  # the table reads in forward order
    assert re.search(r"`layers\.\{i\}\.attn\.q`.*before RoPE", DOC.read_text())
