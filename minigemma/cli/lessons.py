"""`minigemma lessons`: list the lessons, or run one (or all) of them.

    minigemma lessons                   the lessons, one line each
    minigemma lessons 3 [--out DIR]     run lesson 3; its figures go to DIR (default: lessons-out)
    minigemma lessons all [--out DIR]   run every lesson in turn, then a table of times and figures

The lessons are percent-format scripts (`# %%` cells) in `lessons/` at the top of the source
tree. An installed minigemma carries them as `minigemma/lessons/` (pyproject.toml maps the one
onto the other), so this command finds them either way. Each lesson runs in a Python process of
its own, exactly as `python lessons/03_rope.py` would, with this minigemma importable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError

LESSON_FILE = re.compile(r"(\d+)_\w+\.py")
TITLE = re.compile(r"^# # Lesson \d+: (.+)$")
SUMMARY = re.compile(r"^# \*(.+)\*$")
OUT_ENV = "MINIGEMMA_LESSONS_OUT"  # read by lessons/lesson_support.py
DEFAULT_OUT = "lessons-out"


@dataclass(frozen=True)
class Lesson:
    number: int
    path: Path
    title: str
    summary: str


def lessons_dir() -> Path:
    """`minigemma/lessons` when installed, `lessons/` beside the package in a source tree."""
    package = Path(__file__).resolve().parent.parent  # minigemma/, above cli/
    for candidate in (package / "lessons", package.parent / "lessons"):
        if any(LESSON_FILE.fullmatch(p.name) for p in candidate.glob("*.py")):
            return candidate
    raise ConfigError(f"{package}: no lessons found (looked in {package / 'lessons'} and {package.parent / 'lessons'})")


def find_lessons() -> list[Lesson]:
    found = []
    for path in lessons_dir().glob("*.py"):
        if match := LESSON_FILE.fullmatch(path.name):
            found.append(Lesson(int(match[1]), path, *read_header(path)))
    return sorted(found, key=lambda lesson: lesson.number)


def read_header(path: Path) -> tuple[str, str]:
    """(title, one-line summary) from the lesson's first markdown cell:
    `# # Lesson 3: <title>`, then a line `# *<summary>*`."""
    title = summary = None
    for line in path.read_text(encoding="utf-8").splitlines()[:12]:
        title = title or (m[1] if (m := TITLE.match(line)) else None)
        summary = summary or (m[1] if (m := SUMMARY.match(line)) else None)
    if title is None or summary is None:
        raise ConfigError(f"{path}: expected a first markdown cell with '# # Lesson N: title' and a '# *summary*' line")
    return title, summary


def add_lessons(sub) -> None:
    p = sub.add_parser(
        "lessons",
        help="list the lessons, or run one",
        description="Step through Gemma 4 one feature at a time. Without LESSON: list the lessons. "
        "With a number: run that lesson (it prints numbers and saves its figures as PNG files); "
        "'all': run every lesson in turn.",
    )
    p.add_argument("lesson", nargs="?", metavar="LESSON", help="a lesson number, or 'all'")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"where the figures go (default: {DEFAULT_OUT})")
    p.set_defaults(run=run_lessons)


def run_lessons(args) -> int:
    lessons = find_lessons()
    if args.lesson is None:
        for lesson in lessons:
            print(f"{lesson.number:3d}  {lesson.title}")
            print(f"     {lesson.summary}")
        print(f"\nrun one with `minigemma lessons N`; they live in {lessons_dir()}")
        return 0
    if args.lesson == "all":
        chosen = lessons
    else:
        chosen = [lesson for lesson in lessons if args.lesson.isdigit() and lesson.number == int(args.lesson)]
        if not chosen:
            numbers = ", ".join(str(lesson.number) for lesson in lessons)
            raise InputError(f"lesson: expected one of {numbers} or 'all', found {args.lesson!r}")
    results = [(lesson, *run_lesson(lesson, args.out)) for lesson in chosen]
    if len(chosen) > 1:
        print("\nlesson  seconds  status  figures")
        for lesson, status, seconds in results:
            figures = sorted(p.name for p in Path(args.out).glob(f"{lesson.number:02d}_*.png"))
            print(f"{lesson.number:6d}  {seconds:7.1f}  {'ok' if status == 0 else 'FAILED':6}  {', '.join(figures)}")
    return next((1 for _, status, _ in results if status != 0), 0)


def run_lesson(lesson: Lesson, out: str) -> tuple[int, float]:
    """Run one lesson as a script; (exit status, seconds)."""
    print(f"=== lesson {lesson.number}: {lesson.title} ({lesson.path.name})", flush=True)
    env = dict(os.environ)
    env[OUT_ENV] = str(Path(out).resolve())
    root = str(Path(__file__).resolve().parent.parent.parent)  # so the lesson imports this very minigemma
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    status = subprocess.run([sys.executable, str(lesson.path)], env=env).returncode
    return status, time.perf_counter() - start
