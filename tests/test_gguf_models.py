"""Whole models loaded straight from GGUF files (`minigemma.load("x.gguf")`), against the reference.

* Gemma 4, drawn small configs reaching every switch (PLE, KV sharing, double-wide MLP, k_eq_v
  with global KV heads, MoE, soft-cap, proportional RoPE), written as llama.cpp's converter writes
  them (`gguf_gemma4_writer.py`) in F32 / F16 / BF16 / Q8_0 / Q4_0. transformers' GGUF loader
  refuses these files when they carry per-layer `feed_forward_length` / `head_count_kv` arrays
  (DESIGN.md), and gets the others wrong: checked on a 6-layer file with its default shapes
  (head dims 256 / 512, 5:1 layers), it loads it but leaves `layer_scalar` (llama.cpp's
  `layer_output_scale`) at its initial value and builds a random PLE, as it reads neither that
  tensor nor `embedding_length_per_layer_input` = 0 (logits off by 10). So the reference is
  transformers' float32 forward with the file's tensors (dequantized by the `gguf` package) in
  place of its own: logits equal at 1e-4.
* Gemma 3, drawn configs, written by `gguf_fixtures.write_gemma3_gguf` (norm +1 folded in), in the
  same types: the reference is transformers loading the very file (`from_pretrained(gguf_file=)`).
* The config read from the metadata is the one the reference model was built from.
* Bad files: unknown architecture, unsupported type, a tensor of the wrong shape, a missing
  tensor, a stray one: named errors, and the CLI's one line with exit status 2.

Block-quantized matrices stay as stored (`QuantMatrix` / `QuantExperts` of `weights/quants_matrix.py`),
multiplied by the backend's kernels; the reference's values come from `gguf.quants.dequantize`.
"""

import mmap
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gemma3_reference import gemma3_config_kwargs, reference_gemma3_model
from gemma_reference import GLOBAL, SLIDING, our_text_config, reference_logits, reference_text_model, text_config_kwargs
from gguf import GGMLQuantizationType as Q
from gguf_fixtures import write_gemma3_gguf
from gguf_gemma4_writer import load_held, write_gemma4_gguf
from hypothesis import given, note, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

import minigemma
from minigemma.errors import CheckpointError, ConfigError
from minigemma.text.rope import inverse_frequencies
from minigemma.weights.quants import TYPE_IDS
from minigemma.weights.quants_matrix import QuantMatrix

TOL = dict(rtol=1e-4, atol=1e-4)
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0]


def matrix_type(qtype):
    """Norms, scales and other vectors stay F32 (as llama-quantize keeps them); matrices get `qtype`,
    or F16 where their rows do not hold whole blocks (llama-quantize falls back to another type too)."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return lambda name, values: Q.F32 if values.ndim < 2 else qtype if values.shape[-1] % block == 0 else Q.F16


@st.composite
def gemma4_kwargs(draw):
    """Small Gemma 4 configs whose matrices have rows of whole 32-value blocks (hidden 32 or 64)."""
    kw = draw(text_config_kwargs(max_layers=5))
    kw["hidden_size"] = draw(st.sampled_from([32, 64]))
    kw["attention_bias"] = False  # Gemma 4 checkpoints have no biases, nor does llama.cpp's Gemma 4
    return kw


@settings(max_examples=8)
@given(kw=gemma4_kwargs(), qtype=st.sampled_from(TYPES), data=st.data())
def test_gemma4_gguf_logits_match_the_reference(tmp_path_factory, kw, qtype, data):
    note(f"config: {kw}\ntype: {qtype.name}")
    path = tmp_path_factory.mktemp("g4") / "model.gguf"
    held = write_gemma4_gguf(str(path), reference_text_model(kw, seed=1), matrix_type(qtype))
    reference = load_held(reference_text_model(kw, seed=2), held)
    ours = minigemma.load(path)
    seq = data.draw(st.integers(1, 3 * kw["sliding_window"] + 4), label="seq")
    ids = np.random.default_rng(seq).integers(0, kw["vocab_size"], (2, seq))
    np.testing.assert_allclose(ours.forward(ids), reference_logits(reference, ids), **TOL)
    assert layer_plan(ours.config.text) == layer_plan(our_text_config(reference.config))


def layer_plan(cfg):
    """What the metadata must give back: every layer's shape and sharing (k_eq_v where a layer
    computes keys itself: a shared layer's flag is moot), and the RoPE frequencies of each type."""
    layers = [(s.layer_type, s.head_dim, s.num_kv_heads, s.kv_sharing, s.kv_producer, s.k_eq_v and not s.reuses_kv,
               s.mlp_intermediate) for s in cfg.layers]
    head_dim = {s.layer_type: s.head_dim for s in cfg.layers}
    rope = {t: inverse_frequencies(p, head_dim[t]).tolist() for t, p in cfg.rope.items() if t in head_dim}
    return layers, rope, cfg.hidden_size_per_layer_input, cfg.num_experts, cfg.top_k_experts, cfg.final_logit_softcapping


