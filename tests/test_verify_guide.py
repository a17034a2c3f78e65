"""docs/verify.md's worked example, and its check against the shipped golden traces, run exactly
as written, in a fresh directory, with `python` and `minigemma` on the PATH as after
`pip install -e '.[test]'`; the output the guide shows is what they print."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "verify.md"


def guide_blocks(section: str) -> list[tuple[str, str]]:
    """The (language, code) blocks of one section of the guide, in order. `console` blocks are
    commands shown but not run here (they need minutes or rewrite shipped files)."""
    body = DOC.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [(lang, code) for lang, code in re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S) if lang != "console"]


def shims(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, command in (("python", f'"{sys.executable}"'), ("minigemma", f'"{sys.executable}" -m minigemma')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize(
    "sections, languages",
    [
        # the bf16 section continues in the worked example's directory (its checkpoint and float32 trace)
        (["Worked example", "Reduced precision (bf16)"], ["bash", "text", "python", "bash", "text", "bash", "python", "bash", "text"]),
        (["Golden traces"], ["bash", "text"]),
    ],
    ids=["worked+bf16", "golden"],
)
def test_guide_runs_as_written(tmp_path, sections, languages):
    shims(tmp_path / "bin")
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # tiny model: one thread is fastest
    outputs = []
    blocks = [block for section in sections for block in guide_blocks(section)]
    assert [lang for lang, _ in blocks] == languages
    for lang, code in blocks:
        if lang == "text":  # output the guide shows: its tail (after any "...") is what the last block printed
            shown = code.strip().splitlines()
            tail = shown[len(shown) - shown[::-1].index("...") :] if "..." in shown else shown
            printed = outputs[-1].strip().splitlines()
            assert [_masked(line) for line in printed[-len(tail) :]] == [_masked(line) for line in tail]
            if tail is not shown:  # abbreviated: its first line too
                assert printed[0] == shown[0]
            continue
        argv = ["bash", "-e", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{lang} block failed:\n{code}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        outputs.append(r.stdout)


def _masked(line: str) -> str:
    """The line with its measured numbers masked: their last digits depend on the CPU's rounding."""
    return re.sub(r"\d\.\d+(e[-+]\d+)?", "#", line)
