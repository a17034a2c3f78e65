"""Attention alone, wall clock: GFLOP/s of prefill on global and sliding layers, and a decode
step over a long cache against its memory bound.

    python -m benchmarks.attention                          # 2k and 8k prefill, decode at 16k keys
    python -m benchmarks.attention --prefill 512 --decode 2048 --repeats 1    # a small run

Shapes are `small-e2b-like`'s (and E2B's): 8 query heads, 1 KV head; global layers head dim 512,
sliding layers head dim 256 with a 512-token window. Random q (scaled 1/sqrt(d), as a trained
model's scores are), k, v; causal masks from positions.

* FLOPs of a prefill: 4 * d * heads per visible (query, key) pair (QK^T and PV, a multiply-add
  each), only the pairs the mask lets through: n(n+1)/2 for a global layer, ~n * window for a
  sliding one. Time: the best of `--repeats` runs after a warm-up, wall clock;
* decode: one query at position n over n cached keys (a global layer); its memory bound is the
  bytes of K and V (2 * n * d * 4) at the machine's read rate (measured here: the best parallel
  sum of 1 GiB, as `benchmarks.run` does), and its cache-resident bound does not apply: K and V
  of 16k keys are 64 MB, twice the L3;
* the NumPy twin (`attention.attend_positions`: whole (heads, n, n) scores) beside each, up to
  `--twin-max` tokens; torch's eager attention (`Gemma4`'s `eager_attention_forward`: matmul,
  mask, softmax, matmul) too, if torch is installed, with the same limit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from benchmarks.sweep import GLOBAL_DIM, HEADS, KV_HEADS, SLIDING_DIM, WINDOW, qkv
from benchmarks.sweep import best_time as best_wall  # least wall-clock time after a warm-up

# a decode step takes milliseconds, so it can be repeated often: the least of 5 (the earlier
# count) read 4.29 ms at 16k keys on the idle machine, the least of 30 read 3.23-3.25 ms for the
# same kernel on a busy one (the least of 5 there: 3.56 ms)
DECODE_REPEATS = 30


def visible_pairs(n: int, window: int | None) -> int:
    pos = np.arange(n)
    return int((np.minimum(pos + 1, window) if window else pos + 1).sum())


def torch_eager(q, k, v, window):
    """transformers' eager attention on the same inputs (causal mask as an additive bias)."""
    import torch

    n = q.shape[0]
    tq = torch.from_numpy(q).transpose(0, 1)[None]  # (1, heads, n, d)
    tk = torch.from_numpy(k).transpose(0, 1)[None].repeat_interleave(HEADS // KV_HEADS, dim=1)
    tv = torch.from_numpy(v).transpose(0, 1)[None].repeat_interleave(HEADS // KV_HEADS, dim=1)
    pos = torch.arange(n)
    dist = pos[:, None] - pos[None, :]
    visible = (dist >= 0) & (dist < window) if window else dist >= 0
    bias = torch.zeros(n, n).masked_fill(~visible, float("-inf"))
    with torch.inference_mode():
        w = torch.softmax(tq @ tk.transpose(-1, -2) + bias, dim=-1)
        return (w @ tv)[0].transpose(0, 1).numpy()


def prefill_rows(lengths, repeats: int, twin_max: int, with_torch: bool) -> list[dict]:
    from minigemma.kernels.attention import attend
    from minigemma.text.attention import attend_positions

    rng = np.random.default_rng(0)
    rows = []
    for kind, d, window in (("global", GLOBAL_DIM, None), ("sliding", SLIDING_DIM, WINDOW)):
        for n in lengths:
            q, k, v = qkv(rng, n, n, d)
            pos = np.arange(n)
            flop = 4 * d * HEADS * visible_pairs(n, window)
            row = {"layer": kind, "n": n, "d": d, "gflop": flop / 1e9}
            row["kernel_s"] = best_wall(lambda: attend(q, k, v, pos, pos, window), repeats)
            if n <= twin_max:
                row["twin_s"] = best_wall(lambda: attend_positions(q, k, v, pos, pos, window), 1)
                if with_torch:
                    row["torch_s"] = best_wall(lambda: torch_eager(q, k, v, window), 1)
            rows.append(row)
    return rows


def decode_rows(lengths, repeats: int, gb_s: float) -> list[dict]:
    from minigemma.kernels.attention import attend
    from minigemma.text.attention import attend_positions

    rng = np.random.default_rng(1)
    rows = []
    for n in lengths:
        q, k, v = qkv(rng, 1, n, GLOBAL_DIM)
        pos, q_pos = np.arange(n), np.array([n])
        row = {"n": n, "bound_s": (k.nbytes + v.nbytes) / (gb_s * 1e9)}
        row["kernel_s"] = best_wall(lambda: attend(q, k, v, q_pos, pos, None), repeats)
        row["twin_s"] = best_wall(lambda: attend_positions(q, k, v, q_pos, pos, None), repeats)
        rows.append(row)
    return rows


def read_rate(threads: int, gib: float) -> float:
    """The machine's memory read rate, GB/s (benchmarks.engines' probe, in this process)."""
    from benchmarks.engines import bandwidth

    return bandwidth(threads, gib)["gb_s"]


def print_tables(report: dict) -> None:
    from benchmarks.run import markdown_table

    print(f"\nattention prefill, wall clock, {report['threads']} threads (GFLOP/s counts visible pairs only)\n")
    header = ["layer", "tokens", "head dim", "kernel s", "kernel GFLOP/s", "twin s", "twin GFLOP/s", "torch eager s"]
    rows = []
    for r in report["prefill"]:
        def rate(key):
            return f"{r['gflop'] / r[key]:.1f}" if key in r else "-"
        rows.append([r["layer"], str(r["n"]), str(r["d"]), f"{r['kernel_s']:.3f}", rate("kernel_s"),
                     f"{r['twin_s']:.3f}" if "twin_s" in r else "-", rate("twin_s"),
                     f"{r['torch_s']:.3f}" if "torch_s" in r else "-"])
    print(markdown_table(header, rows))
    print(f"\nglobal decode step (1 query, head dim {GLOBAL_DIM}), memory read rate {report['gb_s']:.1f} GB/s\n")
    header = ["cached keys", "kernel ms", "twin ms", "memory bound ms", "kernel / bound"]
    rows = [[str(r["n"]), f"{1e3 * r['kernel_s']:.2f}", f"{1e3 * r['twin_s']:.2f}", f"{1e3 * r['bound_s']:.2f}",
             f"{r['kernel_s'] / r['bound_s']:.2f}x"] for r in report["decode"]]
    print(markdown_table(header, rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__.split("\n")[0])
    p.add_argument("--prefill", type=int, nargs="+", default=[2048, 8192], help="prompt lengths")
    p.add_argument("--decode", type=int, nargs="+", default=[16384], help="cached keys of the decode step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--twin-max", type=int, default=2048, help="longest prompt the twin and torch get ((heads, n, n) scores)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--bandwidth-gib", type=float, default=1.0, help="GiB read by the bandwidth probe")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    threads = int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            with_torch = False
    report = {"threads": threads, "gb_s": read_rate(threads, args.bandwidth_gib)}
    report["prefill"] = prefill_rows(args.prefill, args.repeats, args.twin_max, with_torch)
    report["decode"] = decode_rows(args.decode, max(args.repeats, DECODE_REPEATS), report["gb_s"])
    print_tables(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
