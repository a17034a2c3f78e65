"""`minigemma trace` and `minigemma compare`: the command line of verifying a port (docs/verify.md).

    minigemma trace [--model DIR|FILE.gguf] (--prompt TEXT | --ids 2,15,7) --out FILE [--names PATTERN]... [--reference]
                    [--image PATH]... [--max-soft-tokens N] [--audio PATH]...     (media with --prompt)
                    [--dtype float32|bfloat16]                                     (with --reference)
    minigemma trace --engine llama.cpp --model FILE.gguf --ids 2,15,7 --out FILE [--llama-dump PATH]
    minigemma compare A B [--atol 1e-4] [--rtol 1e-4] [--names PATTERN]... [--exclude PATTERN]... [--common]
                          [--spread-from F32_TRACE [--spread-factor 4]]

`compare` exits 0 when every activation agrees, 1 at a divergence, 2 on a user error.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .generate import add_image_flags, add_video_flag, audio_file
from ..verify.compare import (
    DEFAULT_ATOL, DEFAULT_RTOL, DEFAULT_SPREAD_FACTOR, UNIT_ROUNDOFF, compare_traces, kv_note, notes, report,
    selected, skipped_note, spread_report, spread_rows,
)  # fmt: skip
from ..errors import InputError

EXIT_DIVERGED = 1


def add_names_flag(p) -> None:
    p.add_argument(
        "--names", action="append", metavar="PATTERN", help="glob pattern selecting activations, e.g. 'layers.3.*' (repeatable)"
    )


def add_trace(sub) -> None:
    from .common import add_model_flag

    p = sub.add_parser(
        "trace",
        help="write every named activation of one forward pass to a file",
        description="Run one forward pass and write its named activations (docs/verify.md) to a "
        ".safetensors or .npz file, with metadata: model config hash, token ids, dtype, version.",
    )
    add_model_flag(p)
    inputs = p.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--prompt", metavar="TEXT", help="text to tokenize with the checkpoint's tokenizer")
    inputs.add_argument("--ids", metavar="IDS", help="comma-separated token ids, e.g. 2,15,7")
    p.add_argument("--out", required=True, metavar="FILE", help="output trace: FILE.safetensors or FILE.npz")
    add_names_flag(p)
    p.add_argument(
        "--reference",
        action="store_true",
        help="trace the PyTorch reference (transformers) with forward hooks instead of minigemma; needs the test extra",
    )
    p.add_argument("--engine", choices=("minigemma", "llama.cpp"), default="minigemma",
                   help="llama.cpp: run llama.cpp on --model FILE.gguf (with --ids) and write its tensors under "
                        "minigemma's names (docs/verify.md)")
    p.add_argument("--llama-dump", metavar="PATH",
                   help="with --engine llama.cpp: the llama_dump binary (default: $MINIGEMMA_LLAMA_DUMP)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="with --reference: the dtype it computes in; bfloat16 runs it as real checkpoints run, the "
                        "reduced-precision reference that compare --spread-from judges a bf16 port against (default float32)")
    add_image_flags(p, "an image for --prompt (repeatable), placed at each <|image|> of it, else in front; "
                       "the trace gains the vision tower's steps")
    p.add_argument("--audio", action="append", type=audio_file, metavar="PATH",
                   help="a WAV clip for --prompt (repeatable), at its <|audio|> marks, else in front; "
                        "the trace gains the audio tower's steps")
    add_video_flag(p, "a video for --prompt (repeatable), at its <|video|> marks, else in front; its frames' steps "
                      "are traced under video.")
    p.set_defaults(run=run_trace)


def run_trace(args) -> int:
    from ..unified.config import load_model_config
    from ..loading import is_gguf, load
    from ..model import check_token_ids, default_model_path
    from ..verify.trace_file import save_trace

    if args.engine == "llama.cpp":
        return run_trace_llama_cpp(args)
    path = args.model if args.model is not None else default_model_path()
    model, media = None, {}
    if is_gguf(path):  # config and tokenizer live inside the file: load it once, here
        if args.reference:
            raise InputError(f"--reference: {path} is a GGUF file; the reference reads a Hugging Face checkpoint directory")
        model = load(path, mmproj=args.mmproj)
    elif args.mmproj is not None:
        raise InputError(f"--mmproj: goes with a .gguf --model; {path} is a checkpoint directory, whose towers are in it")
    if args.images or args.audio or args.videos:  # the processor's work: marks expanded, pixels and features made
        from ..generate.media_prompt import processor_inputs

        if args.prompt is None:
            flags = "--image / --audio" + (" / --video" if args.videos else "")
            raise InputError(f"{flags}: give the text as --prompt, whose marks are expanded to the media's placeholders")
        model = model or load(path)
        ids, media = processor_inputs(model, args.prompt, args.images, args.max_soft_tokens, args.audio, args.videos)
        ids = ids.tolist()
    else:
        ids = parse_ids(args.ids) if args.ids is not None else encode_prompt(model or path, args.prompt)
    vocab = (model.config if model is not None else load_model_config(path)).text.vocab_size
    check_token_ids(ids, vocab, "--ids" if args.ids is not None else "--prompt")
    if args.dtype != "float32" and not args.reference:
        raise InputError(f"--dtype {args.dtype}: minigemma computes in float32; the flag is for --reference")
    if args.reference:
        acts, meta = trace_reference(path, ids, args.names, args.prompt, media, args.dtype)
    else:  # the model loaded for the media above, if any
        acts, meta = trace_minigemma(model or load(path), ids, args.names, args.prompt, media)
    save_trace(args.out, acts, meta)
    size = os.path.getsize(args.out)
    print(f"wrote {len(acts)} activations of {len(ids)} tokens ({size / 2**20:.1f} MiB) to {args.out}", file=sys.stderr)
    return 0


def run_trace_llama_cpp(args) -> int:
    from ..verify import llama_cpp
    from ..verify.trace import select
    from ..verify.trace_file import save_trace, trace_metadata

    if args.reference or args.images or args.audio or args.ids is None or args.model is None:
        raise InputError("--engine llama.cpp: give --model FILE.gguf and --ids (no --reference, --prompt, --image or --audio)")
    ids = parse_ids(args.ids)
    acts = llama_cpp.capture(llama_cpp.find_binary(args.llama_dump), args.model, ids)
    acts = {n: acts[n] for n in select(acts, args.names)}
    save_trace(args.out, acts, trace_metadata(None, ids, "llama.cpp (weights_tools/llama_dump)"))
    print(f"wrote {len(acts)} activations of {len(ids)} tokens to {args.out}", file=sys.stderr)
    return 0


def trace_minigemma(model, ids, names, prompt, media):
    from ..version import __version__
    from ..verify.trace import config_hash, kv_sources
    from ..verify.trace_file import trace_metadata

    acts = model.trace(ids, names, **media)
    meta = trace_metadata(config_hash(model.config), ids, f"minigemma {__version__}", prompt, kv_sources=kv_sources(model.config.text))
    return acts, meta


def trace_reference(path: str, ids, names, prompt, media, dtype: str = "float32"):
    from ..unified.config import load_model_config
    from ..text.multimodal import token_types
    from ..verify.trace import config_hash
    from ..verify.trace_file import trace_metadata

    try:
        from ..verify import reference as reference_trace
    except ImportError as e:
        raise InputError(f"--reference: needs torch and transformers, the test extra: pip install 'minigemma[test]' ({e})") from None
    config = load_model_config(path)
    if media:  # the reference's image attention reads the processor's token types
        media = dict(media, mm_token_type_ids=token_types(np.array(ids), config.tokens))
    model = reference_trace.load_reference(path, dtype)
    acts = reference_trace.capture(model, ids, names, **media)
    sources = reference_trace.kv_sources(model)
    return acts, trace_metadata(config_hash(config), ids, reference_trace.source(), prompt, dtype, sources)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--ids: expected comma-separated integers such as 2,15,7, found {text!r}") from None
    return ids


def encode_prompt(source, prompt: str) -> list[int]:
    """Text -> ids with the checkpoint's own tokenizer, <bos> in front as `generate` does.
    `source`: a checkpoint directory, or a loaded model (a GGUF's tokenizer is in the file)."""
    from ..generate.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(source) if isinstance(source, str) else source.tokenizer
    return tokenizer.encode(prompt, add_special_tokens=True)


def add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two traces and name the first divergent activation",
        description="Compare two trace files (.safetensors or .npz) name by name in forward order. "
        "B is the reference: an element agrees when |a - b| <= atol + rtol * |b| (integers: when equal). "
        "Patterns are globs over dot-separated names: * stays within a segment, ** crosses dots, and a "
        "pattern matching a name's first segments selects it (layers.3 is every step of layer 3). "
        "Exit status: 0 all agree, 1 a divergence, 2 an error.",
    )
    p.add_argument("a", metavar="A", help="trace to check (e.g. from your port)")
    p.add_argument("b", metavar="B", help="reference trace")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"absolute tolerance (default {DEFAULT_ATOL:g})")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance (default {DEFAULT_RTOL:g})")
    add_names_flag(p)
    p.add_argument("--exclude", action="append", metavar="PATTERN", help="leave out the activations matching PATTERN (repeatable)")
    p.add_argument("--common", action="store_true",
                   help="compare only the names both files have (says how many it skipped on each side)")
    p.add_argument("--spread-from", metavar="F32_TRACE",
                   help="for a reduced-precision port: B is the reference at that precision (trace --reference --dtype "
                        "bfloat16) and F32_TRACE the float32 reference; each step may differ from B by --spread-factor "
                        "times B's own distance from F32_TRACE")
    p.add_argument("--spread-factor", type=float, default=DEFAULT_SPREAD_FACTOR, metavar="X",
                   help="with --spread-from: how many times the reference's own spread a step may differ "
                        f"(default {DEFAULT_SPREAD_FACTOR:g})")
    p.set_defaults(run=run_compare)


