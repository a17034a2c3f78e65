"""The benchmark: one command, one run, one table.

    python -m benchmarks.run                       # tiny and small-e2b-like, 512 + 128 tokens, 2 threads
    python -m benchmarks.run --configs tiny --prompt 8 --new 3 --no-sweep --no-compile   # a smoke run

For each config (`configs.py`), the reference builds random weights once and saves them; then
every engine (minigemma with kernels, minigemma NumPy-only, transformers eager) runs in a process
of its own (so each peak RSS is honest) with the same thread count, on the same weights and the
same prompt: prefill tokens/s, decode tokens/s, peak RSS, and the ratios to PyTorch. Decoding
is bandwidth-bound, so the table also prints the roofline: the machine's measured read rate
divided by the weight bytes a decode step reads. Numba's compile time is measured apart, in a
fresh cache directory (first use) and again from that cache (second use); then comes the
attention sweep over prompt lengths (`sweep.py`). Results also go to WEIGHTS_DIR/results.json.

Before it starts it says what it will build, where, and how big; the weights go to a fresh
temporary directory, removed at the end unless `--keep` (or `--weights DIR`, which is kept and
reused by later runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

from benchmarks.configs import bf16_copy
from minigemma.kernels import WAIT_POLICY

ENGINES = ("kernels", "numpy", "torch", "kernels-bf16")
LABELS = {
    "kernels": "minigemma kernels",
    "numpy": "minigemma NumPy-only",
    "torch": "transformers eager",
    "kernels-bf16": "minigemma kernels, bf16 weights",  # the same weights rounded to bf16
}
# Every engine gets the same threading environment: minigemma's default OpenMP wait policy (spin
# ~0.1 ms, then sleep: kernels/__init__.py), torch's OpenMP the same (its own default spins ~3 ms).
SAME_FOR_ALL = dict(WAIT_POLICY)
GB = 1e9
DEFAULT_RUN_MINUTES = 6.5  # the default configs, measured on an idle 2-core machine
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: `benchmarks` imports from here


def subprocess_json(args: list[str], threads: int, env: dict | None = None, timeout: float | None = None) -> dict | list:
    """Run `python -m benchmarks.<args>` with the thread count fixed; its last stdout line is JSON.
    Past `timeout` seconds the step is stopped and reported as {"timeout": seconds}."""
    full_env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
    full_env.update(SAME_FOR_ALL)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, full_env.get("PYTHONPATH")]))
    try:
        out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if out.returncode:
        raise SystemExit(f"benchmark step {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def decode_values(model) -> tuple[int, int]:
    """(weight values, stored bytes) one decode step of `model` reads: every layer matrix, the
    head (the tied embedding, read whole), the PLE projection; top-k of n experts; of the
    embedding and the PLE table only one row each, which is negligible."""
    from minigemma.weights.checkpoint import StoredMatrix
    from minigemma.text.moe import ExpertWeights

    cfg, w = model.config.text, model.weights
    fraction = cfg.top_k_experts / cfg.num_experts if cfg.enable_moe_block else 1.0
    seen, values, stored = set(), 0, 0
    stack = [(w.layers, 1.0), (w.lm_head, 1.0)] + ([(w.ple.model_projection, 1.0)] if w.ple else [])
    while stack:
        obj, share = stack.pop()
        if isinstance(obj, StoredMatrix):
            obj = obj.stored
        if hasattr(obj, "nbytes") and hasattr(obj, "size"):
            if id(obj) not in seen:
                seen.add(id(obj))
                values, stored = values + int(obj.size * share), stored + int(obj.nbytes * share)
        elif isinstance(obj, tuple | list):
            stack.extend((o, share) for o in obj)
        elif hasattr(obj, "__dataclass_fields__"):
            share = fraction if isinstance(obj, ExpertWeights) else share
            stack.extend((getattr(obj, f), share) for f in obj.__dataclass_fields__)
    return values, stored


def machine() -> dict:
    import numpy

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(), "numpy": numpy.__version__}


def compile_times(threads: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        first = subprocess_json(["benchmarks.engines", "compile"], threads, {"NUMBA_CACHE_DIR": cache})
        second = subprocess_json(["benchmarks.engines", "compile"], threads, {"NUMBA_CACHE_DIR": cache})
    return {"first_use": first, "second_use": second}


def parameters(name: str) -> int:
    """Parameters of a benchmark config, counted from its tensor shapes (nothing is built)."""
    import numpy as np

    from benchmarks.configs import CONFIGS
    from weights_tools.random_checkpoint import expected_tensors

    return sum(int(np.prod(shape)) for shape in expected_tensors({**CONFIGS[name], "model_type": "gemma4_text"}).values())


def announce(configs: list[str], weights: str, keep: bool, bf16: bool = True, minutes: float | None = None) -> None:
    """What the run will write, where, how big, and whether it stays (and how long the default run takes)."""
    sizes = {name: parameters(name) for name in configs}
    copy = lambda n: f" + {2 * n / GB:.2f} GB bf16" if bf16 else ""  # noqa: E731
    parts = ", ".join(f"{name} ({n / 1e6:.1f}M parameters: {4 * n / GB:.2f} GB float32{copy(n)})" for name, n in sizes.items())
    fate = "kept" if keep else "removed at the end (--keep keeps them)"
    took = f" The default run takes about {minutes:g} minutes on an idle 2-core machine." if minutes else ""
    print(f"benchmark: random weights for {parts}, {(6 if bf16 else 4) * sum(sizes.values()) / GB:.1f} GB in all, "
          f"in {weights}; {fate}.{took}", flush=True)


def run_config(name: str, weights_dir: str, args) -> dict:
    path = os.path.join(weights_dir, name)
    if not os.path.exists(os.path.join(path, "config.json")):
        print(f"building random {name} weights in {path} ...", file=sys.stderr)
        code = f"from benchmarks.configs import build; build({name!r}, {path!r})"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)  # torch stays out of this process
    results = {}
    for key in ENGINES:
        print(f"{name}: {LABELS[key]} ...", file=sys.stderr)
        engine, model = ("kernels", bf16_copy(path, path + "-bf16")) if key == "kernels-bf16" else (key, path)
        results[key] = subprocess_json(
            ["benchmarks.engines", engine, model, "--prompt", str(args.prompt), "--new", str(args.new), "--threads", str(args.threads)],
            args.threads,
        )
    import minigemma

    values, stored = decode_values(minigemma.load(path, kernels=True))  # weights mapped, not copied
    return {"engines": results, "decode_values": values, "decode_stored_bytes": stored}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns as wide as their widest cell; text left-aligned, numbers right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells, numeric):
        return "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)) + " |"

    numeric = [bool(rows) and rows[0][i][:1].isdigit() for i in range(len(header))]
    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else "-" * (w + 2) for w, n in zip(widths, numeric)) + "|"
    return "\n".join([line(header, numeric), rule] + [line(r, numeric) for r in rows])


def print_table(runs: dict, bandwidth: float, args) -> None:
    print(f"\nprefill {args.prompt} tokens, decode {args.new} tokens (greedy), {args.threads} threads; "
          f"memory read rate {bandwidth:.1f} GB/s\n")
    header = ["config", "engine", "prefill tok/s", "decode tok/s", "peak RSS", "prefill vs torch", "decode vs torch", "decode / f32 roofline"]
    rows = []
    for name, run in runs.items():
        torch = run["engines"]["torch"]
        roofline = bandwidth * GB / (4 * run["decode_values"])  # float32 weights
        for engine in ENGINES:
            r = run["engines"][engine]
            rows.append([
                name, LABELS[engine], f"{r['prefill_tok_s']:.1f}", f"{r['decode_tok_s']:.1f}", f"{r['peak_rss'] / GB:.2f} GB",
                f"{r['prefill_tok_s'] / torch['prefill_tok_s']:.2f}x", f"{r['decode_tok_s'] / torch['decode_tok_s']:.2f}x",
                f"{r['decode_tok_s'] / roofline:.0%}",
            ])
    print(markdown_table(header, rows))
    print()
    for name, run in runs.items():
        e = run["engines"]
        same = sum(a == b for a, b in zip(e["kernels"]["tokens"], e["torch"]["tokens"]))
        twin = sum(a == b for a, b in zip(e["kernels"]["tokens"], e["numpy"]["tokens"]))
        print(
            f"{name}: a decode step reads {run['decode_values'] / 1e6:.1f}M weight values = "
            f"{4 * run['decode_values'] / GB:.2f} GB in float32 -> roofline {bandwidth * GB / (4 * run['decode_values']):.1f} tok/s "
            f"({bandwidth * GB / (2 * run['decode_values']):.1f} tok/s on bf16 weights); "
            f"greedy tokens equal to torch's: {same}/{len(e['torch']['tokens'])}, kernels = NumPy: {twin}/{len(e['numpy']['tokens'])}; "
            f"load s: " + ", ".join(f"{k} {v['load_s']:.1f}" for k, v in e.items())
            + "; first run s (kernels compile or cache read, page faults): "
            + ", ".join(f"{k} {v['first_run_s']:.1f}" for k, v in e.items())
        )


def print_compile(c: dict) -> None:
    first, second = c["first_use"], c["second_use"]
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in first["seconds"].items())
    print(f"\nNumba, first use (empty cache): {first['total_s']:.1f} s ({parts}), {first['compiled']} compilations; "
          f"second use (from the cache): {second['total_s']:.2f} s, {second['compiled']} compilations")


def print_sweep(rows: list) -> None:
    print("\nattention wall-clock time per prompt token (us) on small-e2b-like shapes, kernels unless marked twin:\n")
    keys = ["sliding_us", "sliding_ns_per_key", "sliding_twin_us", "global_us", "decode_sliding_us", "decode_global_us"]
    header = ["prompt", "sliding prefill", "same, ns per visible key", "sliding prefill, twin", "global prefill",
              "sliding decode step", "global decode step"]
    print(markdown_table(header, [[str(r["n"])] + [f"{r[k]:.1f}" if k in r else "-" for k in keys] for r in rows]))
    for key, what in (("sliding_us", "per token"), ("sliding_ns_per_key", "per visible key")):
        flat = max(r[key] for r in rows) / min(r[key] for r in rows)
        print(f"sliding prefill {what}, largest / smallest over the sweep: {flat:.2f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "small-e2b-like"])
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens to prefill")
    p.add_argument("--new", type=int, default=128, help="new tokens to decode")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sweep", type=int, nargs="+", default=[1024, 4096, 16384], help="prompt lengths of the attention sweep")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="skip measuring Numba's compile time")
    p.add_argument("--bandwidth-gib", type=float, default=1.0, help="GiB read by the bandwidth probe")
    add_weights_flags(p)
    args = p.parse_args(argv)
    return with_weights(args, args.configs, run, minutes=DEFAULT_RUN_MINUTES)


def add_weights_flags(p) -> None:
    p.add_argument("--weights", metavar="DIR", help="where the random weights live, kept and reused by later runs "
                   "(default: a fresh temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary weights directory (its path is printed)")


def with_weights(args, configs: list[str], body, bf16: bool = True, minutes: float | None = None) -> int:
    """Run `body(args)` with `args.weights` set: the given directory (kept), or a fresh temporary
    one, announced with what will be built in it and removed at the end unless --keep."""
    keep = args.keep or args.weights is not None
    if args.weights is None:
        args.weights = tempfile.mkdtemp(prefix="minigemma-bench-")
    announce(configs, args.weights, keep, bf16, minutes)
    try:
        return body(args)
    finally:
        if not keep:
            import shutil

            shutil.rmtree(args.weights, ignore_errors=True)
            print(f"removed {args.weights}", file=sys.stderr)


def run(args) -> int:

    report = {"machine": machine(), "args": vars(args)}
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
          + " ".join(f"{x:.2f}" for x in report["machine"]["load_average"]))
    probe = ["benchmarks.engines", "bandwidth", "--threads", str(args.threads), "--gib", str(args.bandwidth_gib)]
    report["bandwidth"] = subprocess_json(probe, args.threads)
    if not args.no_compile:
        report["compile"] = compile_times(args.threads)
    report["runs"] = {name: run_config(name, args.weights, args) for name in args.configs}
    if not args.no_sweep:
        report["sweep"] = subprocess_json(["benchmarks.sweep", "--lengths", *map(str, args.sweep)], args.threads)
    report["load_average_after"] = os.getloadavg()

    print_table(report["runs"], report["bandwidth"]["gb_s"], args)
    if "compile" in report:
        print_compile(report["compile"])
    if "sweep" in report:
        print_sweep(report["sweep"])
    print("\nload average after: " + " ".join(f"{x:.2f}" for x in report["load_average_after"]))
    os.makedirs(args.weights, exist_ok=True)
    with open(os.path.join(args.weights, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
