"""The fused quantized GEMV, type by type: ms per product and GB/s of weights read, next to a
float32 BLAS GEMV of the same shape (and the machine's read rate, the roofline).

    python -m benchmarks.quant_gemv                       # E2B-like shapes, every type
    python -m benchmarks.quant_gemv --shapes 256x1024 --types Q4_0,Q4_K --repeats 3   # small

Decoding is a GEMV per weight matrix, bound by the bytes it reads: the row "GB/s" is the stored
bytes of the matrix over the time, so a type at the roofline's GB/s is as fast as the memory
allows, and its speed-up over float32 is at most 4 bytes / its bytes per weight. Also the
prefill path (`--prefill N` rows of x: block-wise dequantize into BLAS) against float32 BLAS.
Random blocks (valid scales, random packed values); prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.engines import bandwidth
from minigemma.kernels import quant
from minigemma.kernels.threads import idle_core
from minigemma.weights.quants import GGML_TYPES, TYPE_IDS, row_bytes

E2B_SHAPES = ["2048x1536", "1536x2048", "6144x1536", "1536x6144", "2048x8192", "8192x2048"]  # (rows, cols): q/o, MLP
TYPES = ["F32", "BF16", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
HALF_BYTES = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def random_blocks(type_name: str, rows: int, cols: int, rng) -> np.ndarray:
    """Random bytes, with every float16 field (the block scales) a small finite number."""
    type_id = TYPE_IDS[type_name]
    if type_name in ("F32", "F16", "BF16"):
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        values = {"F32": w, "F16": w.astype("<f2"), "BF16": (w.view(np.uint32) >> 16).astype("<u2")}[type_name]
        return values.view(np.uint8).reshape(rows, -1)
    t = GGML_TYPES[type_id]
    raw = rng.integers(0, 256, (rows, row_bytes(type_id, cols)), dtype=np.uint8)
    blocks = raw.reshape(rows, -1, t.block_bytes)
    for o in HALF_BYTES[type_name]:
        scales = rng.uniform(0.001, 0.01, blocks.shape[:2]).astype("<f2")
        blocks[..., o : o + 2] = scales.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return raw


def best_ms(fn, repeats: int) -> float:
    fn()  # compile, or read the kernel cache; page in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(E2B_SHAPES), help="comma-separated ROWSxCOLS")
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--prefill", type=int, default=64, help="rows of x for the prefill column (0: skip)")
    p.add_argument("--bandwidth-gib", type=float, default=0.5, help="array read to measure the roofline (0: skip)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    types = args.types.split(",")
    print(f"idle core for the parallel kernels: {idle_core(int(time.monotonic()))}")
    if args.bandwidth_gib:
        roof = bandwidth(2, args.bandwidth_gib)["gb_s"]
        print(f"memory read rate (2 threads, the roofline): {roof:.1f} GB/s")
    print("| shape | type | bytes/weight | GEMV ms | GB/s | vs f32 BLAS | prefill ms (n=%d) | vs f32 BLAS |" % args.prefill)
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for rows, cols in shapes:
        x1 = rng.standard_normal((1, cols), dtype=np.float32)
        xn = rng.standard_normal((max(args.prefill, 1), cols), dtype=np.float32)
        w32 = rng.standard_normal((rows, cols), dtype=np.float32)
        blas_ms = best_ms(lambda: x1 @ w32.T, args.repeats)
        blas_prefill_ms = best_ms(lambda: xn @ w32.T, args.repeats) if args.prefill else float("nan")
        for name in types:
            type_id = TYPE_IDS[name]
            raw = random_blocks(name, rows, cols, rng)
            ms = best_ms(lambda: quant.linear(x1, raw, type_id, cols), args.repeats)
            pre = best_ms(lambda: quant.linear(xn, raw, type_id, cols), args.repeats) if args.prefill else float("nan")
            r = {"rows": rows, "cols": cols, "type": name, "bytes_per_weight": raw.nbytes / (rows * cols),
                 "gemv_ms": ms, "gb_s": raw.nbytes / ms / 1e6, "f32_blas_ms": blas_ms,
                 "prefill_ms": pre, "f32_blas_prefill_ms": blas_prefill_ms}
            results.append(r)
            print(f"| {rows}x{cols} | {name} | {r['bytes_per_weight']:.3f} | {ms:.3f} | {r['gb_s']:.1f} | "
                  f"{blas_ms / ms:.2f}x | {pre:.2f} | {blas_prefill_ms / pre:.2f}x |")
    print(json.dumps({"quant_gemv": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
