"""Golden traces: the reference's named activations on the embedded model for two fixed prompts,
small files an implementer compares their port against with no torch and no minigemma internals
(docs/verify.md). The shipped ones are in `minigemma/data/golden_traces/`; after retraining the
embedded model, make them again with

    python -m weights_tools.golden_traces minigemma/data/golden_traces [--model DIR]

For each prompt (tokenized by the checkpoint's own tokenizer, `<bos>` first), the reference
(transformers, forward hooks) is traced and minigemma's own trace is compared with it at
`compare`'s default tolerance: a golden file is only written when the two agree, so it never
freezes a disagreement. Needs the test extra (torch, transformers). The short prompt keeps every
name; the long one, longer than the sliding window, keeps the residual stream (`embed`, each
layer's `out`, `final_norm`), so that the files stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from minigemma.verify.compare import DEFAULT_ATOL, DEFAULT_RTOL, compare_traces
from minigemma.text.config import load_config
from minigemma.errors import InputError, MinigemmaError
from minigemma.model import default_model_path, load
from minigemma.verify.trace import config_hash
from minigemma.verify.trace_file import Trace, save_trace, trace_metadata
from minigemma.cli.verify import encode_prompt
from minigemma.verify import reference as reference_trace


@dataclass(frozen=True)
class GoldenPrompt:
    name: str
    text: str
    every_name: bool  # False: only the residual stream, and the prompt must outrun the sliding window

    def names(self, n_layers: int) -> list[str] | None:
        return None if self.every_name else ["embed", *(f"layers.{i}.out" for i in range(n_layers)), "final_norm"]


PROMPTS = (
    GoldenPrompt("short", "Exceptions are", every_name=True),
    GoldenPrompt(
        "long",
        "When a function is called, its arguments are bound to the names of its parameters, and the body "
        "runs in a new local namespace. A return statement ends the call and hands a value back to the "
        "caller; a function that reaches the end of its body returns None. Default values are evaluated "
        "once, when the function is defined, so a mutable default is shared between calls.",
        every_name=False,
    ),
)


def golden_traces(model_dir: str, out_dir: str) -> list[str]:
    """Write one golden trace per prompt into `out_dir`; returns the paths written."""
    config = load_config(model_dir)
    ours, ref = load(model_dir), reference_trace.load_reference(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for prompt in PROMPTS:
        ids = encode_prompt(model_dir, prompt.text)
        if not prompt.every_name and len(ids) <= config.text.sliding_window:
            raise InputError(f"golden prompt {prompt.name!r}: {len(ids)} tokens, not past the sliding window of {config.text.sliding_window}")
        names = prompt.names(config.text.num_hidden_layers)
        golden = reference_trace.capture(ref, ids, names)
        path = os.path.join(out_dir, f"{prompt.name}.safetensors")
        rows = compare_traces(Trace("minigemma", ours.trace(ids, names)), Trace(path, golden), DEFAULT_RTOL, DEFAULT_ATOL)
        bad = [r.name for r in rows if not r.ok]
        if bad:
            raise SystemExit(f"golden_traces: minigemma and the reference disagree on {prompt.name!r} from {bad[0]} on")
        save_trace(path, golden, trace_metadata(config_hash(config), ids, reference_trace.source(), prompt.text))
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.golden_traces", description=__doc__.split("\n")[0])
    p.add_argument("out", metavar="OUT_DIR", help="directory to write <prompt>.safetensors files into")
    p.add_argument("--model", metavar="DIR", help="checkpoint directory with its tokenizer (default: the embedded model)")
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
