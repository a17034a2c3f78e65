"""`minigemma quantize SRC OUT.gguf --type Q4_K_M`: a Hugging Face checkpoint as one GGUF file.

The file is laid out as llama.cpp's own converter lays it out (`weights/gguf_write.py`), so
llama.cpp, transformers' GGUF loader and minigemma all read it; `--mmproj MMPROJ.gguf` also writes
the towers as llama.cpp's companion file (`weights/gguf_write_mmproj.py`). Needs the `gguf` extra.
"""

from __future__ import annotations

import os
import time
from collections import Counter

MMPROJ_FALLBACK = "F16"  # the mmproj type under a 4- or 5-bit --type (the converter writes no such mmproj)


def add_quantize(sub) -> None:
    from ..weights.gguf_write import TYPES

    p = sub.add_parser(
        "quantize", help="write a checkpoint as a GGUF file (llama.cpp's layout)",
        description="Write a Gemma 4 (text) or Gemma 3 checkpoint directory as a GGUF file, its matrices "
        "quantized to --type, laid out as llama.cpp's converter writes it.",
    )
    p.add_argument("source", metavar="SRC", help="checkpoint directory in Hugging Face layout (config.json, *.safetensors, tokenizer)")
    p.add_argument("out", metavar="OUT.gguf", help="the GGUF file to write")
    p.add_argument("--type", default="Q8_0", choices=TYPES, metavar="TYPE",
                   help="storage type of the weight matrices: F32, F16, BF16, Q8_0 (as llama.cpp's converter); "
                   "Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (every matrix in that type, as llama-quantize --pure); "
                   "Q4_K_M, Q5_K_M (llama-quantize's mixes: Q6_K where it counts). Vectors, norms and the MoE "
                   "router stay F32 (default: Q8_0)")
    p.add_argument("--mmproj", metavar="MMPROJ.gguf",
                   help="also write the vision / audio towers of a Gemma4ForConditionalGeneration as llama.cpp's companion "
                   "mmproj file (convert_hf_to_gguf.py --mmproj), in --type when the converter writes it (F32, F16, BF16, "
                   "Q8_0), else F16")
    p.set_defaults(run=run_quantize)


def run_quantize(args) -> int:
    from ..text.config import load_config
    from ..weights.gguf_write import write_gguf
    from ..weights.gguf_write_types import CONVERTER_TYPES

    start = time.perf_counter()
    report(args.out, write_gguf(args.source, args.out, load_config(args.source).text, args.type), start)
    if args.mmproj is not None:
        from ..weights.gguf_write_mmproj import write_mmproj

        start = time.perf_counter()
        kind = args.type if args.type in CONVERTER_TYPES else MMPROJ_FALLBACK
        report(args.mmproj, write_mmproj(args.source, args.mmproj, kind), start)
    return 0


def report(out: str, plan: list, start: float) -> None:
    kinds = Counter(t.qtype.name for t in plan)
    summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    size = os.path.getsize(out)
    print(f"wrote {out}: {len(plan)} tensors ({summary}), {size / 2**20:.1f} MiB in {time.perf_counter() - start:.1f} s")
