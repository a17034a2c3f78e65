"""`minigemma quantize`: GGUF files in llama.cpp's layout, read back by independent readers.

* Against llama.cpp's own converter: for fixed random checkpoints (Gemma 4 with every switch, in
  bf16; both Gemma 4 layouts; Gemma 3 untied with linear RoPE; Gemma 3 with a vision tower) and
  every type the converter writes, our file equals the one `convert_hf_to_gguf.py` wrote, key by
  key (order, types, values; long arrays by sha256) and tensor by tensor (name, order, type, shape,
  sha256 of the bytes). The converter's listings are stored test data (gguf_write_fixtures.py).
* Against llama-quantize: in Q4_0/Q4_1/Q5_0/Q5_1, its file (from the converter's F32 one) and ours
  agree key by key and tensor by tensor, but for the head it stores in Q6_K.
* Against transformers' GGUF loader: a Gemma 3 file in every type loads as a `Gemma3ForCausalLM`
  whose weights are the checkpoint's, exactly (F32) or as `gguf.quants` rounds them.
* Through minigemma's GGUF reader: every case's F32 file gives the checkpoint's logits, and every
  type's file gives transformers' logits on the weights the file stores (1e-4).
* For drawn Gemma 4 configs (PLE, KV sharing, double-wide, k_eq_v, MoE on and off): every
  checkpoint tensor is in the file under its llama.cpp name, values round-trip, types follow the rules.
* Bad input: one named error, and the CLI's one line with exit status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from gemma_reference import reference_text_model, text_config_kwargs
from gguf_write_fixtures import CASES, GEMMA3, LISTINGS, LLAMA_QUANTIZE_TYPES, TINY, case_types, fill, listing, write_case
from hypothesis import given, note, settings
from hypothesis import strategies as st

import minigemma
from minigemma.cli import main
from minigemma.errors import CheckpointError, ConfigError, InputError
from minigemma.text.config import load_config
from minigemma.weights.gguf_write import write_gguf
from minigemma.weights.gguf_write_types import BLOCK_TYPES, CONVERTER_TYPES

TYPES = CONVERTER_TYPES + BLOCK_TYPES  # the K-quants and their mixes: test_gguf_write_k.py

CONVERTED = json.loads(LISTINGS.read_text())["cases"]
Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {case: write_case(case, root) for case in CASES}


def quantize(src, out, type_name) -> None:
    assert main(["quantize", str(src), str(out), "--type", type_name]) == 0


@pytest.mark.parametrize("case_type", [f"{c}/{t}" for c in CASES for t in case_types(c)])
def test_file_equals_llama_cpp_converter_output(case_type, checkpoints, tmp_path):
    case, type_name = case_type.split("/")
    out = tmp_path / "out.gguf"
    quantize(checkpoints[case], out, type_name)
    ours, theirs = listing(out), CONVERTED[case_type]
    assert [k[0] for k in ours["keys"]] == [k[0] for k in theirs["keys"]]
    for mine, expected in zip(ours["keys"], theirs["keys"]):
        assert mine == expected
    assert [t[0] for t in ours["tensors"]] == [t[0] for t in theirs["tensors"]]
    for mine, expected in zip(ours["tensors"], theirs["tensors"]):
        assert mine == expected


@pytest.mark.parametrize("case_type", [f"{c}/{t}" for c in CASES if len(case_types(c)) > 1 for t in LLAMA_QUANTIZE_TYPES])
def test_4_and_5_bit_files_equal_llama_quantize_output(case_type, checkpoints, tmp_path):
    """The types the converter does not write: llama-quantize's file made from the converter's F32
    one has our keys and values (in its own order) and our tensors byte for byte, but one: it stores
    the head (`output`, or `token_embd` when tied) in Q6_K, or Q8_0 when its rows are too short for
    Q6_K's 256-value blocks, and we in the chosen type (every matrix in it, as `llama-quantize --pure`)."""
    case, type_name = case_type.split("/")
    out = tmp_path / "out.gguf"
    quantize(checkpoints[case], out, type_name)
    ours, theirs = listing(out), CONVERTED[case_type]
    assert {k[0]: k[1:] for k in ours["keys"]} == {k[0]: k[1:] for k in theirs["keys"]}
    mine, expected = {t[0]: t[1:] for t in ours["tensors"]}, {t[0]: t[1:] for t in theirs["tensors"]}
    assert sorted(mine) == sorted(expected)
    head = "output.weight" if "output.weight" in expected else "token_embd.weight"
    for name, want in expected.items():
        if name == head:
            assert want[0] in ("Q6_K", "Q8_0") and mine[name][0] == type_name
        else:
            assert mine[name] == want, name


