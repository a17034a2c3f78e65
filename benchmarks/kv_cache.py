"""How big the KV cache of a long context gets, float32 against the compact float16 option.

    python -m benchmarks.kv_cache                        # E2B's text config at 32K and 128K tokens
    python -m benchmarks.kv_cache --tokens 4096 --preset tiny

No arrays are filled: the figures come from the cache's own layout (`generate/cache.py`), layer
by layer, for a prompt fed in chunks of `PREFILL_CHUNK` and nothing after it:

* a sliding layer's ring buffer: `window - 1` keys and values, whatever the length;
* a global layer's buffer: every token, in a capacity that doubles when full (so up to twice
  what is held: the figure is the capacity the doubling reaches);
* a KV-shared layer: nothing of its own.
Each key and value row is kv_heads x head_dim values, plus an int64 position per slot.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from minigemma.generate.loop import PREFILL_CHUNK
from minigemma.text.config import config_from_dict

GIB = 2**30


def global_capacity(tokens: int, chunk: int = PREFILL_CHUNK) -> int:
    """Rows a `GlobalKV` has allocated after `tokens` fed `chunk` at a time (its doubling rule)."""
    capacity = length = 0
    while length < tokens:
        end = min(tokens, length + chunk)
        if end > capacity:
            capacity = max(end, 2 * capacity)
        length = end
    return capacity


def cache_bytes(cfg, tokens: int, dtype) -> int:
    itemsize = np.dtype(dtype).itemsize
    total = 0
    for spec in cfg.layers:
        if spec.reuses_kv:
            continue
        rows = cfg.attention_window - 1 if spec.is_sliding else global_capacity(tokens)
        total += rows * (2 * spec.num_kv_heads * spec.head_dim * itemsize + np.dtype(np.int64).itemsize)
    return total


def main(argv=None) -> int:
    from weights_tools.random_checkpoint import PRESETS

    p = argparse.ArgumentParser(prog="python -m benchmarks.kv_cache", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="e2b", choices=sorted(PRESETS))
    p.add_argument("--tokens", type=int, nargs="+", default=[32768, 131072])
    args = p.parse_args(argv)
    cfg = config_from_dict(dict(PRESETS[args.preset])).text
    own = [s for s in cfg.layers if not s.reuses_kv]
    print(f"{args.preset}: {len(cfg.layers)} layers, {len(own)} with a cache of their own "
          f"({sum(not s.is_sliding for s in own)} global), window {cfg.attention_window}\n")
    from benchmarks.run import markdown_table

    rows = [[str(n), f"{cache_bytes(cfg, n, np.float32) / GIB:.2f} GiB", f"{cache_bytes(cfg, n, np.float16) / GIB:.2f} GiB"]
            for n in args.tokens]
    print(markdown_table(["tokens", "float32 cache", "float16 cache"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
