"""The GGUF import on small files: a random Gemma 3, written as llama.cpp writes it (its tensor
names, the norm `+1` folded in, a mix of GGML types), converted by `weights_tools.gguf_import`
and loaded by minigemma, gives the logits transformers gives loading the same file with
`gguf_file=`. And bad files fail with our errors, naming the architecture, type or tensor."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from gemma3_reference import reference_gemma3_model
from gemma_reference import reference_logits
from gguf import GGMLQuantizationType as Q
from gguf_fixtures import tiny_vocabulary, write_gemma3_gguf
from transformers import AutoModelForCausalLM

import minigemma
from weights_tools.gguf_import import convert

TOL = dict(rtol=1e-4, atol=1e-4)
TINY = dict(
    vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=2,
    num_key_value_heads=1, head_dim=256, sliding_window=4, tie_word_embeddings=True,
    query_pre_attn_scalar=256,  # a GGUF does not store it: transformers assumes 256, llama.cpp (and we) head_dim
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}},
)
# a mix of the types the gguf package can write (the K-quants it only reads: the real 270M has them)
QTYPES = {"attn_q": Q.Q5_0, "attn_k": Q.Q4_0, "attn_v": Q.Q8_0, "attn_output": Q.Q5_1, "ffn_gate": Q.Q4_1,
          "ffn_up": Q.BF16, "ffn_down": Q.F16, "token_embd": Q.Q8_0}


def mixed_types(name, values):
    kind = name.split(".")[-2]
    return QTYPES.get(kind, Q.F32)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    model = reference_gemma3_model(TINY, "causal", seed=7)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gemma3_gguf(str(path), model, mixed_types)
    return path


def test_converted_tiny_gguf_matches_transformers_loading_it(tiny_gguf, tmp_path):
    ref = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    convert(tiny_gguf, tmp_path)
    model = minigemma.load(tmp_path)
    assert model.config.text.layer_types == tuple(ref.config.layer_types)
    ids = np.array([[2, 5, 9, 33, 4, 63, 17, 17, 8, 1, 40, 12, 50, 2, 7, 30], list(range(2, 18))])
    np.testing.assert_allclose(model.forward(ids), reference_logits(ref, ids), **TOL)
    # the norms were stored with +1 folded in and come back without it, as in a Hugging Face checkpoint
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == "gemma3_text" and hf["tie_word_embeddings"] is True
    stored = ref.model.layers[0].input_layernorm.weight.detach().numpy()
    np.testing.assert_array_equal(minigemma.load(tmp_path).weights.layers[0].input_norm, np.float32(1) + stored)


def test_converted_tokenizer_loads_and_round_trips(tiny_gguf, tmp_path):
    convert(tiny_gguf, tmp_path)
    tok = minigemma.load(tmp_path).tokenizer
    piece = {p: i for i, p in enumerate(tiny_vocabulary(TINY["vocab_size"])[0])}
    ids = tok.encode("ab c<eos>", add_special_tokens=True)
    assert ids == [2, piece["a"], piece["b"], piece["\u2581c"], 1]  # "▁c": a merge; <eos> matched whole
    assert tok.decode(ids) == "<bos>ab c<eos>"


def test_unsupported_architecture_is_named(tmp_path):
    path = tmp_path / "llama.gguf"
    write_gemma3_gguf(str(path), reference_gemma3_model(TINY, "causal", seed=1), arch="llama")
    with pytest.raises(minigemma.ConfigError, match=r"general.architecture is 'llama'.*\['gemma3'\]"):
        convert(path, tmp_path / "out")


def test_unsupported_quantization_type_is_named(tmp_path):
    path = tmp_path / "q8_1.gguf"
    extra = [("blk.0.ffn_gate.weight", Q.Q8_1, (TINY["intermediate_size"], TINY["hidden_size"]))]
    model = reference_gemma3_model(TINY, "causal", seed=1)
    write_gemma3_gguf(str(path), model, lambda name, v: None if name == "blk.0.ffn_gate.weight" else Q.F32, extra=extra)
    with pytest.raises(minigemma.CheckpointError, match=r"'blk.0.ffn_gate.weight' is stored as Q8_1"):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()  # refused before writing anything


def test_tensor_of_another_model_is_named(tmp_path):
    path = tmp_path / "extra.gguf"
    write_gemma3_gguf(str(path), reference_gemma3_model(TINY, "causal", seed=1), extra=[("blk.0.ssm_conv1d.weight", Q.F16, (4, 64))])
    with pytest.raises(minigemma.CheckpointError, match=r"'blk.0.ssm_conv1d.weight' is not part of a Gemma 3"):
        convert(path, tmp_path / "out")


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "llama.gguf"
    write_gemma3_gguf(str(path), reference_gemma3_model(TINY, "causal", seed=1), arch="llama")
    for source in (str(path), str(tmp_path / "missing.gguf")):
        run = subprocess.run([sys.executable, "-m", "weights_tools.gguf_import", source, str(tmp_path / "out")],
                             capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("gguf_import: error: "), run.stderr
        assert ("'llama'" in run.stderr) if source == str(path) else ("missing.gguf: no such file" in run.stderr)


def test_cli_without_out_writes_into_the_cache_directory(tiny_gguf, tmp_path):
    """No OUT: the conversion goes under $MINIGEMMA_CACHE/gguf/, never into the current directory."""
    import os

    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    env = {**os.environ, "MINIGEMMA_CACHE": str(cache)}
    run = subprocess.run([sys.executable, "-m", "weights_tools.gguf_import", str(tiny_gguf)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (cache / "gguf" / "tiny" / "model.safetensors").is_file() and list(cwd.iterdir()) == []
    assert f"wrote {cache / 'gguf' / 'tiny'}" in run.stderr