@settings(max_examples=6)
@given(kw=gemma3_config_kwargs(max_layers=4), qtype=st.sampled_from(TYPES), data=st.data())
def test_gemma3_gguf_logits_match_transformers_loading_the_file(tmp_path_factory, kw, qtype, data):
    """What llama.cpp's Gemma 3 converter writes and transformers reads: no biases, no bidirectional
    attention, one RoPE base per layer type (the sliding one fixed at 10k in llama.cpp's code and
    in transformers' GGUF loader). Two settings transformers' Gemma 3 GGUF loader does not read, so
    they are fixed where it and llama.cpp agree: `query_pre_attn_scalar` (a GGUF does not store it:
    llama.cpp and minigemma use head_dim, transformers its default 256), so head_dim is 256; and
    `final_logit_softcapping` (written by the converter, ignored by the loader), so none."""
    kw.update(attention_bias=False, use_bidirectional_attention=False, attn_logit_softcapping=None,
              final_logit_softcapping=None, head_dim=256, query_pre_attn_scalar=256, vocab_size=64,
              hidden_size=32 * data.draw(st.integers(1, 2), label="hidden / 32"))
    kw["rope_parameters"] = {SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                             GLOBAL: {"rope_type": "default", "rope_theta": 1_000_000.0}}
    kw.pop("layer_types", None)
    kw["sliding_window_pattern"] = 6  # the only pattern llama.cpp's Gemma 3 (and transformers' loader) knows
    note(f"config: {kw}\ntype: {qtype.name}")
    path = tmp_path_factory.mktemp("g3") / "model.gguf"
    write_gemma3_gguf(str(path), reference_gemma3_model(kw, seed=3), matrix_type(qtype))
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
    ours = minigemma.load(path)
    assert ours.config.text.layer_types == tuple(reference.config.layer_types)
    seq = data.draw(st.integers(1, 3 * kw["sliding_window"] + 4), label="seq")
    ids = np.random.default_rng(seq).integers(0, kw["vocab_size"], (2, seq))
    np.testing.assert_allclose(ours.forward(ids), reference_logits(reference, ids), **TOL)


# ------------------------------------------------------------------------------------------ bad files

TINY4 = dict(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=16, global_head_dim=16, layer_types=[SLIDING, GLOBAL], sliding_window=4,
             hidden_size_per_layer_input=0, rope_parameters={
                 SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                 GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}})


@pytest.fixture(scope="module")
def tiny4():
    return reference_text_model(TINY4, seed=4)


def test_unknown_architecture_is_named(tmp_path, tiny4):
    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ConfigError, match=r"llama.gguf: general.architecture is 'llama'; minigemma reads \['gemma3', 'gemma4'\]"):
        minigemma.load(path)


def test_unsupported_type_names_type_and_tensor(tmp_path, tiny4):
    path = tmp_path / "iq.gguf"
    write_gemma4_gguf(str(path), tiny4)
    raw = bytearray(path.read_bytes())  # relabel one F32 matrix as IQ4_NL (id 20: blocks of 32, fewer bytes)
    at = raw.index(b"blk.0.attn_q.weight") + len("blk.0.attn_q.weight") + 4 + 2 * 8
    raw[at : at + 4] = (20).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"tensor 'blk.0.attn_q.weight' is stored as IQ4_NL; minigemma reads F32, F16, BF16, Q8_0"):
        minigemma.load(path)


