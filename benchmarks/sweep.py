"""Attention time per token against prompt length: sliding layers stay flat, global ones grow.

    python -m benchmarks.sweep --lengths 1024 4096 16384

Times are wall clock (the best of a few runs): what a user waits, threads included.

On `small-e2b-like`'s attention shapes (8 query heads, 1 KV head; head dim 256 and window 512 on
sliding layers, head dim 512 on global ones), random queries, keys and values of n tokens:

* prefill: the whole prompt attends causally; time / n. The kernel reads only the keys inside
  each query block's window, so a sliding layer's time per token does not depend on n (the
  target: within 1.5x from 1k to 32k); the
  NumPy twin builds (heads, n, n) scores (8.6 GB at 16k, so it is not run past 4k);
* decode: one new token at position n attends to the cache: a sliding layer's ring buffer of the
  window's keys (not in position order), a global layer's n keys.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

HEADS, KV_HEADS, SLIDING_DIM, GLOBAL_DIM, WINDOW = 8, 1, 256, 512, 512
TWIN_MAX = 4096  # beyond this the twin's score matrix no longer fits comfortably in memory
GLOBAL_PREFILL_MAX = 4096  # a 16k global prefill is ~2 TFLOP: minutes, and O(n^2) is the point


def best_time(f, repeats: int) -> float:
    """Least wall-clock time of `repeats` calls (after a warm-up). An earlier version took CPU
    time, which hid both the threads' help and the time spent waiting for them."""
    f()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def qkv(rng, n_q: int, n_k: int, d: int):
    return (
        rng.standard_normal((n_q, HEADS, d), dtype=np.float32) * np.float32(d**-0.5),
        rng.standard_normal((n_k, KV_HEADS, d), dtype=np.float32),
        rng.standard_normal((n_k, KV_HEADS, d), dtype=np.float32),
    )


def sweep(lengths, repeats: int = 5) -> list[dict]:
    from minigemma.text.attention import attend_positions
    from minigemma.kernels.attention import attend

    rng = np.random.default_rng(0)
    rows = []
    for n in lengths:
        pos = np.arange(n)
        row = {"n": n}
        q, k, v = qkv(rng, n, n, SLIDING_DIM)  # q scaled 1/sqrt(d), as a trained model's scores
        row["sliding_us"] = 1e6 * best_time(lambda: attend(q, k, v, pos, pos, WINDOW), repeats) / n
        # the first `window` queries see fewer keys: per (query, visible key) pair the cost is
        row["sliding_ns_per_key"] = 1e3 * row["sliding_us"] / np.minimum(pos + 1, WINDOW).mean()
        if n <= TWIN_MAX:
            row["sliding_twin_us"] = 1e6 * best_time(lambda: attend_positions(q, k, v, pos, pos, WINDOW), 1) / n
        if n <= GLOBAL_PREFILL_MAX:
            q, k, v = qkv(rng, n, n, GLOBAL_DIM)
            row["global_us"] = 1e6 * best_time(lambda: attend(q, k, v, pos, pos, None), 1) / n
        # decode: one query at position n; a sliding layer sees the window's keys, held in ring
        # order (the oldest slot is not first)
        ring = np.roll(np.arange(n - WINDOW + 1, n + 1), n % WINDOW)
        q, k, v = qkv(rng, 1, WINDOW, SLIDING_DIM)
        row["decode_sliding_us"] = 1e6 * best_time(lambda: attend(q, k, v, np.array([n]), ring, WINDOW), 20)
        q, k, v = qkv(rng, 1, n, GLOBAL_DIM)
        row["decode_global_us"] = 1e6 * best_time(lambda: attend(q, k, v, np.array([n]), pos, None), 20)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(json.dumps(sweep(args.lengths, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
