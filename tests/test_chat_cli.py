"""End to end: `minigemma generate` and `minigemma chat` as subprocesses on a saved checkpoint whose
greedy text is known in advance (`scripted_model.py`) with a Gemma 4-shaped tokenizer; the exact
stdout, the stderr report, exit codes, and every user error as one line. Plus the same model
through the Python API: `generate` / `stream`, the conversation's history and cache reuse, and the
thinking channel split by token ids."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scripted_model import add_chain, write_scripted_checkpoint
from tokenizer_fixtures import write_bpe_tokenizer

import minigemma
from minigemma.generate.chat import ANSWER, THOUGHT, Channels, Conversation
from minigemma.generate.sampling import Sampling
from minigemma.generate.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXT = 160
PROMPT = "Once"
CONTINUATION = " 日本🦙"  # the llama is not in the vocabulary: four byte-fallback tokens
THINKING, ANSWER_TEXT = "hmm", "Hi"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = write_bpe_tokenizer(str(tmp_path_factory.mktemp("scripted")))
    tok = load_tokenizer(d)
    user = [{"role": "user", "content": "hello"}]
    after_prompt = tok.encode_chat(user)[-1]  # thinking off: the prompt closes an empty channel
    after_think_prompt = tok.encode_chat(user, enable_thinking=True)[-1]  # "\n" of "<|turn>model\n"
    assert after_prompt == tok.token_id("eoc_token")
    soc, eoc, eot = tok.token_id("soc_token"), tok.token_id("eoc_token"), tok.token_id("eot_token")
    newline_byte = tok.backend.piece_id("<0x0A>")
    assert len(tok.encode("🦙")) == 4
    script = {}
    add_chain(script, after_think_prompt, [soc, *tok.encode("thought"), newline_byte, *tok.encode(THINKING), eoc])
    add_chain(script, eoc, [*tok.encode(ANSWER_TEXT), eot])
    add_chain(script, tok.encode(PROMPT)[-1], [*tok.encode(CONTINUATION), tok.token_id("eos_token")])
    eos = tok.token_id("eos_token")
    write_scripted_checkpoint(d, tok.vocab_size, script, default=eos, eos=[eos], max_position_embeddings=CONTEXT)
    return d


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "minigemma", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_generate_streams_the_continuation(model_dir):
    r = run("generate", PROMPT, "--model", model_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == CONTINUATION + "\n"
    assert "tokens/s" in r.stderr.splitlines()[-1]
    r = run("generate", "--model", model_dir, "--max-new-tokens", "2", "--temperature", "0.7", "--seed", "3",
            "--top-k", "5", "--top-p", "0.9", stdin=PROMPT)  # prompt from stdin, sampling flags
    tok = load_tokenizer(model_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == tok.decode(tok.encode(CONTINUATION)[:2]) + "\n"


def test_chat_piped_turns_keep_history_and_reuse_the_cache(model_dir):
    r = run("chat", "--model", model_dir, stdin="hello\n\nhow are you?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{ANSWER_TEXT}\n{ANSWER_TEXT}\n"  # two turns; the empty line is skipped
    reports = [line for line in r.stderr.splitlines() if "tokens/s" in line]
    cached = [int(line.split()[1]) for line in r.stderr.splitlines() if "came from the cache" in line]
    prompts = [int(line.split("prompt ")[1].split()[0]) for line in reports]
    assert len(reports) == 2 and cached[0] == 0
    # turn 2 reads all of turn 1 up to its generation prompt from the cache (the history rendered
    # anew has no empty thinking channel where the generation prompt had one)
    tok = load_tokenizer(model_dir)
    assert cached[1] == len(tok.encode_chat([{"role": "user", "content": "hello"}], add_generation_prompt=False))
    assert prompts[1] > prompts[0] > cached[1] > 0


def test_chat_shows_thinking_apart_from_the_answer(model_dir):
    r = run("chat", "--model", model_dir, "--think", "--system", "Be brief.", stdin="hello\nagain\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"(thinking) {THINKING}\n{ANSWER_TEXT}\n" * 2


def test_help():
    for command in ("generate", "chat"):
        r = run(command, "--help")
        assert r.returncode == 0 and "--max-new-tokens" in r.stdout and "--temperature" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "--temperature: expected a number >= 0"),
        (["--temperature", "abc"], "argument --temperature: invalid float value"),
        (["--top-p", "0"], "--top-p: expected a number in (0, 1]"),
        (["--top-p", "1.5"], "--top-p: expected a number in (0, 1]"),
        (["--top-k", "-2"], "--top-k: expected an integer >= 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens: expected an integer >= 1"),
        (["--seed", "-1"], "--seed: expected an integer >= 0"),
    ],
)
def test_bad_flags_are_one_line_errors(model_dir, args, message):
    for command in (["generate", PROMPT], ["chat"]):
        r = run(*command, "--model", model_dir, *args, stdin="hello\n")
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and "error" in r.stderr


def test_model_and_prompt_errors_are_one_line(model_dir, tmp_path):
    no_tokenizer = tmp_path / "weights_only"
    no_tokenizer.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(model_dir, f), no_tokenizer / f)
    cases = [
        (run("generate", PROMPT, "--model", str(tmp_path / "missing")), "missing: not a directory"),
        (run("generate", PROMPT, "--model", str(no_tokenizer)), "no tokenizer"),
        (run("chat", "--model", str(no_tokenizer), stdin="hi\n"), "no tokenizer"),
        (run("generate", "word " * CONTEXT, "--model", model_dir), f"longer than the model's context (max_position_embeddings={CONTEXT})"),
        (run("chat", "--model", model_dir, stdin="word " * CONTEXT + "\n"), "longer than the model's context"),
    ]
    for r, message in cases:
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()[-1:]) == 1 and message in r.stderr.strip().splitlines()[-1]
        assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ Python level


def test_generate_and_stream_through_the_api(model_dir):
    model = minigemma.load(model_dir)
    assert model.generate(PROMPT) == CONTINUATION
    pieces = list(model.stream(PROMPT, temperature=0.5, seed=1))
    assert "".join(pieces) == CONTINUATION and "🦙" in pieces  # the emoji comes out whole
    ids = model.tokenizer.encode(PROMPT, add_special_tokens=True)
    new = model.generate(ids)
    np.testing.assert_array_equal(new, [*model.tokenizer.encode(CONTINUATION), model.tokenizer.token_id("eos_token")])
    assert model.generate([{"role": "user", "content": "hello"}]) == ANSWER_TEXT  # messages: the chat template


def test_conversation_history_and_cache(model_dir):
    model = minigemma.load(model_dir)
    chat = Conversation(model, Sampling(), max_new_tokens=32, thinking=True)

    def text_of(pieces, channel):
        return "".join(p for c, p in pieces if c == channel)

    first = list(chat.reply("hello"))
    assert text_of(first, THOUGHT) == THINKING and text_of(first, ANSWER) == ANSWER_TEXT
    channels = [c for c, _ in first]
    assert channels == sorted(channels, key=[THOUGHT, ANSWER].index)  # all thinking, then the answer
    assert chat.messages == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ANSWER_TEXT}]
    assert chat.cache.length == len(chat.cached)  # the cache holds exactly the ids we think it does
    history = chat.tokenizer.encode_chat(chat.messages[:1], add_generation_prompt=False, enable_thinking=True)
    second = list(chat.reply("again"))
    assert text_of(second, ANSWER) == ANSWER_TEXT
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.cached[: len(history)] == history  # turn 1 up to its generation prompt stayed cached
    assert chat.last.prefilled == chat.last.prompt_tokens - len(history)  # and only the rest was prefilled
    assert chat.cache.length == len(chat.cached)


def test_channels_split_by_token_ids(model_dir):
    tok = load_tokenizer(model_dir)
    soc, eoc = tok.token_id("soc_token"), tok.token_id("eoc_token")

    def split(ids):
        channels, out = Channels(tok), []
        for i in ids:
            out += channels.push(i)
        out += channels.finish()
        return {c: "".join(p for ch, p in out if ch == c) for c in (THOUGHT, ANSWER)}

    ids = [*tok.encode("a"), soc, *tok.encode("thought\nlet me\nsee"), eoc, *tok.encode("The answer")]
    assert split(ids) == {THOUGHT: "let me\nsee", ANSWER: "aThe answer"}  # the channel's name line is dropped
    assert split([soc, *tok.encode("thought"), eoc, *tok.encode("ok")]) == {THOUGHT: "", ANSWER: "ok"}
    assert split(tok.encode("no channel at all")) == {THOUGHT: "", ANSWER: "no channel at all"}


@pytest.mark.parametrize("thinking", [False, True])
def test_conversation_cache_equals_recomputation(tmp_path, thinking):
    """On a random model (the scripted one ignores its past), after turns that wrap the rings and
    rewind to saved states, the conversation's cache continues exactly like a fresh prefill of the
    ids it claims to hold."""
    from gemma_reference import reference_text_model

    d = write_bpe_tokenizer(str(tmp_path))
    kwargs = dict(
        vocab_size=load_tokenizer(d).vocab_size, hidden_size=32, intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=4,
        num_kv_shared_layers=1, hidden_size_per_layer_input=4, vocab_size_per_layer_input=load_tokenizer(d).vocab_size,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    )
    reference_text_model(kwargs, seed=6).save_pretrained(d)
    model = minigemma.load(d)
    chat = Conversation(model, Sampling(temperature=1.0, seed=4), max_new_tokens=6, system="Be brief.", thinking=thinking)
    for turn, text in enumerate(("hello there", "and then?", "why", "ok")):
        list(chat.reply(text))
        assert chat.cache.length == len(chat.cached)
        assert (chat.last.prefilled < chat.last.prompt_tokens) == (turn > 0)  # later turns reuse the cache
        fresh = model.new_cache()
        model.extend(np.array(chat.cached), fresh)
        probe = np.array([7, 8, 9, 10])[: turn + 1]  # 1 to 4 tokens: restores must undo every shift
        state = chat.cache.save()  # probe, then put the conversation's cache back as it was
        np.testing.assert_allclose(model.extend(probe, chat.cache), model.extend(probe, fresh), rtol=1e-5, atol=1e-5)
        chat.cache.restore(state)
    assert len(chat.cached) > 8 * kwargs["sliding_window"]  # the rings wrapped many times


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`minigemma generate ... | head -c 10`: once the reader closes the pipe, the next write
    fails; the command stops quietly with the shell's status for it (128 + SIGPIPE)."""
    p = subprocess.Popen([sys.executable, "-m", "minigemma", "generate", "Exceptions are", "--max-new-tokens", "400",
                          "--temperature", "1", "--seed", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.read(10)  # the first piece has arrived: generation is under way
    p.stdout.close()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 141, err.decode()
    assert b"Traceback" not in err and b"Error" not in err, err.decode()
