"""`minigemma quantize --type Q4_K|Q5_K|Q6_K|Q4_K_M|Q5_K_M`: the K-quant writer, against llama.cpp.

* Our K blocks read the same through the `gguf` package's dequantizer (independent of ours) as
  through minigemma's, bit for bit, and each value is within the format's error of its original.
* Byte for byte against llama.cpp's own quantizer (tests/data/kquant_llama_blocks.npz, made by
  llama-quantize: tests/kquant_fixtures.py): every block identical, edge cases included. Exact
  equality is possible because ggml-quants.c is compiled without fused multiply-adds or reordered
  sums (ggml-base has no -mfma, -O3 without -ffast-math): our float32 operations, sums left to
  right, round as the C does.
* Whole files against llama-quantize's (tests/data/gguf_llama_quantize_k_listings.json): for
  random checkpoints with 256-wide rows, for narrow ones where every K row falls back, and for
  E2B's 35-layer plan (narrow: each Q6_K choice shows as its fallback Q8_0), our Q4_K_M / Q5_K_M
  / Q6_K file has llama-quantize's keys and, tensor by tensor, its type, shape and bytes (sha256):
  the per-tensor mix rule and the quantizers at once.
* A Q4_K_M file of a random Gemma 3 checkpoint loads in transformers' GGUF reader and in
  minigemma with equal logits (1e-4); a Gemma 4 one (which transformers' reader refuses) gives in
  minigemma transformers' logits on the weights the file stores.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from gguf_write_fixtures import listing, write_case
from hypothesis import given, note, settings
from hypothesis import strategies as st
from kquant_fixtures import (DEEP_CASE, K_CASES, K_LISTINGS, NARROW_CASES, case_file_types, load_blocks, row_kinds,
                             write_deep_case, write_k_case)

import minigemma
from minigemma.cli import main
from minigemma.weights.gguf_write_types import more_bits
from minigemma.weights.quants import TYPE_IDS, dequantize
from minigemma.weights.quants_k import K_QUANTIZERS

LLAMA = json.loads(K_LISTINGS.read_text())["cases"]
KINDS = list(row_kinds(np.random.default_rng(0)))
HALF_ULP = 2.0**-25  # half the smallest float16 step: the most rounding a tiny d or dmin can lose
# per type: levels a grid has, the largest scale code x level a float16 rounding of d (and dmin) multiplies
LEVELS = {"Q4_K": 15, "Q5_K": 31, "Q6_K": 32}
SLACK = {"Q4_K": 2 * 63 * 15 * HALF_ULP, "Q5_K": 2 * 63 * 31 * HALF_ULP, "Q6_K": 128 * 32 * HALF_ULP}
STEPS = {"Q4_K": 1.5, "Q5_K": 1.5, "Q6_K": 1.0}  # measured on 12k drawn blocks: 1.10, 1.20, 0.67


def quantize(src, out, type_name) -> None:
    assert main(["quantize", str(src), str(out), "--type", type_name]) == 0


def step(type_name: str, x: np.ndarray) -> np.ndarray:
    """One step of a uniform grid of the type's levels over each block (rows of 256): over
    [min(x, 0), max x] for Q4_K / Q5_K (scale and minimum), over [-max|x|, max|x|] for Q6_K."""
    if type_name == "Q6_K":
        return np.abs(x).max(-1) / LEVELS[type_name]
    return (x.max(-1) - np.minimum(x.min(-1), 0)) / LEVELS[type_name]


@settings(max_examples=12)
@given(type_name=st.sampled_from(sorted(K_QUANTIZERS)), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
       magnitude=st.integers(-3, 1), seed=st.integers(0, 2**32 - 1))  # x 10 keeps huge_1e4 rows 10x below float16's overflow
def test_k_blocks_read_the_same_in_gguf_and_stay_within_the_format_error(type_name, kinds, magnitude, seed):
    """The error of one value is at most about one step of the block's grid: half a step from
    rounding, plus what the 6-bit (Q6_K: 8-bit) sub-block scales and mins lose against the fitted
    floats and what the fit's clipping at the grid's ends costs (`STEPS`); blocks of tiny values
    add the float16 rounding of d and dmin times the largest codes (`SLACK`). (Blocks whose scales
    would pass float16's largest, 65504, values beyond ~4e6, are no format's: llama-quantize refuses them.)"""
    note(f"{type_name}: {kinds} x 1e{magnitude}")
    rng = np.random.default_rng(seed)
    drawn = row_kinds(rng)
    x = np.stack([drawn[k] for k in kinds]) * np.float32(10.0**magnitude)  # (blocks, 256)
    raw = K_QUANTIZERS[type_name](x.reshape(-1))  # (blocks, block bytes)
    ours = dequantize(raw.reshape(1, -1), TYPE_IDS[type_name], x.size).reshape(x.shape)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name]).reshape(x.shape)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    err = np.abs(ours - x).max(-1)
    assert (err <= STEPS[type_name] * step(type_name, x) + SLACK[type_name]).all(), (err, step(type_name, x))


@pytest.mark.parametrize("type_name", sorted(K_QUANTIZERS))
def test_k_quantizers_reproduce_llama_quantize_bytes(type_name):
    fixture = load_blocks()
    ours = K_QUANTIZERS[type_name](fixture["values"])
    same = (ours == fixture[type_name]).all(-1)
    assert same.all(), f"blocks differing from llama-quantize's: {[KINDS[i] for i in np.flatnonzero(~same)]}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("k_checkpoints")
    found = {case: write_k_case(case, root) for case in K_CASES} | {DEEP_CASE: write_deep_case(root)}
    return found | {case: write_case(case, root) for case in NARROW_CASES}


@pytest.mark.parametrize("case_type", [f"{c}/{t}" for c in (*K_CASES, *NARROW_CASES, DEEP_CASE) for t in case_file_types(c)])
def test_file_equals_llama_quantize_output(case_type, checkpoints, tmp_path):
    """Keys and tensors as llama-quantize wrote them from the converter's F32 file (it lists the
    tensors sorted by layer, we in the converter's order: compared by name)."""
    case, type_name = case_type.split("/")
    out = tmp_path / "out.gguf"
    quantize(checkpoints[case], out, type_name)
    ours, theirs = listing(out), LLAMA[case_type]
    assert {k[0]: k[1:] for k in ours["keys"]} == {k[0]: k[1:] for k in theirs["keys"]}
    mine, expected = {t[0]: t[1:] for t in ours["tensors"]}, {t[0]: t[1:] for t in theirs["tensors"]}
    assert sorted(mine) == sorted(expected)
    for name, want in expected.items():
        assert mine[name] == want, name
    if case in K_CASES:  # the fixture holds every kind of tensor the mix distinguishes
        kinds = {t[1] for t in theirs["tensors"]}
        assert {"F32", "Q6_K", type_name[:4]} <= kinds


