"""Our tokenizer and chat rendering against `transformers.AutoTokenizer` / `apply_chat_template` on
the same directory: a trained BPE `tokenizer.json` and a trained SentencePiece `tokenizer.model`,
both with Gemma 4's special tokens and a chat template shaped like Gemma 4's. Drawn strings mix
any unicode, whitespace runs, special-token literals and near-misses; drawn conversations mix
system turns, reasoning, image items and the thinking switch."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from tokenizer_fixtures import GEMMA4_NAMED_TOKENS, SPECIAL_TOKENS, write_bpe_tokenizer, write_sentencepiece_tokenizer
from transformers import AutoTokenizer

from minigemma import ConfigError, InputError
from minigemma.generate.tokenizer import SentencePieceBackend, TextStream, TokenizersBackend, load_tokenizer

WRITERS = {"tokenizer.json": write_bpe_tokenizer, "tokenizer.model": write_sentencepiece_tokenizer}
BACKENDS = {"tokenizer.json": TokenizersBackend, "tokenizer.model": SentencePieceBackend}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def pair(request, tmp_path_factory):
    """(ours, reference) loaded from one directory."""
    d = WRITERS[request.param](str(tmp_path_factory.mktemp(request.param.replace(".", "_"))))
    ours = load_tokenizer(d)
    assert isinstance(ours.backend, BACKENDS[request.param])  # the file we meant to test is the one read
    return ours, AutoTokenizer.from_pretrained(d)


FRAGMENTS = st.one_of(
    st.text(max_size=10),  # any unicode (no surrogates)
    st.sampled_from([" ", "  ", "   ", "\n", "\n\n", "\t", " \t ", "\r\n", "\u3000", "\u00a0"]),
    st.sampled_from(SPECIAL_TOKENS + ["<bos", "|turn>", "<|turn", "<0x41>", "▁", "<<bos>>"]),  # literals, near-misses
    st.sampled_from(["naïve", "日本語", "😀", "👩‍👩‍👧", "e\u0301", "\u200b", "ß", "Ωmega", "12345"]),
    st.text(alphabet="abcdefghij thoughtmodel\n", max_size=20),
)
TEXTS = st.lists(FRAGMENTS, max_size=8).map("".join)


@settings(max_examples=60)
@given(text=TEXTS)
def test_encode_decode_match_transformers(pair, text):
    ours, ref = pair
    ids = ours.encode(text)
    assert ids == ref.encode(text, add_special_tokens=False)
    assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"]
    assert ours.decode(ids) == ref.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)


@settings(max_examples=40)
@given(data=st.data())
def test_decode_of_any_ids_matches_transformers(pair, data):
    """Any id sequence, e.g. lone byte-fallback tokens that are not valid UTF-8."""
    ours, ref = pair
    ids = data.draw(st.lists(st.integers(0, ours.vocab_size - 1), max_size=20))
    assert ours.decode(ids) == ref.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)


def test_special_token_ids_come_from_the_files(pair):
    ours, ref = pair
    for name, token in {"bos_token": "<bos>", "eos_token": "<eos>", **GEMMA4_NAMED_TOKENS}.items():
        assert ours.token_id(name) == ref.convert_tokens_to_ids(token) == ours.encode(token)[0]
    assert ours.bos_id == ref.bos_token_id


MESSAGE_TEXT = st.lists(FRAGMENTS.filter(lambda s: "{" not in s), max_size=4).map("".join)


@st.composite
def conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(MESSAGE_TEXT)})
    for turn in range(draw(st.integers(1, 4))):
        role = "user" if turn % 2 == 0 else "assistant"
        if role == "user" and draw(st.booleans()):
            content = [{"type": "text", "text": draw(MESSAGE_TEXT)}, {"type": draw(st.sampled_from(["image", "audio"]))}]
        else:
            content = draw(MESSAGE_TEXT)
        message = {"role": role, "content": content}
        if role == "assistant" and draw(st.booleans()):
            message[draw(st.sampled_from(["reasoning_content", "thinking", "reasoning"]))] = draw(MESSAGE_TEXT)
        messages.append(message)
    return messages


@settings(max_examples=40)
@given(
    messages=conversations(),
    add_generation_prompt=st.booleans(),
    switches=st.fixed_dictionaries({}, optional={"enable_thinking": st.booleans(), "preserve_thinking": st.booleans()}),
)
def test_chat_rendering_matches_apply_chat_template(pair, messages, add_generation_prompt, switches):
    ours, ref = pair
    note(f"messages: {messages}, switches: {switches}")
    text = ours.render_chat(messages, add_generation_prompt, **switches)
    expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **switches)
    assert text == expected
    expected_ids = ref.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **switches)
    expected_ids = expected_ids["input_ids"] if isinstance(expected_ids, dict) or hasattr(expected_ids, "keys") else expected_ids
    assert ours.encode_chat(messages, add_generation_prompt, **switches) == list(expected_ids)


@settings(max_examples=40)
@given(text=TEXTS)
def test_streamed_pieces_add_up_to_the_decoded_text(pair, text):
    """Pieces come out as soon as their characters are complete; never half a character."""
    ours, _ = pair
    ids = ours.encode(text)
    stream = TextStream(ours)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == ours.decode(ids)
    if "\ufffd" not in ours.decode(ids):
        assert not any("\ufffd" in p for p in pieces)


def test_multibyte_characters_wait_for_all_their_bytes(pair):
    ours, _ = pair
    emoji = "😀"  # not in the vocabulary as a piece: four byte-fallback tokens
    byte_ids = [ours.backend.piece_id(f"<0x{b:02X}>") for b in emoji.encode()]
    stream = TextStream(ours)
    assert [stream.push(i) for i in byte_ids] == ["", "", "", emoji]


def test_missing_tokenizer_template_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer .*tokenizer.model.*tokenizer.json"):
        load_tokenizer(str(tmp_path))
    d = write_bpe_tokenizer(str(tmp_path / "bpe"), template_file=False)
    cfg = json.loads(open(os.path.join(d, "tokenizer_config.json")).read())
    del cfg["chat_template"]
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    tok = load_tokenizer(d)
    assert tok.encode("hi")  # still a tokenizer, just no chat
    with pytest.raises(InputError, match="no chat template"):
        tok.render_chat([{"role": "user", "content": "hi"}])
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ConfigError, match="tokenizer_config.json: cannot read JSON"):
        load_tokenizer(d)


def test_template_errors_are_input_errors(pair):
    ours, _ = pair
    with pytest.raises(InputError, match="chat template: Conversation roles must be user or assistant, found tool"):
        ours.render_chat([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    with pytest.raises(InputError, match="messages: expected a list of dicts"):
        ours.render_chat(["hello"])


def test_sentencepiece_control_tokens_decode_like_transformers(tmp_path):
    """SentencePiece decodes <bos> (a control symbol) to nothing; transformers and we write it."""
    d = write_sentencepiece_tokenizer(str(tmp_path))
    ours, ref = load_tokenizer(d), AutoTokenizer.from_pretrained(d)
    ids = [ours.bos_id, *ours.encode("hello"), ours.token_id("eos_token")]
    assert ours.decode(ids) == ref.decode(ids) == "<bos>hello<eos>"
    assert ours.backend.sp.decode(ids) == "hello"  # what SentencePiece alone would say
    assert np.array_equal(ours.encode("<bos>hello<eos>"), ids)
