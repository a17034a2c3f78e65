"""A Gemma 4 GGUF's tokenizer (`tokenizer.ggml.model` "gemma4": BPE with the file's merges), built
in memory by minigemma (`weights/gguf_tokenizer.py`), against transformers' GGUF tokenizer reading
the same file.

The vocabulary is the embedded model's real Gemma-4-style tokenizer (4,096 pieces, 6,155 merges,
Gemma 4's special tokens), written as llama.cpp's converter writes it (`Gemma4Model.set_vocab`:
`LlamaHfVocab` marks every added token control, except the chat parser's visible ones, which are
user-defined; byte pieces byte; scores -1000; merges "left right"); checked once against the
converter's own output for this tokenizer: the same tokens, types and merges.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from gemma_reference import GLOBAL, SLIDING, reference_text_model
from gguf_gemma4_writer import write_gemma4_gguf
from hypothesis import given, note, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

import minigemma

TINY = Path(minigemma.__file__).parent / "data" / "tiny"
CONTROL, USER_DEFINED, BYTE, NORMAL = 3, 4, 6, 1
VISIBLE = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>'}


def converter_vocabulary(tokenizer_json: Path):
    """(pieces, scores, types, merges) as `Gemma4Model.set_vocab` writes them for a tokenizer.json."""
    t = json.loads(tokenizer_json.read_text())
    vocab = t["model"]["vocab"]
    pieces = sorted(vocab, key=vocab.get)
    added = {a["id"] for a in t["added_tokens"]}
    types = [USER_DEFINED if p in VISIBLE else CONTROL if i in added else BYTE if p.startswith("<0x") and len(p) == 6
             else NORMAL for i, p in enumerate(pieces)]
    merges = [" ".join(m) if isinstance(m, list) else m for m in t["model"]["merges"]]
    return pieces, [-1000.0] * len(pieces), types, merges


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    vocabulary = converter_vocabulary(TINY / "tokenizer.json")
    kw = dict(vocab_size=len(vocabulary[0]), hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=16, global_head_dim=16, layer_types=[SLIDING, GLOBAL], sliding_window=4,
              hidden_size_per_layer_input=0, rope_parameters={
                  SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                  GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}})
    path = tmp_path_factory.mktemp("g4tok") / "tok.gguf"
    write_gemma4_gguf(str(path), reference_text_model(kw), vocabulary=vocabulary,
                      chat_template=(TINY / "chat_template.jinja").read_text())
    return path


@pytest.fixture(scope="module")
def ours(gguf_file):
    return minigemma.load(gguf_file, kernels=False).tokenizer


@pytest.fixture(scope="module")
def reference(gguf_file):
    return AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)


SPECIAL = ["<bos>", "<eos>", "<pad>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>", "<|image|>",
           '<|"|>', "<|tool_call>", "<mask>", "<unk>"]
WORDS = ["user", "model", " the", "hello", " naïve", "😀", "日本語", "<0x41>", "\u200b", "é", "--", "    "]
WHITESPACE = st.builds(lambda c, n: c * n, st.sampled_from([" ", "\n", "\t", " \n", "\r\n", "\u3000"]), st.integers(1, 20))
TEXTS = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=10), WHITESPACE, st.sampled_from(SPECIAL),
              st.sampled_from(WORDS)),
    max_size=8,
).map("".join)


@settings(max_examples=100)
@given(text=TEXTS)
def test_encode_and_decode_match_the_reference(ours, reference, text):
    note(f"text: {text!r}")
    ids = reference(text).input_ids
    assert ours.encode(text, add_special_tokens=True) == ids  # no <bos>: the reference follows the chat template
    assert ours.encode(text) == reference(text, add_special_tokens=False).input_ids
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


@settings(max_examples=50)
@given(ids=st.lists(st.integers(0, 4095), max_size=16))
def test_decode_of_any_ids_matches_the_reference(ours, reference, ids):
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


def test_chat_template_and_special_tokens_come_from_the_metadata(ours, reference):
    messages = [{"role": "user", "content": "Hi there"}]
    assert ours.render_chat(messages) == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.encode_chat(messages) == reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert (ours.bos_id, ours.token_id("eos_token")) == (reference.bos_token_id, reference.eos_token_id)
    assert np.all([ours.specials[t] == reference.convert_tokens_to_ids(t) for t in SPECIAL if t in ours.specials])
