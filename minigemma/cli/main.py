"""The `minigemma` command line.

    minigemma info [--model DIR|FILE.gguf]              what a checkpoint contains
    minigemma generate PROMPT [--model DIR|FILE.gguf]   continue a prompt, streaming (cli/generate.py)
    minigemma chat [--model DIR|FILE.gguf]              multi-turn chat, one turn per line of stdin (default: data/tiny-chat)
    minigemma trace ... / compare A B         named activations, and where two traces diverge (cli/verify.py)
    minigemma lessons [N | all]               list the lessons, or run them (cli/lessons.py)
    minigemma quantize SRC OUT.gguf --type T  a checkpoint as a GGUF file, llama.cpp's layout (cli/quantize.py)

Every command takes `--help`, which ends with examples. A user mistake (missing directory, bad flag
value, bad checkpoint) prints one line, `minigemma: error: ...`, and exits with status 2: no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import MinigemmaError
from .common import EXIT_BROKEN_PIPE, EXIT_USER_ERROR
from .generate import add_chat, add_generate
from .info import add_info
from .lessons import add_lessons
from .quantize import add_quantize
from .verify import add_compare, add_trace

# ---------------------------------------------------------------------------------------------- main

COMMANDS = [add_info, add_generate, add_chat, add_trace, add_compare, add_lessons, add_quantize]


# `minigemma COMMAND --help` ends with these (what a newcomer types first)
EXAMPLES = {
    "info": ["minigemma info", "minigemma info --model path/to/gemma-4"],
    "generate": ['minigemma generate "The sliding window" --max-new-tokens 40',
                 'echo "Exceptions are" | minigemma generate --temperature 0',
                 'minigemma generate "Describe this image." --model path/to/gemma-4 --image photo.jpg'],
    "chat": ["minigemma chat", "printf 'Hi!\\nWhat does os.path.join do?\\n' | minigemma chat --temperature 0",
             'minigemma chat --think --system "Answer in one sentence."'],
    "trace": ['minigemma trace --prompt "The sky is" --out ours.safetensors',
              'minigemma trace --prompt "The sky is" --out theirs.safetensors --reference'],
    "compare": ["minigemma compare ours.safetensors theirs.safetensors",
                "minigemma compare ours.npz theirs.npz --atol 1e-3 --names 'layers.0.*'"],
    "lessons": ["minigemma lessons", "minigemma lessons 4 --out figures"],
    "quantize": ["minigemma quantize path/to/gemma-4 gemma-4.Q8_0.gguf --type Q8_0",
                 "minigemma quantize path/to/gemma-4 gemma-4.Q4_K_M.gguf --type Q4_K_M",
                 "minigemma quantize path/to/gemma-3 gemma-3.Q4_0.gguf --type Q4_0"],
}


class OneLineParser(argparse.ArgumentParser):
    """A bad flag (`--temperature abc`) is one line too, not argparse's usage block, with the same
    `minigemma: error:` prefix as every other error."""

    def error(self, message):
        print(f"minigemma: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def add_examples(sub) -> None:
    for name, lines in EXAMPLES.items():
        if name in sub.choices:
            p = sub.choices[name]
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            p.epilog = "examples:\n" + "\n".join("  " + line for line in lines)


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = OneLineParser(prog="minigemma", description="A readable NumPy interpreter of Gemma 4.")
    parser.add_argument("--version", action="version", version=f"minigemma {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    add_examples(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.run(args)
    except MinigemmaError as e:
        print(f"minigemma: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `minigemma lessons | head`: the reader left, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush stays quiet
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
