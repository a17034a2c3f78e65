"""An E2B-sized checkpoint on an ordinary machine: load time, peak RSS, decode speed.

    python -m weights_tools.random_checkpoint /tmp/e2b --preset e2b     # 9.3 GB of bf16, NumPy only
    python -m benchmarks.e2b /tmp/e2b --prompt 64 --new 32 --threads 2

Run it twice: the first run reads the file from disk, the second finds it in the page cache
(the "warm" load the target is about). Prints one JSON line and a summary: load seconds, peak
RSS next to the checkpoint's bf16 size, prefill and decode tokens/s, and the decode roofline
(memory read rate / bf16 bytes a decode step reads). With kernels (the default) the bf16
matrices stay as stored, mapped from the file; the PLE table stays on disk but for the rows of
the tokens seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks.engines import Minigemma, bandwidth, generate, peak_rss_bytes, prompt
from benchmarks.run import GB, decode_values


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--numpy", action="store_true", help="NumPy twins (bf16 widened at load) instead of kernels")
    args = p.parse_args(argv)

    size = sum(os.path.getsize(os.path.join(args.model, f)) for f in os.listdir(args.model) if f.endswith(".safetensors"))
    start = time.perf_counter()
    engine = Minigemma(args.model, kernels=not args.numpy)
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_bytes()
    vocab = engine.model.config.text.vocab_size
    start = time.perf_counter()
    generate(engine, prompt(vocab, 4, seed=1), 2)  # first run: kernels from the cache, pages faulted in
    first_s = time.perf_counter() - start
    tokens, prefill_s, decode_s = generate(engine, prompt(vocab, args.prompt), args.new)
    peak = peak_rss_bytes()
    values, stored = decode_values(engine.model)
    del engine
    gb_s = bandwidth(args.threads)["gb_s"]
    result = {
        "checkpoint_bytes": size, "load_s": load_s, "rss_after_load": rss_loaded, "first_run_s": first_s,
        "prefill_tok_s": args.prompt / prefill_s, "decode_tok_s": (args.new - 1) / decode_s, "peak_rss": peak,
        "decode_values": values, "decode_stored_bytes": stored, "bandwidth_gb_s": gb_s, "tokens": tokens,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))
    print(
        f"checkpoint {size / GB:.2f} GB; load {load_s:.1f} s (RSS after load {rss_loaded / GB:.2f} GB); "
        f"peak RSS {peak / GB:.2f} GB = {peak / size:.0%} of the checkpoint; prefill {result['prefill_tok_s']:.1f} tok/s, "
        f"decode {result['decode_tok_s']:.2f} tok/s; a decode step reads {stored / GB:.2f} GB as stored "
        f"({4 * values / GB:.2f} GB in float32); at {gb_s:.1f} GB/s the roofline is {gb_s * GB / stored:.2f} tok/s "
        f"as stored, {gb_s * GB / (4 * values):.2f} tok/s in float32",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
