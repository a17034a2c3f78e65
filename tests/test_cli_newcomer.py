"""The command line as a newcomer meets it: `info` says what is inside, generation says when the
context stops it, an empty prompt and a prompt awaited at a terminal are spoken of, every error
has the one `minigemma: error:` prefix, every `--help` ends with examples, and the CLI and Python
share their defaults."""

from __future__ import annotations

import inspect
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest

import minigemma
from minigemma.cli.info import parameter_parts
from minigemma.cli.main import EXAMPLES, build_parser
from minigemma.errors import plural
from minigemma.model import default_model_path
from minigemma.weights.checkpoint import Checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT_CONTEXT = 24


def run(*args, stdin="", **kw):
    return subprocess.run([sys.executable, "-m", "minigemma", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=300, **kw)


@pytest.fixture(scope="module")
def short_context(tmp_path_factory) -> str:
    """The embedded model with a 24-token context: its files linked, config.json rewritten."""
    d = tmp_path_factory.mktemp("short_context")
    src = default_model_path()
    for name in os.listdir(src):
        if name != "config.json":
            os.symlink(os.path.join(src, name), d / name)
    config = json.loads(open(os.path.join(src, "config.json")).read())
    (d / "config.json").write_text(json.dumps({**config, "max_position_embeddings": SHORT_CONTEXT}))
    return str(d)


def new_tokens(stderr: str) -> int:
    return int(next(line for line in stderr.splitlines() if "new tokens" in line).split("; ")[1].split()[0])


# --------------------------------------------------------------------------------------------- info


def test_info_names_towers_context_chat_template_and_parameters():
    r = run("info")
    assert r.returncode == 0, r.stderr
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines()}
    assert lines["vision"].endswith("none") and lines["audio"].endswith("none")
    assert "4,096 tokens" in lines["context"]
    assert "chat template present" in lines["chat"]
    assert "resident" in lines["memory"] and "memory-mapped" in lines["memory"]
    ckpt = Checkpoint(default_model_path())
    stored = sum(int(np.prod(ckpt.refs[n].shape)) for n in ckpt.names())  # the tied head is stored once
    parts = parameter_parts(minigemma.load())
    assert sum(n for name, n in parts.items() if not name.startswith("of which")) == stored
    assert lines["parameters"].startswith(f"parameters:  {stored / 1e6:.2f}M in all: embedding ")


def test_info_without_a_chat_template_says_so(tmp_path):
    src = default_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.model"):
        os.symlink(os.path.join(src, name), tmp_path / name)
    settings = json.loads(open(os.path.join(src, "tokenizer_config.json")).read())
    settings.pop("chat_template")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    r = run("info", "--model", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "chat:        no chat template" in r.stdout


# ------------------------------------------------------------------------------------- the context


def test_max_new_tokens_past_the_context_is_clamped_and_the_stop_is_said(short_context):
    prompt = "The Python"
    prompt_tokens = len(minigemma.load(short_context).tokenizer.encode(prompt, add_special_tokens=True))
    room = SHORT_CONTEXT - prompt_tokens + 1  # the last sampled token is never fed
    r = run("generate", prompt, "--model", short_context, "--max-new-tokens", "1000", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    notices = [line for line in r.stderr.splitlines() if "-token context" in line or "context of" in line]
    assert notices == [
        f"minigemma: --max-new-tokens 1000: the {prompt_tokens}-token prompt leaves room for {room} in the model's "
        f"{SHORT_CONTEXT}-token context; generating at most {room}",
        f"minigemma: stopped: the model's context of {SHORT_CONTEXT} tokens is full",
    ], r.stderr
    assert new_tokens(r.stderr) == room
    quiet = run("generate", prompt, "--model", short_context, "--max-new-tokens", "3", "--temperature", "0")
    assert quiet.returncode == 0 and "context of" not in quiet.stderr and "room for" not in quiet.stderr


def test_chat_says_when_a_turn_fills_the_context(short_context):
    r = run("chat", "--model", short_context, "--temperature", "0", stdin="Hi\n")
    assert r.returncode == 0, r.stderr
    assert f"minigemma: stopped: the model's context of {SHORT_CONTEXT} tokens is full" in r.stderr.splitlines()


# ---------------------------------------------------------------------------------- the prompt


@pytest.mark.parametrize("how", ["argument", "stdin"])
def test_generate_refuses_an_empty_prompt(how):
    r = run("generate", "") if how == "argument" else run("generate", stdin="  \n")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("minigemma: error: prompt: empty; give the text to continue") and r.stderr.count("\n") == 1


def test_a_prompt_awaited_at_a_terminal_says_so():
    main, secondary = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "minigemma", "generate", "--max-new-tokens", "2", "--temperature", "0"],
                             stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        os.write(main, b"The Python\n\x04")  # a line, then Ctrl-D: the end of a terminal's input
        out, err = p.communicate(timeout=300)
    finally:
        os.close(main)
        os.close(secondary)
    assert p.returncode == 0, err
    assert err.splitlines()[0] == ('minigemma: reading the prompt from stdin; end it with Ctrl-D '
                                   '(or give it as an argument: minigemma generate "...")')
    piped = run("generate", "--max-new-tokens", "2", "--temperature", "0", stdin="The Python\n")
    assert "reading the prompt" not in piped.stderr and piped.stdout == out  # piped: no hint, same text


# ------------------------------------------------------------------------------ errors and help


@pytest.mark.parametrize("argv", [
    ["generate", "x", "--temperature", "abc"],  # argparse's own errors
    ["chat", "--bogus"],
    ["info", "--model", "/nonexistent/dir"],  # ours
    ["compare", "/nope1.safetensors", "/nope2.safetensors"],
])
def test_every_error_has_one_prefix(argv):
    r = run(*argv)
    assert r.returncode == 2 and r.stderr.startswith("minigemma: error: ") and r.stderr.count("\n") == 1, r.stderr


def test_compare_on_a_missing_file_says_no_such_file(tmp_path):
    r = run("compare", str(tmp_path / "nope1"), str(tmp_path / "nope2"))
    assert r.stderr == f"minigemma: error: {tmp_path / 'nope1'}: no such file\n"


def test_plurals():
    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert plural(1, "audio clip") == "1 audio clip" and plural(3, "KV head") == "3 KV heads"


def test_every_command_help_ends_with_examples():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(EXAMPLES) == set(commands)
    for command in commands:
        r = run(command, "--help")
        assert r.returncode == 0
        examples = r.stdout.split("examples:\n")[1].splitlines()
        assert examples and all(line.startswith(f"  minigemma {command}") or f"| minigemma {command}" in line
                                for line in examples), r.stdout


def test_cli_and_python_share_the_max_new_tokens_default():
    args = build_parser().parse_args(["generate", "x"])
    for fn in (minigemma.Model.generate, minigemma.Model.stream):
        assert inspect.signature(fn).parameters["max_new_tokens"].default == args.max_new_tokens
    assert build_parser().parse_args(["chat"]).max_new_tokens == args.max_new_tokens


def test_the_cache_directory_and_its_overrides(monkeypatch, tmp_path):
    from minigemma.weights.cache_dir import CACHE_ENV, cache_dir

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("gguf") == str(tmp_path / ".cache" / "minigemma" / "gguf")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == str(tmp_path / "xdg" / "minigemma")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir("gguf", "x") == str(tmp_path / "mine" / "gguf" / "x")
