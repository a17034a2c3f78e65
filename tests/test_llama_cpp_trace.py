"""llama.cpp's tensors under minigemma's names: a dump that `weights_tools/llama_dump` captured
from llama.cpp (llama-cpp-python 0.3.36's vendored copy, f32 GGUF of a random E2B-like
checkpoint, `python -m weights_tools.llama_test_dump`) is stored in tests/data; the
test makes the same checkpoint again, traces it with minigemma, and checks the name map: every
mapped name has minigemma's shape and llama.cpp's value (cosine), and `compare` at the default
tolerance names the first step after llama.cpp's f16 GELU table whose values are normalised.
`trace --engine llama.cpp` runs through a stand-in binary that writes the stored dump."""

import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

import minigemma
from minigemma.cli import main
from minigemma.errors import InputError
from minigemma.verify.compare import compare_traces, cosine
from minigemma.verify.llama_cpp import LLAMA_NAMES, as_minigemma, read_dump
from minigemma.verify.trace_file import Trace, load_trace
from weights_tools.llama_test_dump import IDS, write_checkpoint

DUMP = Path(__file__).parent / "data" / "llama_dump_e2b_like.bin"


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    model = minigemma.load(write_checkpoint(str(tmp_path_factory.mktemp("e2b"))))
    return model.trace(list(IDS))


def test_llama_cpp_names_map_onto_minigemmas(ours):
    theirs = as_minigemma(read_dump(str(DUMP)))
    n_layers = 10
    # every name minigemma has that llama.cpp's graph names (without MoE: the dense names)
    dense = {m for _, m in LLAMA_NAMES if "moe" not in m and "{ffw}" not in m} | {"layers.{i}.mlp.post_norm"}
    expected = {m.format(i=i) for m in dense for i in range(n_layers)} & set(ours)
    assert set(theirs) == expected
    assert "layers.5.attn.k" not in theirs  # KV-shared layers compute no keys, in either
    for name, value in theirs.items():
        assert value.shape == ours[name].shape, name
        assert cosine(value.astype(np.float64), ours[name].astype(np.float64)) > 0.99999, name
    rows = compare_traces(Trace("llama.cpp", theirs), Trace("minigemma", ours), common=True)
    # llama.cpp's CPU GELU reads an f16 table (GGML_GELU_FP16): mlp.gated is ~3e-4 off, small values
    # pass the absolute tolerance until the feed-forward output is normalised
    assert next(r.name for r in rows if not r.ok) == "layers.0.mlp.post_norm"
    gated = rows[[r.name for r in rows].index("layers.0.mlp.gated")]
    assert gated.ok and gated.max_rel > 1e-4


def test_trace_engine_llama_cpp_cli(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "llama_dump"  # stands in for the binary: copies the stored dump
    fake.write_text(f"#!{sys.executable}\nimport shutil, sys\nshutil.copy({str(DUMP)!r}, sys.argv[2])\n")
    fake.chmod(0o755)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "llama.safetensors"
    ids = ",".join(map(str, IDS))
    monkeypatch.setenv("MINIGEMMA_LLAMA_DUMP", str(fake))
    assert main(["trace", "--engine", "llama.cpp", "--model", str(gguf), "--ids", ids, "--out", str(out), "--names", "layers.0"]) == 0
    t = load_trace(str(out))
    assert t.token_ids == list(IDS) and t.metadata["source"].startswith("llama.cpp")
    assert list(t.activations)[0] == "layers.0.attn.in" and all(n.startswith("layers.0.") for n in t.activations)
    monkeypatch.delenv("MINIGEMMA_LLAMA_DUMP")
    capsys.readouterr()
    assert main(["trace", "--engine", "llama.cpp", "--model", str(gguf), "--ids", ids, "--out", str(out)]) == 2
    assert "give the llama_dump binary with --llama-dump PATH or $MINIGEMMA_LLAMA_DUMP" in capsys.readouterr().err
    assert main(["trace", "--engine", "llama.cpp", "--model", str(gguf), "--prompt", "x", "--out", str(out)]) == 2
    bad = tmp_path / "bad.bin"
    bad.write_bytes(DUMP.read_bytes()[:1000])
    with pytest.raises(InputError, match="not a llama_dump file"):
        read_dump(str(bad))


@settings(max_examples=100)
@given(data=st.data())
def test_mutated_dump_is_a_named_error_never_a_crash(data, tmp_path_factory):
    """llama_dump files come from outside: a mutated one reads or fails with InputError naming it."""
    raw = bytearray(HEAD)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] = data.draw(st.integers(0, 255), label="byte")
    raw = raw[: data.draw(st.integers(0, len(raw)), label="length")]
    path = tmp_path_factory.mktemp("fuzz") / "dump.bin"
    path.write_bytes(bytes(raw))
    try:
        as_minigemma(read_dump(str(path)))
    except InputError as e:
        assert str(path) in str(e) or str(e).startswith("llama.cpp dump: ")


HEAD = DUMP.read_bytes()[:4096]  # the first records: names, shapes and data to mutate
