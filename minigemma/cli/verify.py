"""`minigemma trace` and `minigemma compare`: the command line of verifying a port (docs/verify.md).

    minigemma trace [--model DIR] (--prompt TEXT | --ids 2,15,7) --out FILE [--names PATTERN]... [--reference]
                    [--image PATH]... [--max-soft-tokens N] [--audio PATH]...     (media with --prompt)
    minigemma compare A B [--atol 1e-4] [--rtol 1e-4] [--names PATTERN]...

`compare` exits 0 when every activation agrees, 1 at a divergence, 2 on a user error.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .generate import add_image_flags, add_video_flag, audio_file
from ..verify.compare import DEFAULT_ATOL, DEFAULT_RTOL, compare_traces, notes, report
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
    from ..model import check_token_ids, default_model_path, load
    from ..verify.trace_file import save_trace

    path = args.model if args.model is not None else default_model_path()
    model, media = None, {}
    if args.images or args.audio or args.videos:  # the processor's work: marks expanded, pixels and features made
        from ..generate.media_prompt import processor_inputs

        if args.prompt is None:
            flags = "--image / --audio" + (" / --video" if args.videos else "")
            raise InputError(f"{flags}: give the text as --prompt, whose marks are expanded to the media's placeholders")
        model = load(path)
        ids, media = processor_inputs(model, args.prompt, args.images, args.max_soft_tokens, args.audio, args.videos)
        ids = ids.tolist()
    else:
        ids = parse_ids(args.ids) if args.ids is not None else encode_prompt(path, args.prompt)
    check_token_ids(ids, load_model_config(path).text.vocab_size, "--ids" if args.ids is not None else "--prompt")
    if args.reference:
        acts, meta = trace_reference(path, ids, args.names, args.prompt, media)
    else:  # the model loaded for the media above, if any
        acts, meta = trace_minigemma(model or load(path), ids, args.names, args.prompt, media)
    save_trace(args.out, acts, meta)
    size = os.path.getsize(args.out)
    print(f"wrote {len(acts)} activations of {len(ids)} tokens ({size / 2**20:.1f} MiB) to {args.out}", file=sys.stderr)
    return 0


def trace_minigemma(model, ids, names, prompt, media):
    from ..version import __version__
    from ..verify.trace import config_hash
    from ..verify.trace_file import trace_metadata

    acts = model.trace(ids, names, **media)
    return acts, trace_metadata(config_hash(model.config), ids, f"minigemma {__version__}", prompt)


def trace_reference(path: str, ids, names, prompt, media):
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
    acts = reference_trace.capture(reference_trace.load_reference(path), ids, names, **media)
    return acts, trace_metadata(config_hash(config), ids, reference_trace.source(), prompt)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--ids: expected comma-separated integers such as 2,15,7, found {text!r}") from None
    return ids


def encode_prompt(path: str, prompt: str) -> list[int]:
    """Text -> ids with the checkpoint's own tokenizer, <bos> in front as `generate` does."""
    from ..generate.tokenizer import load_tokenizer

    return load_tokenizer(path).encode(prompt, add_special_tokens=True)


def add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two traces and name the first divergent activation",
        description="Compare two trace files (.safetensors or .npz) name by name in forward order. "
        "B is the reference: an element agrees when |a - b| <= atol + rtol * |b|. "
        "Exit status: 0 all agree, 1 a divergence, 2 an error.",
    )
    p.add_argument("a", metavar="A", help="trace to check (e.g. from your port)")
    p.add_argument("b", metavar="B", help="reference trace")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"absolute tolerance (default {DEFAULT_ATOL:g})")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance (default {DEFAULT_RTOL:g})")
    add_names_flag(p)
    p.set_defaults(run=run_compare)


def run_compare(args) -> int:
    from ..verify.trace_file import load_trace

    for flag, value in (("--atol", args.atol), ("--rtol", args.rtol)):
        if not value >= 0:
            raise InputError(f"{flag}: expected a tolerance >= 0, found {value}")
    a, b = load_trace(args.a), load_trace(args.b)
    for note in notes(a, b):
        print(note, file=sys.stderr)
    rows = compare_traces(a, b, args.rtol, args.atol, args.names)
    for line in report(rows, args.rtol, args.atol):
        print(line)
    return 0 if all(r.ok for r in rows) else EXIT_DIVERGED
