"""`weights_tools.random_gguf`: random GGUFs of the published Gemma 4 shapes, written straight to
the file, read back by minigemma.

Each real shape is scaled down (widths small; layer count, layer pattern, window, KV sharing,
double-wide MLP, PLE, global KV heads, k_eq_v, MoE routing as published) and written in Q4_0
with a Q8_0 head:

* minigemma loads it with the config the shape states, field by field (the GGUF metadata and
  tensor index are all it has to go on, so every field is the writer's doing);
* every tensor minigemma reads back (our dequantizer) equals the values the writer drew
  (`drawn_values`, drawn again here): F32 exactly, Q4_0 / Q8_0 / F16 within the format's bound;
* the file is the same whatever the number of processes quantizing it;
* `benchmarks.real_sizes.decode_reads` counts the bytes the file's tensors hold, as minigemma keeps
  them, with the experts at their top-k share.
"""

from __future__ import annotations

import dataclasses

import gguf
import numpy as np
import pytest

import minigemma
from minigemma.text.config import config_from_dict
from minigemma.weights.gguf import GGUFFile
from minigemma.weights.gguf_weights import dequantize
from weights_tools.random_checkpoint import published_dialect
from weights_tools.random_gguf import SHAPES, plan, tensor_values, write_random_gguf

Q = gguf.GGMLQuantizationType
REAL = ("e2b", "e4b", "26b-a4b", "31b")
F16_EPS = 2.0**-11  # float16's relative rounding error
K_RMS = 0.1  # a 4-bit code of uniform values: about 1/16 / sqrt(3) of their RMS, 3.6%
F16_TINY = 2.0**-25  # and its absolute one below the normal range (half the subnormal spacing)


def scaled(name: str) -> dict:
    """The published shape with small widths; every structural field kept."""
    c = dict(SHAPES[name])
    small = {"hidden_size": 64, "intermediate_size": 64, "num_attention_heads": 2, "head_dim": 32, "global_head_dim": 64,
             "vocab_size": 160, "max_position_embeddings": 4096}
    c.update(small, num_key_value_heads=min(c["num_key_value_heads"], 2))
    if c.get("num_global_key_value_heads"):
        c["num_global_key_value_heads"] = 1
    if c.get("hidden_size_per_layer_input"):
        c.update(hidden_size_per_layer_input=32, vocab_size_per_layer_input=160)  # rows of layers x 32: whole blocks
    if c.get("enable_moe_block"):
        c.update(num_experts=4, top_k_experts=2, moe_intermediate_size=32)
    return c


def error_bound(qtype, drawn: np.ndarray) -> np.ndarray:
    """Largest |stored - drawn| the type allows, per value: a block of 32 keeps d = amax / 8 (Q4_0,
    whose far end clips to 7d: off by up to d) or amax / 127 (Q8_0: rounding, d / 2), d itself a
    float16; F16 rounds each value (narrow rows fall back to it)."""
    if qtype == Q.F16:
        return np.abs(drawn) * F16_EPS + F16_TINY
    blocks = drawn.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d, qmax = (amax / 8, 8) if qtype == Q.Q4_0 else (amax / 127, 127)
    step = d if qtype == Q.Q4_0 else d / 2
    return np.broadcast_to(step + qmax * d * F16_EPS + 1e-12, blocks.shape).reshape(drawn.shape)


@pytest.fixture(scope="module", params=REAL)
def written(request, tmp_path_factory):
    config = scaled(request.param)
    path = tmp_path_factory.mktemp(request.param) / "model.gguf"
    tensors = write_random_gguf(path, config, "Q4_0", "Q8_0", seed=3)
    return request.param, config, path, tensors


def test_minigemma_loads_the_shape_it_was_given(written):
    name, config, path, _ = written
    want = config_from_dict(published_dialect(config)).text
    got = minigemma.load(str(path)).config.text
    apart = {"eos_token_id", "bos_token_id", "pad_token_id", "rms_norm_eps"}  # ids: the placeholder vocabulary's
    diff = {f.name: (getattr(want, f.name), getattr(got, f.name)) for f in dataclasses.fields(want)
            if f.name not in apart and getattr(want, f.name) != getattr(got, f.name)}
    assert diff == {}, f"{name}: fields that differ (wanted, read): {diff}"
    assert np.float32(got.rms_norm_eps) == np.float32(want.rms_norm_eps)  # GGUF stores it as a float32
    assert got.rope == want.rope
    assert (got.bos_token_id, got.pad_token_id, 1 in got.eos_token_id) == (2, 0, True)
    if name != "e2b":  # the real shapes' distinguishing switches really are on (E2B's are in the e2b preset)
        assert got.enable_moe_block == (name == "26b-a4b") and got.attention_k_eq_v == (name in ("26b-a4b", "31b"))


def test_every_tensor_reads_back_as_drawn(written):
    name, _, path, tensors = written
    file = GGUFFile(path)
    types = set()
    for number, t in enumerate(tensors):
        stored = file.tensors[t.name]
        assert (stored.shape, stored.type.id) == (t.shape, int(t.qtype)), t.name
        got = dequantize(file.raw(stored), stored.type, t.shape[-1]).reshape(t.shape)
        drawn = tensor_values(t, number, seed=3)
        types.add(t.qtype)
        if t.qtype == Q.F32:
            np.testing.assert_array_equal(got, drawn, err_msg=t.name)
        else:
            excess = np.abs(got - drawn) - error_bound(t.qtype, drawn)
            assert excess.max() <= 0, f"{name} {t.name}: {excess.max()} past the {t.qtype.name} bound"
    assert {Q.F32, Q.Q4_0, Q.Q8_0} <= types
    assert file.tensors["token_embd.weight"].type.name == "Q8_0"  # the head
    if "per_layer_token_embd.weight" in file.tensors:  # the PLE table in the file's type, its projection F32
        assert (file.tensors["per_layer_token_embd.weight"].type.name, file.tensors["per_layer_model_proj.weight"].type.name) == ("Q4_0", "F32")