def run_compare(args) -> int:
    from ..verify.trace_file import load_trace

    for flag, value in (("--atol", args.atol), ("--rtol", args.rtol), ("--spread-factor", args.spread_factor)):
        if not value >= 0:
            raise InputError(f"{flag}: expected a tolerance >= 0, found {value}")
    a, b = load_trace(args.a), load_trace(args.b)
    for note in notes(a, b):
        print(note, file=sys.stderr)
    rows = compare_traces(a, b, args.rtol, args.atol, args.names, args.exclude, args.common)
    if args.common:
        _, only_a, only_b = selected(a, b, args.names, args.exclude)
        print(skipped_note(a, b, only_a, only_b), file=sys.stderr)
    if args.spread_from is not None:
        return run_spread(a, b, load_trace(args.spread_from), [r.name for r in rows], args.spread_factor)
    first = next((r.name for r in rows if not r.ok), "")
    for line in report(rows, args.rtol, args.atol, kv_note(first, a, b)):
        print(line)
    return 0 if all(r.ok for r in rows) else EXIT_DIVERGED


def run_spread(a, b, f32, names, factor: float) -> int:
    """The reduced-precision verdict: names are those `compare` chose; F32 must have them all."""
    missing = [n for n in names if n not in f32.activations]
    if missing:
        raise InputError(f"--spread-from {f32.path}: missing {len(missing)} activation(s) that both traces have: {missing[0]}, …")
    dtype = b.metadata.get("dtype", "bfloat16")
    if dtype not in UNIT_ROUNDOFF or dtype == "float32":
        raise InputError(f"--spread-from: B ({b.path}) should be the reference at the port's precision "
                         f"(trace --reference --dtype bfloat16), found dtype {dtype!r}")
    rows = spread_rows(a, b, f32, names, factor, UNIT_ROUNDOFF[dtype])
    first = next((r.name for r in rows if not r.ok), "")
    for line in spread_report(rows, factor, dtype, kv_note(first, a, b)):
        print(line)
    return 0 if all(r.ok for r in rows) else EXIT_DIVERGED
