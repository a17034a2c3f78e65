"""The four Gemma 4 sizes on this machine: random-weight Q4 GGUFs of the published shapes, loaded
memory-mapped and decoded, next to the bandwidth roofline.

    python -m benchmarks.real_sizes                                   # e2b e4b 26b-a4b 31b, Q4_0, 16 + 8 tokens
    python -m benchmarks.real_sizes --shapes e2b --prompt 4096 --new 2 --keep    # issue 16's long prefill, 4k
    python -m benchmarks.real_sizes --shapes e2b-like a4b-like --dir /tmp/x      # a smoke run (toy sizes)

For each shape, `weights_tools.random_gguf` writes the file (unless it is already in `--dir`), then
a process of its own (so its peak RSS, VmHWM, is its own) loads it with `minigemma.load` (tensors
left in the map, quantized), feeds a short prompt and decodes greedily, and measures:

* load s, peak RSS, prefill and decode tokens/s; major page faults during decoding (a fault is a
  page read from disk: the file no longer fits in the page cache beside everything else). The
  peak RSS counts the mapped file's pages a step touched (all of a dense model's); "private" is
  the process's own memory (RssAnon) after decoding: what the model costs beyond the page cache;
* the bytes one decode step reads (`decode_reads`): every layer matrix as stored, of the experts
  the top-k share, the tied embedding read whole as the head, the PLE projection, one row each of
  the embedding and of the PLE table;
* the rooflines: bandwidth (the machine's read rate, measured in this run: the best of five
  parallel sums of 1 GiB) / bytes per token, and compute (the quantized GEMV's measured weights/s,
  per type, on a matrix that stays in cache) / weights per token; the smaller is the bound, and
  the table says which, and how much of it decoding reached. A step slower than both is spending
  its time elsewhere: attention, norms, Python between the products.
* prefill FLOPs (2 per weight per token through the layers that see the prompt -- KV-shared ones
  only see its last token -- plus attention's 4 x heads x head_dim per visible key) over the
  measured float32 GEMM rate (prefill dequantizes a block of rows, then BLAS): the compute bound
  of a long prompt (`--prompt 32768`: issue 16's E2B-sized 32k prefill).

The files are deleted after their row unless `--keep` (the four take 40 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from benchmarks.engines import Minigemma, peak_rss_bytes, prompt
from benchmarks.run import GB, ROOT, machine, markdown_table, subprocess_json
from minigemma.weights.quants import GGML_TYPES

SHAPES = ("e2b", "e4b", "26b-a4b", "31b")
PAGE = 4096  # bytes a major page fault reads
PAGE_CACHE_SHARE = 0.05  # this share of a step's bytes read from disk makes the page cache the bound
BUSY_SHARE = 0.75  # fewer cores than this share of the threads busy: the process waited for the CPU
GEMV_SHAPE = (2048, 2048)  # 4 M weights: 2.4 MB in Q4_0, stays in cache, runs parallel


# ------------------------------------------------------------------------------- what a step reads

def walk(roots, top: float) -> dict[str, list[float]]:
    """Type name -> [weights, bytes] of every matrix under `roots` ((object, share) pairs), each
    counted once; of the experts (`ExpertWeights`) the share `top` a token reads."""
    from minigemma.text.moe import ExpertWeights
    from minigemma.weights.checkpoint import StoredMatrix
    from minigemma.weights.quants_matrix import QuantExperts, QuantMatrix

    reads: dict[str, list[float]] = {}
    seen, stack = set(), list(roots)
    while stack:
        obj, share = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, QuantMatrix | QuantExperts):
            kind, values, nbytes = GGML_TYPES[obj.type_id].name, np.prod(obj.shape), obj.raw.nbytes
        elif isinstance(obj, StoredMatrix):
            kind, values, nbytes = obj.stored.dtype.name, obj.stored.size, obj.stored.nbytes
        elif isinstance(obj, np.ndarray):
            kind, values, nbytes = obj.dtype.name, obj.size, obj.nbytes
        else:
            if isinstance(obj, tuple | list):
                stack.extend((o, share) for o in obj)
            elif hasattr(obj, "__dataclass_fields__"):
                share = top if isinstance(obj, ExpertWeights) else share
                stack.extend((getattr(obj, f), share) for f in obj.__dataclass_fields__)
            continue
        r = reads.setdefault(kind, [0.0, 0.0])
        r[0], r[1] = r[0] + float(values) * share, r[1] + float(nbytes) * share
    return reads


def top_share(cfg) -> float:
    return cfg.top_k_experts / cfg.num_experts if cfg.enable_moe_block else 1.0


def decode_reads(model) -> dict[str, list[float]]:
    """Type name -> [weights, bytes] one decode step reads (module docstring); "rows": the one
    row of the embedding and of the PLE table."""
    w = model.weights
    reads = walk([(w.layers, 1.0), (w.lm_head, 1.0)] + ([(w.ple.model_projection, 1.0)] if w.ple else []), top_share(model.config.text))
    rows = reads.setdefault("rows", [0.0, 0.0])
    for table in [w.embed] + ([w.ple.table] if w.ple else []):
        raw = getattr(table, "raw", getattr(table, "stored", table))
        rows[0], rows[1] = rows[0] + getattr(table, "cols", raw.shape[-1]), rows[1] + raw.nbytes / raw.shape[0]
    return reads


def prefill_flops(model, n: int) -> float:
    """FLOPs of an n-token prefill (module docstring)."""
    cfg, w = model.config.text, model.weights
    flops = 0.0
    for spec, layer in zip(cfg.layers, w.layers):
        tokens = 1 if spec.reuses_kv else n  # KV-shared layers: only the last token's logits are wanted
        flops += 2 * tokens * sum(v for v, _ in walk([(layer, 1.0)], top_share(cfg)).values())
        window = n if spec.layer_type == "full_attention" else min(n, cfg.sliding_window)
        visible = sum(min(i + 1, window) for i in range(n)) if tokens > 1 else n
        flops += 4 * cfg.num_attention_heads * spec.head_dim * visible
    if w.ple is not None:
        flops += 2 * n * sum(v for v, _ in walk([(w.ple.model_projection, 1.0)], 1.0).values())
    return flops + 2 * cfg.vocab_size * cfg.hidden_size  # the head, last token only


# ------------------------------------------------------------------------------- machine rates

def gemv_rates(types, repeats: int = 20) -> dict[str, float]:
    """Weights/s of the quantized GEMV per type, on a cache-resident matrix: its compute speed."""
    from benchmarks.quant_gemv import best_ms, random_blocks
    from minigemma.kernels import quant
    from minigemma.weights.quants import TYPE_IDS

    rng = np.random.default_rng(0)
    rows, cols = GEMV_SHAPE
    x = rng.standard_normal((1, cols), dtype=np.float32)
    rates = {}
    for name in types:
        raw = random_blocks(name, rows, cols, rng)
        rates[name] = rows * cols / best_ms(lambda: quant.linear(x, raw, TYPE_IDS[name], cols), repeats) * 1e3
    return rates


def gemm_gflops(n: int = 512, k: int = 2048, m: int = 8192) -> float:
    """float32 GEMM rate (what prefill's dequantize-into-BLAS runs at), GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, k), dtype=np.float32), rng.standard_normal((k, m), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * n * k * m / best / 1e9


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def rss_anon() -> int:
    """This process's private memory now (RssAnon): the RSS without the mapped file's pages, which
    the kernel can drop and read again."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


# ------------------------------------------------------------------------------- one file, one process

def measure(path: str, n_prompt: int, n_new: int) -> dict:
    available = mem_available()
    start = time.perf_counter()
    engine = Minigemma(path, kernels=True)
    load_s = time.perf_counter() - start
    vocab = engine.model.config.text.vocab_size
    start = time.perf_counter()
    engine.prefill(prompt(vocab, 4, seed=1))  # first run: kernels from the cache, pages faulted in
    engine.step(3)
    first_s = time.perf_counter() - start
    ids = prompt(vocab, n_prompt)
    start = time.perf_counter()
    tokens = [engine.prefill(ids)]
    prefill_s = time.perf_counter() - start
    faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_majflt, time.process_time()
    start = time.perf_counter()
    for _ in range(n_new - 1):
        tokens.append(engine.step(tokens[-1]))
    decode_s = time.perf_counter() - start
    faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults, time.process_time() - cpu
    peak, private = peak_rss_bytes(), rss_anon()
    reads = decode_reads(engine.model)
    flops = prefill_flops(engine.model, n_prompt)
    quant_types = [k for k in reads if k[0] == "Q"]
    return {
        "file_bytes": os.path.getsize(path), "mem_available": available, "load_s": load_s, "first_run_s": first_s,
        "prefill_s": prefill_s, "prefill_tok_s": n_prompt / prefill_s, "decode_tok_s": (n_new - 1) / decode_s,
        "decode_s": decode_s, "decode_cpu_s": cpu, "decode_major_faults": faults, "peak_rss": peak, "rss_anon": private,
        "tokens": tokens,
        "reads": reads, "prefill_flops": flops, "gemv_weights_s": gemv_rates(quant_types), "gemm_gflops": gemm_gflops(),
        "config": summary(engine.model.config.text),
    }


def summary(cfg) -> str:
    parts = [f"hidden {cfg.hidden_size}", f"{cfg.num_hidden_layers} layers",
             f"{sum(s.layer_type == 'full_attention' for s in cfg.layers)} global"]
    if cfg.num_kv_shared_layers:
        parts.append(f"{cfg.num_kv_shared_layers} KV-shared")
    if cfg.has_ple:
        parts.append(f"PLE {cfg.hidden_size_per_layer_input}")
    if cfg.enable_moe_block:
        parts.append(f"{cfg.num_experts} experts top-{cfg.top_k_experts}")
    if cfg.attention_k_eq_v:
        parts.append("k_eq_v")
    return ", ".join(parts)


# ------------------------------------------------------------------------------- the table

def rooflines(r: dict, gb_s: float) -> dict:
    reads = r["reads"]
    nbytes = sum(b for _, b in reads.values())
    rates = r["gemv_weights_s"]
    # compute time of a step: quantized weights at the GEMV's rate, the rest (float tables) at the read rate
    compute_s = sum(v / rates[k] if k in rates else b / (gb_s * GB) for k, (v, b) in reads.items())
    bw = gb_s * GB / nbytes
    return {"bytes_per_token": nbytes, "bandwidth_tok_s": bw, "compute_tok_s": 1 / compute_s,
            "reached": r["decode_tok_s"] / bw, "prefill_bound_s": r["prefill_flops"] / (r["gemm_gflops"] * 1e9)}


def bound(r: dict, roof: dict, threads: int) -> str:
    """What limits decoding, in words: the page cache when a real share of the bytes came from disk,
    else the smaller roofline; and, short of it, whether the process even had its cores."""
    steps = max(1, len(r["tokens"]) - 1)
    from_disk = r["decode_major_faults"] * PAGE
    if from_disk > PAGE_CACHE_SHARE * roof["bytes_per_token"] * steps:
        return (f"page cache: {from_disk / GB:.1f} GB read from disk while decoding "
                f"(file {r['file_bytes'] / GB:.1f} GB, {r['mem_available'] / GB:.1f} GB available at start)")
    limit = min(roof["bandwidth_tok_s"], roof["compute_tok_s"])
    what = "bandwidth" if roof["bandwidth_tok_s"] <= roof["compute_tok_s"] else "compute in the quant GEMV"
    share = r["decode_tok_s"] / limit
    busy = r["decode_cpu_s"] / r["decode_s"]
    if share >= 0.8:
        rest = ""
    elif busy < BUSY_SHARE * threads:
        rest = f"; {busy:.2f} of {threads} cores busy: the machine's other processes had the rest"
    else:
        rest = f"; {1 - share:.0%} of a step outside the bound (attention, small ops, Python)"
    return f"{what} ({share:.0%} of it){rest}"


def print_table(rows: dict, gb_s: float, args) -> None:
    header = ["shape", "file", "write s", "load s", "peak RSS", "of it private", "prefill tok/s", "decode tok/s", "GB read/token",
              "roofline tok/s", "reached", "compute bound tok/s", "bound"]
    table = []
    for shape, r in rows.items():
        if "timeout" in r or "error" in r:
            stopped = f"> {args.time_limit:.0f} s (stopped)" if "timeout" in r else f"failed: {r['error']}"
            table.append([shape] + ["-"] * 11 + [stopped])
            continue
        roof = rooflines(r, gb_s)
        table.append([
            shape, f"{r['file_bytes'] / GB:.2f} GB", f"{r['write_s']:.0f}" if r.get("write_s") else "-", f"{r['load_s']:.1f}",
            f"{r['peak_rss'] / GB:.2f} GB", f"{r['rss_anon'] / GB:.2f} GB", f"{r['prefill_tok_s']:.1f}", f"{r['decode_tok_s']:.2f}",
            f"{roof['bytes_per_token'] / GB:.3f}", f"{roof['bandwidth_tok_s']:.2f}", f"{roof['reached']:.0%}",
            f"{roof['compute_tok_s']:.2f}", bound(r, roof, args.threads),
        ])
    print(markdown_table(header, table))
    print()
    for shape, r in rows.items():
        if "timeout" in r or "error" in r:
            continue
        roof = rooflines(r, gb_s)
        rates = ", ".join(f"{k} {v / 1e9:.1f} G weights/s" for k, v in r["gemv_weights_s"].items())
        print(f"{shape}: {r['config']}; prefill {args.prompt} tokens in {r['prefill_s']:.1f} s, "
              f"{r['prefill_flops'] / 1e12:.2f} TFLOP -> compute bound {roof['prefill_bound_s']:.1f} s at "
              f"{r['gemm_gflops']:.0f} GFLOP/s (float32 GEMM); GEMV {rates}; decode CPU {r['decode_cpu_s'] / r['decode_s']:.2f}"
              f" cores busy; first run {r['first_run_s']:.1f} s")


def write_file(shape: str, path: str, args) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "weights_tools.random_gguf", path, "--shape", shape, "--type", args.type, "--jobs", str(args.jobs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(f"writing {path} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_sizes", description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), help="weights_tools.random_gguf shapes")
    p.add_argument("--dir", default="/tmp/minigemma-real-sizes", help="where the GGUF files go (reused when present)")
    p.add_argument("--type", default="Q4_0", help="the matrices' type")
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new", type=int, default=8, help="tokens decoded (the first comes from the prefill)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="processes writing a file")
    p.add_argument("--time-limit", type=float, default=3600.0, help="seconds each shape's process may take")
    p.add_argument("--bandwidth-gib", type=float, default=1.0)
    p.add_argument("--keep", action="store_true", help="keep the files (default: deleted after their row)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this file, print JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.prompt, args.new)))
        return 0
    m = machine()
    os.makedirs(args.dir, exist_ok=True)
    print(f"machine: {m['cpu']}, {m['cores']} cores, load average " + " ".join(f"{x:.2f}" for x in m["load_average"]))
    gb_s = subprocess_json(["benchmarks.engines", "bandwidth", "--gib", str(args.bandwidth_gib), "--threads", str(args.threads)],
                           args.threads)["gb_s"]
    print(f"memory read rate: {gb_s:.1f} GB/s ({args.threads} threads); {args.type}, prompt {args.prompt}, "
          f"{args.new} greedy tokens", flush=True)
    rows = {}
    for shape in args.shapes:
        path = os.path.join(args.dir, f"{shape}-{args.type}.gguf")
        write_s = 0.0
        if not os.path.exists(path):
            print(f"{shape}: writing {path} ...", file=sys.stderr, flush=True)
            write_s = write_file(shape, path, args)
        print(f"{shape}: loading and decoding ...", file=sys.stderr, flush=True)
        one = ["benchmarks.real_sizes", "--one", path, "--prompt", str(args.prompt), "--new", str(args.new)]
        try:
            rows[shape] = {**subprocess_json(one, args.threads, timeout=args.time_limit), "write_s": write_s}
        except SystemExit as e:  # a shape that fails gets its row, the others still run
            rows[shape] = {"error": str(e).strip().splitlines()[-1]}
        finally:
            if not args.keep:
                os.remove(path)
        print(json.dumps({shape: rows[shape]}), file=sys.stderr, flush=True)  # a row survives a later crash
    print()
    print_table(rows, gb_s, args)
    print(json.dumps({"bandwidth_gb_s": gb_s, "machine": m, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