def source_weights(src) -> dict[str, np.ndarray]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("type_name", TYPES)
def test_gemma3_file_loads_in_transformers_with_the_checkpoint_weights(type_name, checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    src = checkpoints["gemma3"]
    quantize(src, tmp_path / "m.gguf", type_name)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).state_dict()
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    stored = {t.name: t.tensor_type for t in reader.tensors}
    hf_to_gguf = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 7)
    for name, w in source_weights(src).items():
        gguf_name = hf_to_gguf.get_name(name, try_suffixes=(".weight",))
        got = loaded[name].numpy()
        shift = np.float32(1.0) if name.endswith("norm.weight") else np.float32(0.0)  # llama.cpp stores 1 + w
        qtype = stored[gguf_name]
        expected = gguf.quants.dequantize(gguf.quants.quantize(w + shift, qtype), qtype) - shift
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} ({qtype.name})")
        bits = {Q.Q8_0: 8, Q.Q5_0: 5, Q.Q5_1: 5, Q.Q4_0: 4, Q.Q4_1: 4, Q.BF16: 8, Q.F16: 11}.get(qtype, 24)
        # really the checkpoint's weight: off by at most a quantization step of each 32-value block
        assert np.abs(got - w).max() <= 2.0 ** (2 - bits) * np.abs(w).max() + 1e-6, name


def logits(model, ids) -> np.ndarray:
    return np.asarray(model.forward(ids))


@pytest.mark.parametrize("case", CASES)
def test_minigemma_reads_the_file_as_the_checkpoint(case, checkpoints, tmp_path):
    """The F32 file, loaded by minigemma's GGUF reader, gives the checkpoint's logits (Gemma 3's norms
    go through 1 + w and back, hence not bit for bit); the checkpoint's are transformers' at 1e-4."""
    src = checkpoints[case]
    quantize(src, tmp_path / "m.gguf", "F32")
    ids = np.random.default_rng(0).integers(3, 4096, 24)  # longer than the window (8): sliding layers slide
    ours = logits(minigemma.load(str(tmp_path / "m.gguf")), ids)
    np.testing.assert_allclose(ours, logits(minigemma.load(str(src)), ids), rtol=1e-5, atol=1e-5)
    if CASES[case][1] == "causal":
        from transformers import AutoModelForCausalLM

        ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
        with torch.no_grad():
            expected = ref(input_ids=torch.as_tensor(ids)[None], use_cache=False, output_hidden_states=True).logits[0].numpy()
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case_type", [f"{c}/{t}" for c in ("gemma4", "gemma3") for t in TYPES])
def test_minigemma_reads_every_type_as_the_reference_on_the_stored_weights(case_type, checkpoints, tmp_path):
    """Each type's file in minigemma = transformers, with the checkpoint's config and every weight
    replaced by the file's (dequantized with the gguf package; Gemma 3's norms less the 1), at 1e-4."""
    from transformers import AutoModelForCausalLM

    case, type_name = case_type.split("/")
    src = checkpoints[case]
    quantize(src, tmp_path / "m.gguf", type_name)
    stored = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    arch = gguf.MODEL_ARCH.GEMMA4 if case == "gemma4" else gguf.MODEL_ARCH.GEMMA3
    names = gguf.get_tensor_name_map(arch, ref.config.num_hidden_layers)
    with torch.no_grad():
        for name, w in ref.state_dict().items():
            if name == "lm_head.weight" and ref.config.tie_word_embeddings:
                continue
            t = stored[expected_name(names, name)]
            values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(w.shape)
            if case == "gemma3" and name.endswith("norm.weight"):
                values = values - np.float32(1.0)
            w.copy_(torch.from_numpy(np.array(values, dtype=np.float32)))
    ids = np.random.default_rng(2).integers(3, 4096, 24)
    with torch.no_grad():
        expected = ref(input_ids=torch.as_tensor(ids)[None], use_cache=False, output_hidden_states=True).logits[0].numpy()
    np.testing.assert_allclose(logits(minigemma.load(str(tmp_path / "m.gguf")), ids), expected, rtol=1e-4, atol=1e-4)


