"""The compact KV cache from the outside: `--kv-cache-dtype` on `minigemma generate` / `chat` and
`kv_cache_dtype=` in `generate` / `stream` / `Conversation` reach the cache (every cache built is
float16 when asked), the CLI prints what the Python API returns with the same dtype, and a bad
value is one line. The cache's arithmetic itself (float16 stored, widened in the kernels) is
proven in test_attention_kernel.py; the size formula in test_benchmarks.py."""

import io
import subprocess
import sys

import numpy as np
import pytest

import minigemma
from minigemma.cli.main import main
from minigemma.generate.cache import storage_dtype
from minigemma.generate.chat import Conversation
from minigemma.generate.sampling import Sampling
from minigemma.model import Model

PROMPT = "The sliding window"
NEW = 12
SAMPLING = ["--temperature", "0.9", "--top-k", "20", "--seed", "3"]  # sampling: every logit matters


@pytest.fixture
def cache_dtypes(monkeypatch):
    """The dtypes of every KV cache any model builds while the test runs."""
    made, new_cache = [], Model.new_cache

    def recording(self, dtype=np.float32, lookback=0):
        cache = new_cache(self, dtype, lookback)
        made.extend({c.keys.dtype for c in cache.layers if c is not None})
        return cache

    monkeypatch.setattr(Model, "new_cache", recording)
    return made


def cli(capsys, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_generate_flag_equals_the_python_api(dtype, capsys, cache_dtypes):
    status, out = cli(capsys, "generate", PROMPT, "--max-new-tokens", str(NEW), *SAMPLING, "--kv-cache-dtype", dtype)
    assert status == 0
    assert cache_dtypes and set(cache_dtypes) == {np.dtype(dtype)}
    del cache_dtypes[:]
    model = minigemma.load()
    text = model.generate(PROMPT, max_new_tokens=NEW, temperature=0.9, top_k=20, seed=3, kv_cache_dtype=dtype)
    assert set(cache_dtypes) == {np.dtype(dtype)}
    assert out == text + "\n"
    del cache_dtypes[:]
    pieces = "".join(model.stream(PROMPT, max_new_tokens=NEW, temperature=0.9, top_k=20, seed=3,
                                  kv_cache_dtype=getattr(np, dtype)))
    assert pieces == text and set(cache_dtypes) == {np.dtype(dtype)}


def test_float16_changes_the_logits_the_sampler_sees():
    """So the flag is worth testing end to end: the same prompt through a float16 cache gives
    other (close) logits than through a float32 one."""
    model = minigemma.load()
    ids = model.tokenizer.encode(PROMPT * 20, add_special_tokens=True)
    logits = {}
    for dtype in ("float32", "float16"):
        cache = model.new_cache(dtype)
        model.extend(ids[:-1], cache)
        logits[dtype] = model.extend(ids[-1:], cache)
    assert not np.array_equal(logits["float16"], logits["float32"])
    np.testing.assert_allclose(logits["float16"], logits["float32"], rtol=0, atol=1e-2)


def test_chat_flag_reaches_every_cache(capsys, monkeypatch, cache_dtypes):
    status, out = cli(capsys, "chat", "--temperature", "0", "--max-new-tokens", "6", "--kv-cache-dtype", "float16",
                      stdin="Hi!\nWhat does os.path.join do?\n", monkeypatch=monkeypatch)
    assert status == 0 and len(out.splitlines()) == 2
    assert cache_dtypes and set(cache_dtypes) == {np.dtype(np.float16)}
    model = minigemma.load(minigemma.model.default_chat_model_path())
    chat = Conversation(model, Sampling(temperature=0.0), 6, kv_cache_dtype="float16")
    replies = ["".join(piece for _, piece in chat.reply(turn)) for turn in ("Hi!", "What does os.path.join do?")]
    assert out.splitlines() == replies  # greedy, no thinking channel: the reply is the line
    assert {c.keys.dtype for c in chat.cache.layers if c is not None} == {np.dtype(np.float16)}


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_bad_value_is_one_line(command):
    r = subprocess.run([sys.executable, "-m", "minigemma", command, "--kv-cache-dtype", "bf16"], input="x\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "--kv-cache-dtype" in lines[0] and "'bf16'" in lines[0] and "float16" in lines[0], r.stderr


@pytest.mark.parametrize("bad", ["bf16", "f16", np.int8, "float64"])
def test_python_api_names_a_bad_dtype(bad):
    """"f16" is NumPy's code for float128, so names are read as names; bfloat16 is not offered."""
    with pytest.raises(minigemma.ConfigError, match=r"KV cache dtype: expected one of \['float32', 'float16'\]"):
        minigemma.load().generate(PROMPT, max_new_tokens=2, kv_cache_dtype=bad)
    assert storage_dtype("float16") == np.float16 and storage_dtype(np.float32) == np.float32
