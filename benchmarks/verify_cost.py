"""What speculative decoding can gain at most: the cost of verifying k drafted tokens (one target
pass over k + 1 positions) relative to one decode step (1 position), on random weights.

    python -m benchmarks.verify_cost [--config small-e2b-like] [--weights DIR] [--prompt 128] [--repeats 5]

A decode step is bound by reading the weights; the k + 1 positions of a verification pass read
them once too. If verifying k costs c(k) decode steps and the drafter costs d per draft, a round
that keeps n drafts gives n + 1 tokens for c(k) + k d steps: the ceiling, with a drafter that is
always right and free, is (k + 1) / c(k). Each pass starts from the same cache (the verified
positions are rolled back), so every k sees the same context. Prints a table; run it on a quiet
machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from .configs import CONFIGS, build


def measure(model, prompt: int, ks, repeats: int, seed: int = 0) -> dict[int, float]:
    """Median seconds of one target pass over k + 1 new positions after a `prompt`-token prefill."""
    rng = np.random.default_rng(seed)
    vocab = model.config.text.vocab_size
    cache = model.new_cache()
    model.extend(rng.integers(0, vocab, prompt), cache)
    model.extend(rng.integers(0, vocab, 9), cache)  # warm-up (kernels compile, pages load)
    cache.rollback(9)
    seconds = {}
    for k in ks:
        times = []
        for _ in range(repeats):
            ids = rng.integers(0, vocab, k + 1)
            start = time.perf_counter()
            model.extend(ids, cache)
            times.append(time.perf_counter() - start)
            cache.rollback(k + 1)
        seconds[k] = statistics.median(times)
    return seconds


def table(name: str, seconds: dict[int, float]) -> str:
    base = seconds[0]
    rows = [f"| {name} | {k} | {k + 1} | {1000 * s:.1f} | {s / base:.2f} | {(k + 1) * base / s:.2f}x |"
            for k, s in seconds.items()]
    head = ("| config | drafts k | positions | ms per pass | cost (decode steps) | ceiling speedup |\n"
            "| --- | --- | --- | --- | --- | --- |")
    return "\n".join([head, *rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small-e2b-like", choices=sorted(CONFIGS))
    p.add_argument("--weights", help="directory for the random weights (default: a temporary one)")
    p.add_argument("--prompt", type=int, default=128, help="tokens in the cache before the passes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-k", type=int, default=8)
    p.add_argument("--numpy", action="store_true", help="the NumPy twins instead of the Numba kernels")
    args = p.parse_args(argv)
    import minigemma

    with tempfile.TemporaryDirectory() as tmp:
        weights = build(args.config, args.weights or os.path.join(tmp, args.config))
        model = minigemma.load(weights, kernels=not args.numpy)
        seconds = measure(model, args.prompt, range(args.max_k + 1), args.repeats)
    print(table(args.config, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