def test_gemma3_layer_pattern_other_than_5_to_1_is_stated(tmp_path):
    """A converter-written gemma3 file has no layer pattern (llama.cpp assumes 5 sliding, 1 global);
    ours states the checkpoint's own, so the file runs as the checkpoint does."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    src = tmp_path / "pattern2"
    config = Gemma3TextConfig(**{**GEMMA3, "sliding_window_pattern": 2, "num_hidden_layers": 4})
    fill(Gemma3ForCausalLM(config), seed=5).save_pretrained(src)
    (src / "tokenizer.model").write_bytes((TINY / "tokenizer.model").read_bytes())
    quantize(src, tmp_path / "m.gguf", "F32")
    pattern = gguf.GGUFReader(tmp_path / "m.gguf").fields["gemma3.attention.sliding_window_pattern"].contents()
    assert pattern == [True, False, True, False]
    ids = np.random.default_rng(1).integers(3, 4096, 20)
    np.testing.assert_allclose(logits(minigemma.load(str(tmp_path / "m.gguf")), ids), logits(minigemma.load(str(src)), ids), rtol=1e-5, atol=1e-5)


def expected_name(names, name: str) -> str:
    """llama.cpp's name of a Gemma 4 checkpoint tensor: the gguf package's map, after the converter's
    renames (a `.weight` on layer_scalar and the expert tensors; the router's two scales)."""
    if name.endswith("router.scale"):
        return f"blk.{name.split('.')[2]}.ffn_gate_inp.scale"
    if name.endswith("router.per_expert_scale"):
        return f"blk.{name.split('.')[2]}.ffn_down_exps.scale"
    key = name if name.endswith((".weight", ".bias")) else name + ".weight"
    return names.get_name(key, try_suffixes=(".weight", ".bias"))


def expected_type(gguf_name: str, shape, type_name: str):
    """Vectors, norms, `.scale`s and the router F32; under llama-quantize's types per_layer_model_proj
    F32 too; rows shorter than a block F16; the rest the chosen type."""
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight") or "ffn_gate_inp" in gguf_name:
        return Q.F32
    if "per_layer_model_proj" in gguf_name and type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        return Q.F32
    return Q.F16 if shape[-1] % gguf.GGML_QUANT_SIZES[Q[type_name]][0] else Q[type_name]


@settings(max_examples=5)
@given(kwargs=text_config_kwargs(max_layers=4), type_name=st.sampled_from(TYPES), data=st.data())
def test_every_tensor_of_drawn_gemma4_configs_is_written(kwargs, type_name, data, tmp_path_factory):
    src = tmp_path_factory.mktemp("drawn")
    ref = reference_text_model(kwargs, seed=data.draw(st.integers(0, 2**16), label="seed"))
    ref.save_pretrained(src)
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (src / file).write_bytes((TINY / file).read_bytes())
    note(f"config: {kwargs}, type {type_name}")
    write_gguf(src, src / "m.gguf", load_config(src).text, type_name)
    tensors = {t.name: t for t in gguf.GGUFReader(src / "m.gguf").tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, kwargs["num_hidden_layers"])
    written = {"rope_freqs.weight"}
    for name, w in ref.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: stored once, as token_embd
        gguf_name = expected_name(names, name)
        assert gguf_name in tensors, name
        written.add(gguf_name)
        t = tensors[gguf_name]
        values = w.detach().float().numpy()
        assert t.tensor_type == expected_type(gguf_name, values.shape, type_name), gguf_name
        rows = values.reshape(-1, values.shape[-1])
        expected = gguf.quants.dequantize(gguf.quants.quantize(rows, t.tensor_type), t.tensor_type)
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(expected.shape)
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert set(tensors) == written


def test_gguf_package_missing_is_named(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(InputError, match=r"pip install 'minigemma\[gguf\]'"):
        write_gguf(checkpoints["gemma3"], tmp_path / "m.gguf", load_config(checkpoints["gemma3"]).text, "Q8_0")


def test_missing_tokenizer_is_named(checkpoints, tmp_path):
    src = tmp_path / "no_tokenizer"
    src.mkdir()
    for f in ("config.json", "model.safetensors"):
        (src / f).write_bytes((checkpoints["gemma4_mm"] / f).read_bytes())
    with pytest.raises(CheckpointError, match="tokenizer.json: missing"):
        write_gguf(src, tmp_path / "m.gguf", load_config(src).text, "Q8_0")


def test_broken_tokenizer_is_named(checkpoints, tmp_path):
    src = tmp_path / "broken"
    src.mkdir()
    for f in ("config.json", "model.safetensors"):
        (src / f).write_bytes((checkpoints["gemma4_mm"] / f).read_bytes())
    (src / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    with pytest.raises(CheckpointError, match="tokenizer.json: not a tokenizers BPE vocabulary"):
        write_gguf(src, tmp_path / "m.gguf", load_config(src).text, "Q8_0")


def test_other_architectures_are_refused(checkpoints, tmp_path):
    src = tmp_path / "other"
    src.mkdir()
    config = json.loads((checkpoints["gemma3"] / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    with pytest.raises(ConfigError, match="LlamaForCausalLM"):
        write_gguf(src, tmp_path / "m.gguf", load_config(checkpoints["gemma3"]).text, "Q8_0")


@pytest.mark.parametrize("args, message", [
    (["--type", "Q3_K"], "invalid choice: 'Q3_K'"),
    (["--type", "Q8_0", "--nope"], "unrecognized arguments"),
])
def test_cli_errors_are_one_line_exit_2(args, message, checkpoints, tmp_path):
    run = subprocess.run([sys.executable, "-m", "minigemma", "quantize", str(checkpoints["gemma3"]), str(tmp_path / "m.gguf"), *args],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr


def test_cli_names_a_missing_checkpoint(tmp_path):
    run = subprocess.run([sys.executable, "-m", "minigemma", "quantize", str(tmp_path / "none"), str(tmp_path / "m.gguf")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"minigemma: error: {tmp_path / 'none'}: no config.json found (expected a Hugging Face checkpoint directory)"]


def test_quantize_needs_no_torch(checkpoints, tmp_path):
    """The command is part of the runtime: numpy, the gguf package and minigemma, nothing of torch's."""
    code = ("import sys; sys.modules['torch'] = sys.modules['transformers'] = None; from minigemma.cli import main; "
            f"sys.exit(main(['quantize', {str(checkpoints['gemma4'])!r}, {str(tmp_path / 'm.gguf')!r}, '--type', 'Q4_0']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"wrote {tmp_path / 'm.gguf'}: 124 tensors")
