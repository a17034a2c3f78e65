"""Long prompts, wall clock: prefill and the decoding after it, minigemma against PyTorch eager.

    python -m benchmarks.long_prompt                                   # small-e2b-like, 512 / 4k / 8k tokens
    python -m benchmarks.long_prompt --prompts 256 1024 --new 4 --time-limit 300    # a small run

Each (prompt length, engine) runs in a process of its own (`benchmarks.engines`, so its peak RSS
is its own) with the same thread count, as `benchmarks.run` does: minigemma prefills as
`generate` does (chunks of 512, the last token's logits only, KV-shared layers skipped off the
last token) and transformers as its `generate` does (one forward, `logits_to_keep=1`). Every
process gets `--time-limit` seconds; one that runs past it is stopped and its row says so
(PyTorch eager builds (heads, n, n) scores per layer, so at the long end it runs out of time or
memory first).
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.configs import build
from benchmarks.run import DEFAULT_WEIGHTS, GB, LABELS, machine, markdown_table, subprocess_json

ENGINES = ("kernels", "torch")


def run(config: str, prompts, new: int, threads: int, limit: float, weights: str, engines) -> list[dict]:
    path = os.path.join(weights, config)
    build(config, path)
    rows = []
    for n in prompts:
        for engine in engines:
            print(f"{config}: {n} tokens, {LABELS[engine]} ...", file=sys.stderr)
            args = ["benchmarks.engines", engine, path, "--prompt", str(n), "--new", str(new), "--threads", str(threads)]
            rows.append({"n": n, "engine": engine, **subprocess_json(args, threads, timeout=limit)})
    return rows


def print_table(rows: list[dict], limit: float) -> None:
    header = ["prompt", "engine", "prefill s", "prefill tok/s", "decode tok/s", "peak RSS", "prefill vs torch", "decode vs torch"]
    torch = {r["n"]: r for r in rows if r["engine"] == "torch" and "timeout" not in r}
    table = []
    for r in rows:
        if "timeout" in r:
            table.append([str(r["n"]), LABELS[r["engine"]], f"> {limit:.0f} (stopped)", "-", "-", "-", "-", "-"])
            continue
        t = torch.get(r["n"])
        table.append([
            str(r["n"]), LABELS[r["engine"]], f"{r['n'] / r['prefill_tok_s']:.1f}", f"{r['prefill_tok_s']:.1f}",
            f"{r['decode_tok_s']:.2f}", f"{r['peak_rss'] / GB:.2f} GB",
            f"{r['prefill_tok_s'] / t['prefill_tok_s']:.2f}x" if t else "-", f"{r['decode_tok_s'] / t['decode_tok_s']:.2f}x" if t else "-",
        ])
    print(markdown_table(header, table))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.long_prompt", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small-e2b-like")
    p.add_argument("--prompts", type=int, nargs="+", default=[512, 4096, 8192])
    p.add_argument("--new", type=int, default=16, help="tokens decoded after the prompt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--time-limit", type=float, default=1800.0, help="seconds each engine process may take")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=["kernels", "numpy", "torch"])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, load average " + " ".join(f"{x:.2f}" for x in m["load_average"]))
    rows = run(args.config, args.prompts, args.new, args.threads, args.time_limit, args.weights, args.engines)
    print(f"\n{args.config}: prompt, then {args.new} greedy tokens; {args.threads} threads; wall clock\n")
    print_table(rows, args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
