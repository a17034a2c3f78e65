"""Golden traces: the reference's named activations on the embedded model for a few fixed
prompts, as small files an implementer compares their port against with no torch and no
minigemma internals (docs/verify.md).

    python -m weights_tools.golden_traces OUT_DIR [--model DIR]

For each prompt, the reference (transformers, forward hooks) is traced and minigemma's own trace
is compared with it at `compare`'s default tolerance: a golden file is only written when the two
agree, so it never freezes a disagreement. Needs the test extra (torch, transformers).
The short prompt keeps every name; the long one, past the sliding window, keeps each layer's
output and the final norm, so that the files stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from minigemma.compare import DEFAULT_ATOL, DEFAULT_RTOL, compare_traces
from minigemma.config import load_config
from minigemma.errors import MinigemmaError
from minigemma.model import check_token_ids, default_model_path, load
from minigemma.trace import config_hash
from minigemma.trace_file import Trace, save_trace, trace_metadata
from weights_tools import reference_trace

LONG_PROMPT_WINDOWS = 1.25  # the long prompt's length, in sliding windows: queries that cannot see the start


@dataclass(frozen=True)
class GoldenPrompt:
    name: str
    every_name: bool  # False: only the residual stream (embed, each layer's out, final_norm)

    def token_ids(self, vocab_size: int, sliding_window: int) -> list[int]:
        """Fixed ids spread over the vocabulary (a deterministic stride, no randomness to seed)."""
        length = SHORT_PROMPT_TOKENS if self.every_name else int(LONG_PROMPT_WINDOWS * sliding_window) + 1
        return [BOS] + [(FIRST_ID + STRIDE * i) % vocab_size for i in range(length - 1)]

    def names(self, n_layers: int) -> list[str] | None:
        return None if self.every_name else ["embed", *(f"layers.{i}.out" for i in range(n_layers)), "final_norm"]


SHORT_PROMPT_TOKENS = 8
BOS, FIRST_ID, STRIDE = 2, 17, 7919  # a prime stride visits ids all over the table
PROMPTS = (GoldenPrompt("short", every_name=True), GoldenPrompt("long", every_name=False))


def golden_traces(model_dir: str, out_dir: str) -> list[str]:
    """Write one golden trace per prompt into `out_dir`; returns the paths written."""
    config = load_config(model_dir)
    ours, ref = load(model_dir), reference_trace.load_reference(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for prompt in PROMPTS:
        ids = prompt.token_ids(config.text.vocab_size, config.text.sliding_window)
        check_token_ids(ids, config.text.vocab_size)
        names = prompt.names(config.text.num_hidden_layers)
        golden = reference_trace.capture(ref, ids, names)
        path = os.path.join(out_dir, f"{prompt.name}.safetensors")
        rows = compare_traces(Trace("minigemma", ours.trace(ids, names)), Trace(path, golden), DEFAULT_RTOL, DEFAULT_ATOL)
        bad = [r.name for r in rows if not r.ok]
        if bad:
            raise SystemExit(f"golden_traces: minigemma and the reference disagree on {prompt.name!r} from {bad[0]} on")
        save_trace(path, golden, trace_metadata(config_hash(config), ids, reference_trace.source()))
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.golden_traces", description=__doc__.split("\n")[0])
    p.add_argument("out", metavar="OUT_DIR", help="directory to write <prompt>.safetensors files into")
    p.add_argument("--model", metavar="DIR", help="checkpoint directory (default: the embedded model)")
    args = p.parse_args(argv)
    try:
        for path in golden_traces(args.model or default_model_path(), args.out):
            print(f"wrote {path} ({os.path.getsize(path) / 2**10:.0f} KiB)")
    except MinigemmaError as e:
        print(f"golden_traces: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
