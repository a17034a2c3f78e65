"""Golden traces: the reference's named activations on the embedded model for two fixed prompts,
small files an implementer compares their port against with no torch and no minigemma internals
(docs/verify.md). The shipped ones are in `minigemma/data/golden_traces/`; after retraining the
embedded model, make them again with

    python -m weights_tools.golden_traces minigemma/data/golden_traces [--model DIR]
    python -m weights_tools.golden_traces minigemma/data/golden_traces --release-like

For each prompt (tokenized by the checkpoint's own tokenizer, `<bos>` first), the reference
(transformers, forward hooks) is traced and minigemma's own trace is compared with it at
`compare`'s default tolerance: a golden file is only written when the two agree, so it never
freezes a disagreement. Needs the test extra (torch, transformers). The short prompt keeps every
name; the long one, longer than the sliding window, keeps the residual stream (`embed`, each
layer's `out`, `final_norm`), so that the files stay small.

`--release-like` writes the golden traces of the released layouts at toy size instead, which
the embedded model does not have: `e2b_like` (4:1 sliding/global, a KV-shared second half,
PLE, double-wide MLP, and the unused k/v tensors E2B ships on shared layers) and `a4b_like`
(26B-A4B: MoE beside the dense MLP, keys = values on global layers). Their checkpoints are
random and not shipped: `python -m weights_tools.random_checkpoint DIR --preset e2b-like
--kv-on-shared` writes the same bytes again (the command is in each file's metadata).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass

from minigemma.verify.compare import DEFAULT_ATOL, DEFAULT_RTOL, compare_traces
from minigemma.text.config import load_config
from minigemma.errors import InputError, MinigemmaError
from minigemma.loading import load
from minigemma.model import default_model_path
from minigemma.verify.trace import config_hash, kv_sources
from minigemma.verify.trace_file import Trace, save_trace, trace_metadata
from minigemma.cli.verify import encode_prompt
from minigemma.verify import reference as reference_trace
from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint


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
        meta = trace_metadata(config_hash(config), ids, reference_trace.source(), prompt.text, kv_sources=kv_sources(config.text))
        save_trace(path, golden, meta)
        written.append(path)
    return written


@dataclass(frozen=True)
class ReleaseLike:
    name: str  # the file: <name>.safetensors
    preset: str  # weights_tools.random_checkpoint's preset
    kv_on_shared: bool  # ship the unused k/v tensors of KV-shared layers, as E2B does
    ids: tuple[int, ...]  # twice the presets' sliding window of 6, so the masks matter
    seed: int = 0

    def command(self) -> str:
        return (f"python -m weights_tools.random_checkpoint DIR --preset {self.preset} --seed {self.seed} --dtype bf16"
                + (" --kv-on-shared" if self.kv_on_shared else ""))


RELEASE_IDS = (2, 17, 101, 5, 120, 33, 7, 64, 90, 9, 88, 3)
RELEASE_LIKE = (ReleaseLike("e2b_like", "e2b-like", True, RELEASE_IDS), ReleaseLike("a4b_like", "a4b-like", False, RELEASE_IDS))


def release_like_traces(out_dir: str) -> list[str]:
    """Write the golden trace of every release-like layout (every name) into `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for golden in RELEASE_LIKE:
        with tempfile.TemporaryDirectory() as model_dir:
            write_random_checkpoint(model_dir, PRESETS[golden.preset], "BF16", golden.seed, golden.kv_on_shared, random_scalars=True)
            config, ours, ref = load_config(model_dir), load(model_dir), reference_trace.load_reference(model_dir)
            path = os.path.join(out_dir, f"{golden.name}.safetensors")
            trace = reference_trace.capture(ref, list(golden.ids))
            rows = compare_traces(Trace("minigemma", ours.trace(list(golden.ids))), Trace(path, trace))
            bad = [r.name for r in rows if not r.ok]
            if bad:
                raise SystemExit(f"golden_traces: minigemma and the reference disagree on {golden.name!r} from {bad[0]} on")
            if reference_trace.kv_sources(ref) != kv_sources(config.text):
                raise SystemExit(f"golden_traces: minigemma and the reference disagree on {golden.name!r}'s KV-sharing sources")
            meta = trace_metadata(config_hash(config), golden.ids, reference_trace.source(), kv_sources=kv_sources(config.text))
            save_trace(path, trace, dict(meta, checkpoint=golden.command()))
            written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.golden_traces", description=__doc__.split("\n")[0])
    p.add_argument("out", metavar="OUT_DIR", help="directory to write <prompt>.safetensors files into")
    p.add_argument("--model", metavar="DIR", help="checkpoint directory with its tokenizer (default: the embedded model)")
    p.add_argument("--release-like", action="store_true", help="the release-like layouts' traces (random checkpoints) instead")
    args = p.parse_args(argv)
    try:
        paths = release_like_traces(args.out) if args.release_like else golden_traces(args.model or default_model_path(), args.out)
        for path in paths:
            print(f"wrote {path} ({os.path.getsize(path) / 2**10:.0f} KiB)")
    except MinigemmaError as e:
        print(f"golden_traces: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