def test_values_beyond_the_float16_scales_are_named(tmp_path):
    """A weight of 1e9 would need a float16 block scale past 65504: the file would hold inf, which
    llama-quantize refuses (ggml_validate_row_data); so do we, naming the tensor."""
    from safetensors.numpy import load_file, save_file

    from minigemma.errors import InputError
    from minigemma.text.config import load_config
    from minigemma.weights.gguf_write import write_gguf

    src = write_k_case("gemma3_k", tmp_path, layers=2)
    tensors = load_file(src / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name][3, 5] = 1e9
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    for type_name in ("Q4_K_M", "Q6_K"):
        with pytest.raises(InputError, match=rf"{name}: values up to 1e\+09 overflow the float16 scales of Q6_K blocks"):
            write_gguf(src, tmp_path / "m.gguf", load_config(src).text, type_name)


def test_more_bits_spreads_over_the_layers():
    """llama.cpp's use_more_bits on 32 layers: the first and last 4, and every third between."""
    assert [i for i in range(32) if more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def logits(model, ids) -> np.ndarray:
    return np.asarray(model.forward(ids))


def test_gemma3_q4_k_m_loads_in_transformers_and_minigemma(tmp_path):
    """Two layers of gemma3_k: in float32 both readers drift from the float64 logits by ~1e-4 per
    few layers of these random weights (10 layers: 2e-4), which would hide what this test is about."""
    from transformers import AutoModelForCausalLM

    quantize(write_k_case("gemma3_k", tmp_path, layers=2), tmp_path / "m.gguf", "Q4_K_M")
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert {"Q4_K", "Q6_K"} <= kinds
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32, attn_implementation="eager")
    ids = np.random.default_rng(3).integers(3, 4096, 40)  # longer than the window (16)
    with torch.no_grad():
        expected = ref(input_ids=torch.as_tensor(ids)[None], use_cache=False).logits[0].numpy()
    np.testing.assert_allclose(logits(minigemma.load(str(tmp_path / "m.gguf")), ids), expected, rtol=1e-4, atol=1e-4)


def test_gemma4_q4_k_m_in_minigemma_is_the_reference_on_the_stored_weights(checkpoints, tmp_path):
    """transformers' GGUF reader refuses Gemma 4 files with per-layer arrays (DESIGN.md), so the
    reference is transformers on the checkpoint with every weight replaced by the file's
    (dequantized with the gguf package)."""
    from test_gguf_write import expected_name
    from transformers import AutoModelForCausalLM

    src = checkpoints["gemma4_k"]
    quantize(src, tmp_path / "m.gguf", "Q4_K_M")
    stored = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert {"Q4_K", "Q6_K"} <= {t.tensor_type.name for t in stored.values()}
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, ref.config.num_hidden_layers)
    with torch.no_grad():
        for name, w in ref.state_dict().items():
            if name == "lm_head.weight":
                continue  # tied
            t = stored[expected_name(names, name)]
            w.copy_(torch.from_numpy(np.array(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type), np.float32).reshape(w.shape)))
    ids = np.random.default_rng(4).integers(3, 4096, 40)
    with torch.no_grad():
        expected = ref(input_ids=torch.as_tensor(ids)[None], use_cache=False).logits[0].numpy()
    np.testing.assert_allclose(logits(minigemma.load(str(tmp_path / "m.gguf")), ids), expected, rtol=1e-4, atol=1e-4)
