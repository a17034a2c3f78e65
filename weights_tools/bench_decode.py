"""Decode speed and KV-cache size of a random checkpoint, as a table (run by hand; not a test).

    python -m weights_tools.bench_decode [--preset tiny] [--prompt 32] [--new 2048]

Writes a random checkpoint of the preset to a temporary directory, loads it with minigemma,
prefills a prompt, then decodes greedily token by token, printing at doubling lengths: decode
speed over the last stretch, and the bytes held by the sliding layers' ring buffers (flat: each
keeps `sliding_window - 1` positions) and by the global layers (growing with the text).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

import minigemma
from minigemma.generate.cache import GlobalKV, SlidingKV
from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling
from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint


def cache_bytes(cache, kind) -> int:
    return sum(c.nbytes for c in cache.layers if isinstance(c, kind))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.bench_decode", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    p.add_argument("--new", type=int, default=2048, help="tokens to decode")
    args = p.parse_args(argv)
    config = dict(PRESETS[args.preset])
    config["max_position_embeddings"] = max(config.get("max_position_embeddings", 0), args.prompt + args.new)
    with tempfile.TemporaryDirectory() as d:
        write_random_checkpoint(d, config, dtype="BF16")
        model = minigemma.load(d)
        t = model.config.text
        prompt = np.random.default_rng(0).integers(0, t.vocab_size, args.prompt)
        cache = model.new_cache()
        print(f"{args.preset}: {t.num_hidden_layers} layers, hidden {t.hidden_size}, sliding window {t.sliding_window}, "
              f"{sum(isinstance(c, SlidingKV) for c in cache.layers)} ring buffers, "
              f"{sum(isinstance(c, GlobalKV) for c in cache.layers)} global caches, "
              f"{sum(c is None for c in cache.layers)} KV-shared layers (no cache)")
        print(f"{'tokens':>7} {'decode tok/s':>13} {'sliding KV bytes':>17} {'global KV bytes (allocated)':>28}")
        start = time.perf_counter()
        report_at, last_n, last_t = 1, 0, None
        for n, _ in enumerate(generate_ids(model, prompt, Sampling(), args.new, cache=cache), start=1):
            now = time.perf_counter()
            if last_t is None:
                print(f"prefill of {args.prompt} tokens + first token: {now - start:.3f} s")
                last_n, last_t = n, now
            if n == report_at or n == args.new:
                rate = f"{(n - last_n) / (now - last_t):.1f}" if n > last_n else "-"
                print(f"{cache.length:>7} {rate:>13} {cache_bytes(cache, SlidingKV):>17,} {cache_bytes(cache, GlobalKV):>28,}")
                last_n, last_t, report_at = n, now, report_at * 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