def test_the_file_does_not_depend_on_the_process_count(tmp_path):
    config = scaled("26b-a4b")
    write_random_gguf(tmp_path / "one.gguf", config, seed=1, jobs=1)
    write_random_gguf(tmp_path / "two.gguf", config, seed=1, jobs=2)
    assert (tmp_path / "one.gguf").read_bytes() == (tmp_path / "two.gguf").read_bytes()
    write_random_gguf(tmp_path / "other.gguf", config, seed=2)
    assert (tmp_path / "other.gguf").read_bytes() != (tmp_path / "one.gguf").read_bytes()


def test_decode_reads_count_the_files_tensors(written):
    """Bytes a decode step reads = every block tensor in the file as minigemma holds it (F16 widened
    to float32), the experts at k/n, the tied head whole, the PLE projection, one row of each table."""
    from benchmarks.real_sizes import decode_reads

    _, config, path, _ = written
    file = GGUFFile(path)
    share = config["top_k_experts"] / config["num_experts"] if config.get("enable_moe_block") else 1.0
    expected = 0.0
    for name, t in file.tensors.items():
        held = t.nbytes * (2 if t.type.name == "F16" else 1)
        if name.startswith("blk."):
            expected += held * (share if "_exps.weight" in name else 1)
        elif name in ("token_embd.weight", "per_layer_model_proj.weight"):
            expected += held
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            expected += t.nbytes / t.shape[0]
    reads = decode_reads(minigemma.load(str(path)))
    assert sum(b for _, b in reads.values()) == pytest.approx(expected, rel=1e-12)


def test_the_real_shapes_have_the_published_sizes():
    """Parameter counts of the four plans against the published ones (text: E2B 4.6 G values with
    its PLE table, 26B-A4B 25.2 B, 31B 30.7 B), and the file stays Q4_0-sized."""
    published = {"e2b": 4.6e9, "26b-a4b": 25.2e9, "31b": 30.7e9}
    for name, count in published.items():
        tensors, _ = plan(gguf, published_dialect(SHAPES[name]), "Q4_0", "Q8_0")
        assert sum(int(np.prod(t.shape)) for t in tensors) == pytest.approx(count, rel=0.01), name


@pytest.mark.parametrize("type_name", ["Q4_0", "Q8_0"])
def test_fast_quantizer_writes_the_gguf_packages_bytes(type_name):
    """`fast_quants` against `gguf.quants.quantize`, byte for byte: drawn blocks, plus the edges of
    the arithmetic (an all-zero block, ties at .5, equal magnitudes of both signs, tiny values)."""
    from weights_tools.fast_quants import quantize

    rng = np.random.default_rng(0)
    x = (rng.random((64, 256), dtype=np.float32) - np.float32(0.5)) * np.float32(0.07)
    x[0] = 0
    x[1, :32] = np.arange(32, dtype=np.float32) - 16
    x[2, :32] = np.float32(0.5) * np.arange(-16, 16, dtype=np.float32)
    x[3, :32] = -x[2, :32]
    x[4] = rng.standard_normal(256).astype(np.float32) * np.float32(1e-30)
    x[5, :32] = np.where(np.arange(32) % 2 == 0, 1, -1)
    np.testing.assert_array_equal(quantize(x, type_name), gguf.quants.quantize(x, Q[type_name]))


def test_kernels_equal_the_numpy_twins_at_the_real_depth(written):
    """The scaled file through the Numba kernels (fused quantized GEMV, quantized MoE dispatch) and
    through the NumPy twins (dequantize, then BLAS): the same logits, at every layer count."""
    _, _, path, _ = written
    ids = np.array([5, 17, 30, 99])
    logits = [_logits(path, k, ids) for k in (True, False)]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)  # measured: at most 6.7e-6


def _logits(path, kernels: bool, ids) -> np.ndarray:
    model = minigemma.load(str(path), kernels=kernels)
    return model.extend(ids, model.new_cache())


def test_a_k_quant_mix_reads_back_close_to_what_was_drawn(tmp_path):
    """`--type Q4_K_M`: the mix's types (`gguf_write_types`: Q4_K, the head and PLE table and some
    ffn_down in Q6_K, narrow rows falling back), each tensor dequantized by minigemma within a few
    percent (RMS) of the values drawn, and the file loads with its shape's config."""
    config = dict(scaled("e2b"), hidden_size=256, intermediate_size=256)
    path = tmp_path / "mix.gguf"
    tensors = write_random_gguf(path, config, "Q4_K_M", None, seed=5)
    file = GGUFFile(path)
    for number, t in enumerate(tensors):
        stored = file.tensors[t.name]
        got = dequantize(file.raw(stored), stored.type, t.shape[-1]).reshape(t.shape)
        drawn = tensor_values(t, number, seed=5)
        if t.qtype == Q.F32:
            np.testing.assert_array_equal(got, drawn, err_msg=t.name)
            continue
        rms = np.sqrt(np.mean((got - drawn) ** 2) / np.mean(drawn**2))
        assert rms < K_RMS, f"{t.name} {t.qtype.name}: relative RMS error {rms}"
    assert {Q.Q4_K, Q.Q6_K} <= {t.qtype for t in tensors}
    assert file.tensors["token_embd.weight"].type.name == "Q6_K"
    assert minigemma.load(str(path)).config.text.num_kv_shared_layers == 20
