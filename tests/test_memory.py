"""Memory: weights kept as stored (bf16 bits and float32 both stay views of the mapped file),
kernels and twins giving the same whole-model logits as the reference, float32 activations
everywhere, and the E2B-sized random checkpoint: the published text dimensions, written a
block of rows at a time."""

import mmap

import numpy as np
import pytest
import torch
from gemma_reference import reference_logits, reference_text_model, text_config_kwargs
from hypothesis import given, note, settings
from hypothesis import strategies as st
from test_model import EVERYTHING_ON
from transformers import Gemma4ForCausalLM, Gemma4TextConfig

import minigemma
from minigemma.weights.checkpoint import StoredMatrix
from minigemma.cli.info import memory_bytes
from minigemma.text.config import config_from_dict
from minigemma.text.model import text_forward
from weights_tools import random_checkpoint
from weights_tools.random_checkpoint import PRESETS, expected_tensors, write_random_checkpoint

TOL = dict(rtol=1e-4, atol=1e-4)


def maps_a_file(a: np.ndarray) -> bool:
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return isinstance(a.obj if isinstance(a, memoryview) else a, mmap.mmap)


@settings(max_examples=6)
@given(kwargs=text_config_kwargs(), bf16=st.booleans(), data=st.data())
def test_kernels_and_twins_give_the_reference_logits(tmp_path_factory, kwargs, bf16, data):
    """Whole models, drawn configs: minigemma with kernels and NumPy-only both match the
    reference, from float32 files and from bf16 ones (kept as stored with kernels)."""
    seq = data.draw(st.integers(1, 3 * kwargs["sliding_window"] + 4), label="seq")
    note(f"config: {kwargs}\nbf16: {bf16}")
    ref = reference_text_model(kwargs, "causal", seed=seq)
    path = tmp_path_factory.mktemp("model")
    if bf16:  # the reference as a user gets it: the bf16 file read back in float32
        ref.to(torch.bfloat16).save_pretrained(path)
        ref = Gemma4ForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    else:
        ref.save_pretrained(path)
    ids = np.random.default_rng(seq).integers(0, kwargs["vocab_size"], seq)
    expected = reference_logits(ref, ids)
    fast, plain = minigemma.load(path, kernels=True), minigemma.load(path, kernels=False)
    np.testing.assert_allclose(fast.forward(ids), expected, **TOL)
    np.testing.assert_allclose(plain.forward(ids), expected, **TOL)


def test_weights_stay_as_stored_when_that_is_cheaper(tmp_path):
    """With kernels, matrices stay as stored, views of the mapped file: bf16 bits, or float32.
    Without, bf16 is widened at load and float32 stays a view. Norm vectors: float32 in memory."""
    ref = reference_text_model(EVERYTHING_ON, "causal", seed=1)
    ref.save_pretrained(tmp_path / "f32")
    ref.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    fast = minigemma.load(tmp_path / "bf16", kernels=True)
    layer = fast.weights.layers[0]
    assert isinstance(layer.mlp.up_proj, StoredMatrix) and maps_a_file(layer.mlp.up_proj.stored)
    assert layer.mlp.up_proj.stored.dtype == np.uint16  # bf16 bits
    assert isinstance(fast.weights.lm_head, StoredMatrix) and fast.weights.lm_head is fast.weights.embed  # tied
    assert layer.input_norm.dtype == np.float32 and not maps_a_file(layer.input_norm)
    plain = minigemma.load(tmp_path / "bf16", kernels=False)
    assert plain.weights.layers[0].mlp.up_proj.dtype == np.float32
    (fast_resident, fast_mapped), (plain_resident, plain_mapped) = memory_bytes(fast.weights), memory_bytes(plain.weights)
    # what kernels keep mapped as bf16, the twins hold widened in memory: twice the bytes
    assert fast_mapped > plain_mapped > 0  # the PLE table is mapped either way
    assert plain_resident - fast_resident == 2 * (fast_mapped - plain_mapped)
    f32 = minigemma.load(tmp_path / "f32", kernels=True).weights.layers[0].mlp.down_proj
    assert f32.stored.dtype == np.float32 and maps_a_file(f32.stored)
    f32 = minigemma.load(tmp_path / "f32", kernels=False).weights.layers[0].mlp.down_proj
    assert f32.dtype == np.float32 and maps_a_file(f32)


@pytest.mark.parametrize("kernels", [True, False])
def test_every_activation_is_float32(tmp_path, kernels):
    """No float64 sneaks into the forward pass: every named step is float32 (or integer indices)."""
    ref = reference_text_model(EVERYTHING_ON, "causal", seed=2)
    ref.to(torch.bfloat16).save_pretrained(tmp_path)
    model = minigemma.load(tmp_path, kernels=kernels)
    dtypes = {}
    ids = np.arange(11) % 128
    embeds, ple_ids = model.embed(ids)
    tap = lambda name, value: dtypes.setdefault(name, value.dtype)  # noqa: E731
    text_forward(embeds, ple_ids, model.weights, model.config.text, np.arange(len(ids)), tap=tap, backend=model.backend)
    assert {"embed", "ple.inputs", "layers.0.moe.out", "logits"} <= set(dtypes)
    floats = {name: d for name, d in dtypes.items() if not name.endswith("top_k_index")}
    assert set(floats.values()) == {np.dtype(np.float32)}, floats


def test_e2b_preset_has_the_published_text_dimensions():
    """hidden 1536, 35 layers (4 sliding : 1 global), 8 heads, 1 KV head, head dims 256 / 512,
    MLP 6144 and double-wide on the 20 KV-shared layers, PLE 256, vocab 262144, window 512; and
    the reference reads the same config into a model with exactly the tensors we write."""
    preset = PRESETS["e2b"]
    t = config_from_dict(preset).text
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.vocab_size) == (1536, 35, 8, 262144)
    assert (t.hidden_size_per_layer_input, t.sliding_window, t.num_kv_shared_layers) == (256, 512, 20)
    assert t.layer_types == tuple(("full_attention" if i % 5 == 4 else "sliding_attention") for i in range(35))
    assert {(s.layer_type, s.head_dim, s.num_kv_heads) for s in t.layers} == {
        ("sliding_attention", 256, 1),
        ("full_attention", 512, 1),
    }
    assert [s.mlp_intermediate for s in t.layers] == [6144] * 15 + [12288] * 20
    kwargs = {k: v for k, v in preset.items() if k != "model_type"}
    with torch.device("meta"):
        ref = Gemma4ForCausalLM(Gemma4TextConfig(**kwargs))
    shapes = expected_tensors(preset)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items() if k != "lm_head.weight"} == shapes  # tied head


def test_random_tensors_are_made_a_block_of_rows_at_a_time(tmp_path, monkeypatch):
    """A tensor bigger than BLOCK_VALUES is made in row blocks no bigger than that, and the file
    is the same as when everything fits in one block."""
    write_random_checkpoint(str(tmp_path / "whole"), PRESETS["tiny"], seed=3)
    monkeypatch.setattr(random_checkpoint, "BLOCK_VALUES", 100)
    blocks = list(random_checkpoint.random_blocks("x.weight", (512, 48), np.random.default_rng(0)))
    assert len(blocks) == 256 and all(b.shape == (2, 48) for b in blocks)  # 2 rows of 48 <= 100 values
    write_random_checkpoint(str(tmp_path / "blocks"), PRESETS["tiny"], seed=3)
    whole, in_blocks = (tmp_path / "whole" / "model.safetensors").read_bytes(), (tmp_path / "blocks" / "model.safetensors").read_bytes()
    assert whole == in_blocks
