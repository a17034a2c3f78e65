"""Vision and audio towers from llama.cpp's companion `mmproj` GGUF (`weights/gguf_mmproj*.py`).

For drawn small `Gemma4ForConditionalGeneration`s with both towers (every parameter randomised:
norm weights, clip bounds, scalars), the text model is written as a GGUF and the towers as an
mmproj by `minigemma quantize` (whose mmproj equals llama.cpp's converter's byte for byte: checked
locally against `convert_hf_to_gguf.py --mmproj`, which CI cannot run). Loaded together:

* the towers' soft tokens equal those of the model loaded from the Hugging Face checkpoint (1e-5);
* the logits of an image prompt and of an audio prompt equal the transformers reference's (1e-4);
  for a Q8_0 mmproj, the reference holds the file's tensors dequantized by the `gguf` package.

Then the errors: an mmproj that does not fit the model, a text GGUF given as mmproj and the other
way round, a wrong projector, a missing tensor, a shape that disagrees -- one named
`CheckpointError`, one CLI line; mutated headers never crash the reader.
"""

import json
import os
import shutil
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from audio_reference import audio_config_kwargs
from gemma_reference import make_text_config, randomize
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from test_audio_and_images import token_types
from test_gguf_reader import MUTATIONS, mutated
from test_vision_generate import TEXT
from gguf_mmproj_fixtures import LISTINGS, write_mmproj_case
from gguf_write_fixtures import CONVERTER_TYPES, listing
from tokenizer_fixtures import write_bpe_tokenizer
from vision_reference import patch_grids, vision_config_kwargs

import minigemma
from minigemma.audio.features import extract_features
from minigemma.cli.main import main
from minigemma.audio.subsample import subsampled_mask
from minigemma.errors import CheckpointError, MinigemmaError
from minigemma.generate.tokenizer import load_tokenizer
from minigemma.text.config import load_config
from minigemma.weights.gguf_mmproj import AUDIO_FIXED
from minigemma.weights.gguf_mmproj_names import from_gguf, hf_name, hf_shape
from minigemma.weights.gguf_write import write_gguf
from minigemma.weights.gguf_write_mmproj import write_mmproj

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOWER_TOL, LOGIT_TOL = dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-4)
SETTINGS = settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def towers(draw):
    """Vision and audio kwargs in what the mmproj layout can say (llama.cpp fixes RoPE theta 100 and
    the conformer's chunking, caps and activation); everything else drawn."""
    vision = draw(vision_config_kwargs()) | {"rope_parameters": {"rope_type": "axial", "rope_theta": 100.0}}
    audio, mels = draw(audio_config_kwargs(max_layers=2))
    audio |= {k: v for k, v in AUDIO_FIXED.items()}
    return vision, audio, mels


def build(root, vision, audio, mels, seed, qtype="F32"):
    """(reference, our model from text GGUF + mmproj, our model from the checkpoint, mmproj path)."""
    from transformers import Gemma4AudioFeatureExtractor, Gemma4Config, Gemma4ForConditionalGeneration

    d = write_bpe_tokenizer(str(root / "hf"))
    tok = load_tokenizer(d)
    ids = {f"{name}_token_id": tok.token_id(f"{name}_token") for name in ("image", "boi", "eoi", "audio", "boa")}
    ids["eoa_token_index"] = tok.token_id("eoa_token")
    ids["video_token_id"] = tok.token_id("mask_token")  # the fixture has no video token
    text = make_text_config(dict(TEXT, vocab_size=tok.vocab_size, vocab_size_per_layer_input=tok.vocab_size,
                                 pad_token_id=tok.token_id("pad_token"), bos_token_id=tok.bos_id, eos_token_id=None))
    cfg = Gemma4Config(text_config=text.to_dict(), vision_config=vision, audio_config=audio, **ids)
    for c in (cfg, cfg.text_config, cfg.vision_config, cfg.audio_config):
        c._attn_implementation = "eager"
    torch.manual_seed(seed)
    ref = randomize(Gemma4ForConditionalGeneration(cfg), seed).eval()
    ref.save_pretrained(d)
    Gemma4AudioFeatureExtractor(feature_size=mels).save_pretrained(d)
    text_file, mmproj = str(root / "text.gguf"), str(root / "mmproj.gguf")
    write_gguf(d, text_file, load_config(d).text, "F32")
    write_mmproj(d, mmproj, qtype)
    return ref, minigemma.load(text_file, kernels=False, mmproj=mmproj), minigemma.load(d, kernels=False), mmproj


