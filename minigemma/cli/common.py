"""What every command shares: the --model / --mmproj / --kernels flags and the exit codes."""

from __future__ import annotations

import argparse

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program killed by a closed pipe


def add_model_flag(p: argparse.ArgumentParser) -> None:
    """--model (and --mmproj beside a GGUF), and --kernels / --no-kernels: how to run it (`kernels/__init__.py`)."""
    p.add_argument("--model", metavar="PATH",
                   help="checkpoint directory in Hugging Face layout, or a .gguf file as llama.cpp writes it "
                   "(default: the embedded model)")
    p.add_argument("--mmproj", metavar="FILE",
                   help="with a .gguf --model: llama.cpp's companion mmproj file holding its vision / audio towers "
                   "(convert_hf_to_gguf.py --mmproj, or minigemma quantize --mmproj)")
    p.add_argument(
        "--kernels", action=argparse.BooleanOptionalAction, default=None,
        help="Numba kernels for the hot loops, weights kept as stored; --no-kernels: NumPy only "
        "(default: $MINIGEMMA_KERNELS, else kernels)",
    )
