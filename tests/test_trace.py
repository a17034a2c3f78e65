"""Named activations: minigemma's trace against the reference's forward hooks on drawn configs
(every switch, both layouts, and with images), the forward order, glob selection, and the docs
table kept equal to the code that captures the reference."""

import re
from pathlib import Path

import numpy as np
import pytest
from gemma_reference import reference_text_model, text_config_kwargs
from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st
from test_model import EVERYTHING_ON
from test_vision_model import BUDGET, drawn_images, token_types
from vision_reference import image_prompt, reference_multimodal_model, token_ids, vision_config_kwargs

import minigemma
from minigemma.vision.image import preprocess
from minigemma.verify.trace import (
    AUDIO_AFTER_LAYERS,
    AUDIO_BEFORE_LAYERS,
    AUDIO_LAYER_STEPS,
    LAYER_STEPS,
    SECTIONS,
    TEXT_AFTER_LAYERS,
    TEXT_BEFORE_LAYERS,
    UNIFIED_AUDIO_STEPS,
    UNIFIED_VISION_STEPS,
    VISION_AFTER_LAYERS,
    VISION_BEFORE_LAYERS,
    VISION_LAYER_STEPS,
    forward_order,
    order_key,
)
from minigemma.verify import reference as reference_trace

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


@settings(max_examples=4, phases=[Phase.explicit, Phase.generate])  # shrinking a model takes minutes
@given(
    text=text_config_kwargs(max_layers=3),
    vision=vision_config_kwargs(),
    sizes=st.lists(st.tuples(st.integers(4, 120), st.integers(4, 120)), min_size=1, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_names_with_images_match_the_reference_hooks(text, vision, sizes, seed, tmp_path_factory):
    """With images, the vision tower's names come first, each image's values one after another,
    and the text names see the soft tokens merged in; all equal the reference's hooked values."""
    text = dict(text, use_bidirectional_attention="vision", hidden_size=32)  # widths as test_vision_model's
    if text["hidden_size_per_layer_input"]:
        text["hidden_size_per_layer_input"] = 8
    vision = dict(vision, position_embedding_size=BUDGET * vision["pooling_kernel_size"])
    note(f"text config: {text}\nvision config: {vision}\nimage sizes: {sizes}")
    rng = np.random.default_rng(seed)
    inputs = preprocess(drawn_images(rng, sizes), BUDGET, vision["patch_size"], vision["pooling_kernel_size"])
    ids = image_prompt(rng, text["vocab_size"], inputs.num_soft_tokens_per_image)
    ref = reference_multimodal_model(text, vision, seed)
    model = saved_model(ref, tmp_path_factory.mktemp("model"))
    media = dict(pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids)

    ours = model.trace(ids, **media)
    theirs = reference_trace.capture(ref, ids, **media, mm_token_type_ids=token_types(ids, text["vocab_size"]))
    assert list(ours) == list(theirs)
    assert list(ours)[: vision["num_hidden_layers"] + 4] == [
        "vision.patch_embed", *(f"vision.layers.{j}.out" for j in range(vision["num_hidden_layers"])), "vision.pooled",
        "vision.out", "vision.soft_tokens",
    ]  # fmt: skip
    for name, expected in theirs.items():
        assert ours[name].shape == expected.shape, name
        np.testing.assert_allclose(ours[name], expected, err_msg=name, **TOL)
    soft = sum(inputs.num_soft_tokens_per_image)
    real_patches = int(np.all(inputs.image_position_ids != -1, axis=-1).sum())
    assert ours["vision.soft_tokens"].shape == (soft, 32) and ours["vision.patch_embed"].shape[0] == real_patches
    placeholders = ids == token_ids(text["vocab_size"])["image_token_id"]
    np.testing.assert_array_equal(ours["embed"][placeholders], ours["vision.soft_tokens"])
    np.testing.assert_array_equal(ours["logits"], model.forward(ids, **media))


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


def test_forward_order_is_vision_then_text_numeric_by_layer_and_unknown_names_last():
    names = ["logits", "layers.10.attn.in", "mystery", "layers.2.out", "layers.2.attn.in", "embed", "ple.inputs",
             "vision.soft_tokens", "vision.layers.10.out", "vision.layers.9.out", "vision.patch_embed", "audio.x",
             "audio.soft_tokens", "audio.layers.1.attn.in", "audio.layers.0.out", "audio.subsample"]
    assert forward_order(names) == [
        "vision.patch_embed", "vision.layers.9.out", "vision.layers.10.out", "vision.soft_tokens",
        "audio.subsample", "audio.layers.0.out", "audio.layers.1.attn.in", "audio.soft_tokens",
        "embed", "ple.inputs", "layers.2.attn.in", "layers.2.out", "layers.10.attn.in", "logits", "audio.x", "mystery",
    ]  # fmt: skip


def doc_table() -> list[tuple[str, str, str, str]]:
    """(name, dtype, module, point) of each row of the names table in docs/verify.md."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[3].startswith(("`{text}", "`model.")):
            rows.append((cells[0].strip("`"), cells[2], cells[3].strip("`"), cells[4]))
        elif len(cells) == 6 and cells[0] == "`logits`":
            rows.append(("logits", cells[2], "", cells[4]))
    return rows


def in_code() -> set:
    """The same rows from `reference_trace`'s tables: what its hooks capture, and where."""
    rt = reference_trace
    points = rt.ATTENTION_POINTS + rt.DENSE_POINTS + rt.MOE_POINTS + rt.PLE_POINTS + rt.LAYER_OUTPUT
    rows = {("layer", *p) for p in points}
    rows |= {("model", name, path, point) for name, path, point in rt.MODEL_POINTS}
    rows |= {("model", "ple.inputs", "layers.{i}", "input 1"), ("model", "logits", "", "output `.logits`")}
    rows |= {("vision", name, path, point) for name, path, point in rt.VISION_POINTS}
    rows |= {("vision layer", step, path, point) for step, path, point in rt.VISION_LAYER_POINTS}
    rows |= {("audio", name, path, point) for name, path, point in rt.AUDIO_POINTS}
    rows |= {("audio layer", step, path, point) for step, path, point in rt.AUDIO_LAYER_POINTS}
    rows |= {("unified", name, path, point) for name, path, point in rt.UNIFIED_VISION_POINTS + rt.UNIFIED_AUDIO_POINTS}
    return rows


def documented(name: str, module: str, point: str) -> tuple:
    for kind, prefix, owner in (
        ("layer", "layers.{i}.", "{text}.layers.{i}"),
        ("vision layer", "vision.layers.{j}.", "model.vision_tower.encoder.layers.{j}"),
        ("audio layer", "audio.layers.{j}.", "model.audio_tower.layers.{j}"),
    ):
        if name.startswith(prefix):
            return (kind, name[len(prefix) :], module[len(owner) :].lstrip("."), point)
    if name.startswith(("vision.", "audio.", "unified.")):
        return (name.split(".")[0], name, module[len("model.") :], point)
    return ("model", name, module[len("{text}.") :], point)


def test_docs_table_is_the_reference_mapping_in_code():
    """docs/verify.md's table lists exactly the names of the forward-order tables and, for each,
    exactly the module and point `reference_trace` hooks, in forward order."""
    table = doc_table()
    for name, dtype, _, _ in table:
        assert dtype == ("int64" if name.endswith("top_k_index") else "float32"), name
    assert {documented(name, module, point) for name, _, module, point in table} == in_code()
    names = [name for name, *_ in table]
    vision = [n for n in names if n.startswith("vision.")]
    assert vision == [f"vision.{s}" for s in VISION_BEFORE_LAYERS + tuple(f"layers.{{j}}.{s}" for s in VISION_LAYER_STEPS) + VISION_AFTER_LAYERS]
    audio = [n for n in names if n.startswith("audio.")]
    assert audio == [f"audio.{s}" for s in AUDIO_BEFORE_LAYERS + tuple(f"layers.{{j}}.{s}" for s in AUDIO_LAYER_STEPS) + AUDIO_AFTER_LAYERS]
    unified = [n for n in names if n.startswith("unified.")]
    assert unified == [f"unified.vision.{s}" for s in UNIFIED_VISION_STEPS] + [f"unified.audio.{s}" for s in UNIFIED_AUDIO_STEPS]
    assert names[: len(vision) + len(audio) + len(unified)] == vision + audio + unified  # the towers (or embedders) run first
    text = [n for n in names if not n.startswith(("vision.", "audio.", "unified.", "layers."))]
    assert text == list(TEXT_BEFORE_LAYERS + TEXT_AFTER_LAYERS)
    steps = list(dict.fromkeys(n[len("layers.{i}.") :] for n in names if n.startswith("layers.")))
    assert steps == list(LAYER_STEPS)
    assert re.search(r"`layers\.\{i\}\.attn\.q`.*before RoPE", DOC.read_text())
