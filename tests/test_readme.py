"""Every line of the README a newcomer can run without downloading anything runs, as written.

The README's fenced `python` and `bash` blocks are extracted in order. A block that needs what a
fresh machine does not have (a Gemma 4 checkpoint, an image, a long training run) says so on the
line before it, in a comment the rendered page hides:

    <!-- not run by tests/test_readme.py: needs a Gemma 4 checkpoint -->

Every other block runs: a Python block as one script, a bash block line by line (a command
continued with `\\` is one line), each in a fresh temporary directory (so nothing lands in the
repository) with this minigemma importable and `minigemma` the command of this checkout. In bash
lines, `pip install ... &&` is dropped (the test environment is installed already) and the suite's
own `python -m pytest` is not run again; a bare `pip install` line is set-up, skipped likewise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SKIP = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->")
FENCE = re.compile(r"^```(\w*)\s*$")
SETUP = re.compile(r"^pip install [^&]*&&\s*")
TIMEOUT = 600


def blocks(path: str = README) -> list[dict]:
    """Fenced blocks: language, code, first line number, and the reason it is skipped (or None)."""
    out, lines, i = [], open(path, encoding="utf-8").read().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(before)
        indent = len(lines[start]) - len(lines[start].lstrip())
        out.append({"lang": m[1], "code": "\n".join(line[indent:] for line in body), "line": start + 1,
                    "skip": skip[1] if skip else None})
        i += 1
    return out


def commands(code: str) -> list[str]:
    """A bash block's commands to run: continuations joined, set-up and the suite itself dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = SETUP.sub("", line.strip())
        if not line or line.startswith(("#", "pip install", "python -m pytest")):
            continue
        out.append(line)
    return out


def runnable() -> list[tuple[str, str, str]]:
    """(id, language, code) of everything the test runs."""
    out = []
    for b in blocks():
        if b["skip"] is not None:
            continue
        if b["lang"] == "python":
            out.append((f"line {b['line']}: python", "python", b["code"]))
        elif b["lang"] == "bash":
            out += [(f"line {b['line']}: {c}", "bash", c) for c in commands(b["code"])]
    return out


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize("what,lang,code", runnable(), ids=[r[0][:80] for r in runnable()])
def test_readme_line_runs_as_written(what, lang, code, tmp_path):
    if lang == "python":
        argv = [sys.executable, "-c", code]
    else:  # `minigemma` is this checkout's command, whatever is installed
        argv = ["bash", "-c", f'set -eo pipefail; minigemma() {{ "{sys.executable}" -m minigemma "$@"; }}\n{code}']
    r = subprocess.run(argv, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"README {what}\n--- stdout\n{r.stdout[-2000:]}\n--- stderr\n{r.stderr[-2000:]}"


def test_skipped_blocks_say_why_and_runnable_ones_need_no_download():
    found = blocks()
    assert sum(b["lang"] == "python" for b in found) >= 6 and sum(b["lang"] == "bash" for b in found) >= 8
    for b in found:
        if b["skip"] is None and b["lang"] in ("python", "bash"):
            code = "\n".join(line.split("#")[0] for line in b["code"].splitlines())  # comments may name one
            assert "path/to/" not in code, f"README line {b['line']}: runs in the test but needs a download"
    assert len(runnable()) >= 9