def hold_file_tensors(ref, mmproj: str):
    """The reference with the mmproj's tensors, dequantized by the `gguf` package, in place of its own."""
    state = {}
    for t in gguf.GGUFReader(mmproj).tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # NumPy order
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        state[hf_name(t.name)] = torch.from_numpy(np.array(from_gguf(t.name, values, hf_shape(t.name, shape))))
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and all("language_model" in n or n == "lm_head.weight" for n in missing), (missing, unexpected)
    return ref


def media(data, model, vision, mels):
    """A drawn image batch and one clip: processor-shaped inputs and their soft token counts."""
    k, p = vision["pooling_kernel_size"], vision["patch_size"]
    pixels, positions, shapes = data.draw(patch_grids(k, 3 * p * p, max_side=2 * k, images=st.integers(1, 2)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    clip = rng.uniform(-0.8, 0.8, data.draw(st.integers(400, 4000))).astype(np.float32)
    features, mask = extract_features([clip], model.audio.features)  # equal to the reference extractor's (tested)
    n_image = [r * c // (k * k) for r, c in shapes]
    return dict(pixel_values=pixels, image_position_ids=positions), dict(input_features=features, input_features_mask=mask), \
        n_image, int(subsampled_mask(mask).sum())


def prompt(model, marks: list[tuple[str, int]]) -> np.ndarray:
    t, tok = model.config.tokens, model.tokenizer
    ids = [tok.bos_id, *tok.encode("look")]
    for kind, n in marks:
        begin, end = (("boi_token_id", "eoi_token_id") if kind == "image" else ("boa_token_id", "eoa_token_index"))
        ids += [t[begin], *[t[f"{kind}_token_id"]] * n, t[end], *tok.encode(" then")]
    return np.array(ids, np.int64)


def reference_logits(ref, model, ids, inputs) -> np.ndarray:
    types = token_types(ids, model.config.tokens)
    with torch.no_grad():
        out = ref(input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(types[None]), use_cache=False,
                  **{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()})
    return out.logits[0].float().numpy()


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
@SETTINGS
@given(drawn=towers(), seed=st.integers(0, 2**16), data=st.data())
def test_mmproj_towers_and_logits_equal_the_reference(tmp_path_factory, qtype, drawn, seed, data):
    vision, audio, mels = drawn
    if qtype == "Q8_0":
        vision = vision | {"hidden_size": 32}  # rows of 32: whole Q8_0 blocks (shorter rows fall back to F16)
    note(f"vision {vision}\naudio {audio}\nmels {mels}, seed {seed}, {qtype}")
    ref, model, from_hf, mmproj = build(tmp_path_factory.mktemp("mmproj"), vision, audio, mels, seed, qtype)
    assert model.vision.config == from_hf.vision.config and model.audio.config == from_hf.audio.config
    image_inputs, audio_inputs, n_image, n_audio = media(data, model, vision, mels)
    if qtype == "F32":  # the towers as stored: soft tokens equal the checkpoint's
        for inputs in (image_inputs, audio_inputs):
            (_, _, got), = model.encode_media(**inputs)
            (_, _, expected), = from_hf.encode_media(**inputs)
            np.testing.assert_allclose(got, expected, **TOWER_TOL)
    else:
        kinds = {t.tensor_type.name for t in gguf.GGUFReader(mmproj).tensors}
        assert "Q8_0" in kinds, kinds
        ref = hold_file_tensors(ref, mmproj)
    for inputs, marks in ((image_inputs, [("image", n) for n in n_image]), (audio_inputs, [("audio", n_audio)])):
        ids = prompt(model, marks)
        got = model.forward(ids, mm_token_type_ids=token_types(ids, model.config.tokens), **inputs)
        np.testing.assert_allclose(got, reference_logits(ref, model, ids, inputs), **LOGIT_TOL)


@pytest.mark.parametrize("type_name", CONVERTER_TYPES)
def test_quantize_mmproj_equals_llama_cpp_converter_output(type_name, tmp_path_factory):
    """`minigemma quantize SRC OUT --mmproj MMPROJ`: the mmproj equals, key by key and tensor by tensor
    to the byte, what `convert_hf_to_gguf.py --mmproj` wrote for the same checkpoint (stored listings),
    but for the softplus'd `per_dim_scale` values: torch's vectorised softplus and NumPy's may part in
    the last bit, so those agree to 1 ulp."""
    src = write_mmproj_case(tmp_path_factory.mktemp("towers"))
    out, mmproj = src.parent / "text.gguf", src.parent / "mmproj.gguf"
    assert main(["quantize", str(src), str(out), "--type", type_name, "--mmproj", str(mmproj)]) == 0
    stored = json.loads(LISTINGS.read_text())
    ours, theirs = listing(mmproj), stored["cases"][f"mmproj/{type_name}"]
    assert [k[0] for k in ours["keys"]] == [k[0] for k in theirs["keys"]]
    for mine, expected in zip(ours["keys"], theirs["keys"]):
        assert mine == expected
    assert [t[0] for t in ours["tensors"]] == [t[0] for t in theirs["tensors"]]
    values = {t.name: np.array(t.data) for t in gguf.GGUFReader(mmproj).tensors}
    for mine, expected in zip(ours["tensors"], theirs["tensors"]):
        if mine[0] in stored["softplus"]:
            assert mine[:3] == expected[:3]
            np.testing.assert_array_max_ulp(values[mine[0]], np.float32(stored["softplus"][mine[0]]), maxulp=1)
        else:
            assert mine == expected
    assert stored["softplus"] and minigemma.load(out, kernels=False, mmproj=mmproj).audio is not None


# ------------------------------------------------------------------------------------ bad input

VISION = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              head_dim=8, patch_size=4, pooling_kernel_size=3, position_embedding_size=64, use_clipped_linears=True,
              standardize=True)
AUDIO = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, subsampling_conv_channels=[8, 4],
             output_proj_dims=12) | AUDIO_FIXED


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmproj_errors")
    build(root, VISION, AUDIO, 8, seed=5)
    return root / "text.gguf", root / "mmproj.gguf"


def patched(path, out, old: bytes, new: bytes):
    """`path` with the first `old` bytes (a name, a string value) replaced by `new`, of the same length."""
    raw = path.read_bytes()
    assert len(old) == len(new) and old in raw
    out.write_bytes(raw.replace(old, new, 1))
    return out


def with_u32(path, out, key: str, value: int):
    """`path` with the u32 value of metadata `key` set to `value` (key string, then its type, then the value)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(key.encode()) + len(key) + 4
    raw[at : at + 4] = int(value).to_bytes(4, "little")
    out.write_bytes(bytes(raw))
    return out


def load_error(text, mmproj) -> str:
    with pytest.raises(CheckpointError) as e:
        minigemma.load(text, kernels=False, mmproj=mmproj)
    return str(e.value)


def test_an_mmproj_that_does_not_fit_is_one_named_error(files, tmp_path):
    text, mmproj = files
    bad = with_u32(mmproj, tmp_path / "other_hidden.gguf", "clip.vision.projection_dim", 48)
    msg = load_error(text, bad)
    assert str(bad) in msg and "clip.vision.projection_dim" in msg and "hidden size 32" in msg and "48" in msg
    bad = patched(mmproj, tmp_path / "projector.gguf", b"gemma4a", b"gemma3a")
    msg = load_error(text, bad)
    assert "clip.audio.projector_type" in msg and "'gemma4a'" in msg and "'gemma3a'" in msg
    bad = with_u32(mmproj, tmp_path / "shape.gguf", "clip.vision.feed_forward_length", 48)
    msg = load_error(text, bad)
    assert "'v.blk.0.ffn_gate.weight'" in msg and "[40, 32]" in msg and "[48, 32]" in msg
    bad = patched(mmproj, tmp_path / "missing.gguf", b"v.blk.1.ln1.weight", b"v.blk.7.ln1.weight")
    assert "missing tensor 'v.blk.1.ln1.weight'" in load_error(text, bad)
    bad = patched(mmproj, tmp_path / "stranger.gguf", b"v.std_scale", b"v.std_scalx")
    assert "'v.std_scalx' is not part of a Gemma 4 mmproj" in load_error(text, bad)


def test_swapped_files_are_named(files):
    text, mmproj = files
    assert "expected 'clip' for an mmproj file" in load_error(text, text)
    assert "an mmproj file" in load_error(mmproj, None) and "general.architecture is 'clip'" in load_error(mmproj, None)


def test_cli_says_one_line_and_exits_non_zero(files, tmp_path):
    text, mmproj = files
    bad = with_u32(mmproj, tmp_path / "other_hidden.gguf", "clip.audio.projection_dim", 64)
    r = subprocess.run([sys.executable, "-m", "minigemma", "info", "--model", str(text), "--mmproj", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "clip.audio.projection_dim" in r.stderr
    r = subprocess.run([sys.executable, "-m", "minigemma", "info", "--model", str(text), "--mmproj", str(mmproj)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "vision:" in r.stdout and "audio:" in r.stdout


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_mutated_mmproj_headers_never_crash_load(files, tmp_path, mutations):
    """Bytes of the mmproj's header overwritten, counts made huge, the file cut: it loads, or the
    error is ours -- never a NumPy / struct / KeyError traceback."""
    text, mmproj = files
    note(f"mutations {mutations}")
    try:
        minigemma.load(text, kernels=False, mmproj=mutated(mmproj, mutations, tmp_path / "mutated.gguf"))
    except MinigemmaError:
        pass


def test_quantize_refuses_what_the_layout_cannot_say(files, tmp_path):
    """A setting llama.cpp fixes in code (no key for it): a checkpoint that differs gets a named error,
    not a file that would silently run another model."""
    text, _ = files
    src = tmp_path / "hf"
    shutil.copytree(text.parent / "hf", src)
    config = json.loads((src / "config.json").read_text())
    config["audio_config"]["attention_chunk_size"] = 5
    (src / "config.json").write_text(json.dumps(config))
    r = subprocess.run([sys.executable, "-m", "minigemma", "quantize", str(src), str(tmp_path / "t.gguf"), "--mmproj",
                        str(tmp_path / "m.gguf")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert "audio_config.attention_chunk_size" in r.stderr and "fixes it to 12, found 5" in r.stderr


def test_generate_cli_with_mmproj_image_and_audio(files, tmp_path):
    """`minigemma generate --model text.gguf --mmproj mmproj.gguf --image ... --audio ...` prints what
    the loaded model generates."""
    from audio_reference import write_wav
    from PIL import Image

    text, mmproj = files
    rng = np.random.default_rng(3)
    image, clip = tmp_path / "p.png", tmp_path / "c.wav"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    write_wav(clip, rng.integers(-20000, 20000, 2600) / 32768)
    model = minigemma.load(text, kernels=False, mmproj=mmproj)
    line = "look <|image|> and <|audio|> now"
    expected = model.generate(line, 6, temperature=0, images=[str(image)], audio=[str(clip)], max_soft_tokens=70)
    r = subprocess.run([sys.executable, "-m", "minigemma", "generate", line, "--model", str(text), "--mmproj", str(mmproj),
                        "--image", str(image), "--audio", str(clip), "--max-soft-tokens", "70", "--temperature", "0",
                        "--max-new-tokens", "6", "--no-kernels"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"
