"""`minigemma quantize SRC OUT.gguf --type Q4_K_M`: a Hugging Face checkpoint as one GGUF file.

The file is laid out as llama.cpp's own converter lays it out (`weights/gguf_write.py`), so
llama.cpp, transformers' GGUF loader and minigemma all read it. Needs the `gguf` extra.
"""

from __future__ import annotations

import os
import time
from collections import Counter


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
    p.set_defaults(run=run_quantize)


def run_quantize(args) -> int:
    from ..text.config import load_config
    from ..weights.gguf_write import write_gguf

    start = time.perf_counter()
    plan = write_gguf(args.source, args.out, load_config(args.source).text, args.type)
    kinds = Counter(t.qtype.name for t in plan)
    summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(plan)} tensors ({summary}), {size / 2**20:.1f} MiB in {time.perf_counter() - start:.1f} s")
    return 0