def test_tensor_shape_disagreeing_with_the_metadata_is_named(tmp_path, tiny4):
    path = tmp_path / "shape.gguf"
    write_gemma4_gguf(str(path), tiny4)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"blk.1.ffn_up.weight") + len("blk.1.ffn_up.weight") + 4 + 8  # dims[1]: the rows
    raw[at : at + 8] = (16).to_bytes(8, "little")  # 32 rows -> 16: the file is still consistent
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"tensor 'blk.1.ffn_up.weight' has shape \[16, 32\] \(F32\), the model's config expects \[32, 32\]"):
        minigemma.load(path)


def test_missing_and_stray_tensors_are_named(tmp_path, tiny4):
    path = tmp_path / "missing.gguf"
    write_gemma4_gguf(str(path), tiny4, lambda name, values: None if name == "blk.0.ffn_gate.weight" else Q.F32)
    with pytest.raises(CheckpointError, match=r"missing.gguf: missing tensor 'blk.0.ffn_gate.weight' \(model.layers.0.mlp.gate_proj.weight\)"):
        minigemma.load(path)


def test_cli_prints_one_line_and_exits_2(tmp_path, tiny4):
    path = tmp_path / "broken.gguf"
    write_gemma4_gguf(str(path), tiny4)
    path.write_bytes(path.read_bytes()[:100])
    result = subprocess.run([sys.executable, "-m", "minigemma", "generate", "hi", "--model", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "truncated header" in result.stderr and str(path) in result.stderr


def test_float_matrices_stay_in_the_mapped_file(tmp_path, tiny4):
    """Nothing converted on disk or copied at load: F32 and BF16 matrices are views of the map (BF16
    kept as stored for the kernels; F32 as the rows of a `QuantMatrix` of type F32, multiplied by the
    quantized kernels' GEMV), the PLE-free model's embedding too; F16 ones are widened."""
    path = tmp_path / "views.gguf"
    write_gemma4_gguf(str(path), tiny4, lambda name, values: Q.F32 if values.ndim < 2 else Q.BF16 if "ffn" in name else Q.F32)
    model = minigemma.load(path, kernels=True)
    layer = model.weights.layers[0]
    stored = layer.mlp.up_proj.stored
    assert stored.dtype == np.uint16 and is_mapped(stored)
    for matrix in (layer.attention.q_proj, model.weights.embed):
        assert isinstance(matrix, QuantMatrix) and matrix.type_id == TYPE_IDS["F32"] and is_mapped(matrix.raw)
        assert np.array_equal(matrix.f32(), matrix.raw.view(np.float32))
    assert not is_mapped(layer.input_norm)  # vectors: float32 copies (a few hundred bytes)


def is_mapped(a: np.ndarray) -> bool:
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return isinstance(a.obj if isinstance(a, memoryview) else a, mmap.mmap)


def test_every_command_takes_a_gguf(tmp_path, tiny4):
    """`--model x.gguf` on info, generate, chat and trace: the same text as the Python API."""
    path = tmp_path / "cli.gguf"
    template = (Path(minigemma.__file__).parent / "data" / "tiny" / "chat_template.jinja").read_text()
    write_gemma4_gguf(str(path), tiny4, chat_template=template)
    expected = minigemma.load(path).generate("abc", max_new_tokens=4, temperature=0)

    def run(*args, stdin=None):
        result = subprocess.run([sys.executable, "-m", "minigemma", *args, "--model", str(path)], input=stdin,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert f"model:       {path}" in run("info")
    assert run("generate", "abc", "--max-new-tokens", "4", "--temperature", "0") == expected + "\n"
    assert run("chat", "--max-new-tokens", "2", "--temperature", "0", stdin="hi\n") != ""
    run("trace", "--prompt", "abc", "--out", str(tmp_path / "t.safetensors"))
    assert (tmp_path / "t.safetensors").stat().st_size > 0
