"""The decode GEMV per weight shape: OpenBLAS against the Numba kernel, float32 and bf16 weights.

    python -m benchmarks.gemv                         # tiny, small-e2b-like, E2B shapes
    python -m benchmarks.gemv --configs tiny --repeats 5

A decode step multiplies one token's vector (1, in) by every weight matrix (out, in): a GEMV,
bound by the bytes of the weights. `kernels/linear.py` sends each product to OpenBLAS (`x @ W.T`,
float32 weights only) or to its Numba GEMV (float32, or bf16 read as stored), serial or parallel,
by the shape alone. This prints, for every distinct matrix shape of a config's decode step (from
`weights_tools.random_checkpoint.expected_tensors`; the expert stacks go through
`kernels/moe.py` and are left out), the wall-clock time of each candidate and the one the
rule in `kernels/linear.py` picks.

How it is timed, so that the figures resemble a decode step rather than a cache benchmark:

* each candidate streams through enough copies of the matrix that even the bf16 ones exceed the
  last-level cache (`STREAM_BYTES`, up to `MAX_COPIES`), as a decode step streams ~a hundred
  different matrices; the time is per matrix;
* the candidates of one shape run interleaved, round after round, and each keeps its least time
  (`--repeats` rounds): on a shared machine a busy moment then hits every candidate alike, and
  the least time is the one least disturbed;
* wall clock, threads included (2 by default: `NUMBA_NUM_THREADS` / `OPENBLAS_NUM_THREADS`).

bf16 weights cannot go to OpenBLAS as stored; their row shows the GEMV on bf16 beside OpenBLAS on
the same weights widened to float32 (what widening at load, the NumPy-only path, costs).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

STREAM_BYTES = 96 << 20  # bf16 bytes streamed per round: past any last-level cache here (Zen 4: 32 MB)
MAX_COPIES = 64


def decode_shapes(config: dict) -> dict[tuple[int, int], list[str]]:
    """(out, in) -> the names of the 2-D matrices of that shape a decode step multiplies by one
    row through `kernels/linear.py`: every projection, and the tied head (the token tables are
    only looked up; the MoE router's few rows are loaded as a plain float32 array, `moe.py`)."""
    from weights_tools.random_checkpoint import expected_tensors

    shapes: dict[tuple[int, int], list[str]] = {}
    for name, shape in expected_tensors(config).items():
        if len(shape) != 2 or "embed_tokens_per_layer" in name or ".router." in name:
            continue
        short = "head (tied)" if name.endswith("embed_tokens.weight") else name.split(".")[-2]
        shapes.setdefault(tuple(shape), [])
        if short not in shapes[tuple(shape)]:
            shapes[tuple(shape)].append(short)
    return dict(sorted(shapes.items(), key=lambda kv: kv[0][0] * kv[0][1]))


def config_dicts(names) -> dict[str, dict]:
    from benchmarks.configs import CONFIGS
    from weights_tools.random_checkpoint import PRESETS

    table = {name: dict(CONFIGS[name], model_type="gemma4_text") for name in CONFIGS}
    table["e2b"] = dict(PRESETS["e2b"])
    return {name: table[name] for name in names}


def candidates(shape, rng):
    """name -> (call on copy i, number of copies) for float32 and bf16 weights of `shape`."""
    from minigemma.kernels.linear import GEMV
    from minigemma.weights.checkpoint import f32_to_bf16 as to_bf16_bits

    out_dim, in_dim = shape
    copies = int(min(MAX_COPIES, max(1, -(-STREAM_BYTES // (out_dim * in_dim * 2)))))  # the bf16 copies too
    w32 = [rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(in_dim)) for _ in range(copies)]
    w16 = [to_bf16_bits(w) for w in w32]
    x = rng.standard_normal((1, in_dim), np.float32)
    out = np.empty((1, out_dim), np.float32)
    serial, parallel = GEMV
    return x, {
        "f32 BLAS": lambda i: x @ w32[i].T,
        "f32 GEMV serial": lambda i: serial(x, w32[i], out),
        "f32 GEMV parallel": lambda i: parallel(x, w32[i], out),
        "bf16 GEMV serial": lambda i: serial(x, w16[i], out),
        "bf16 GEMV parallel": lambda i: parallel(x, w16[i], out),
    }, copies, (w32, w16)


def time_shape(shape, repeats: int, rng) -> dict[str, float]:
    """Least seconds per matrix of each candidate, interleaved round by round."""
    x, calls, copies, weights = candidates(shape, rng)
    best = {name: np.inf for name in calls}
    for call in calls.values():
        call(0)  # compile / read the Numba cache, warm BLAS
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for i in range(copies):
                call(i)
            best[name] = min(best[name], (time.perf_counter() - start) / copies)
    check_equal(x, weights)
    return best


def check_equal(x, weights) -> None:
    """The GEMV computes what BLAS does (same float32 products, another order)."""
    from minigemma.kernels.linear import linear
    from minigemma.weights.checkpoint import bf16_to_f32 as bf16_to_float32

    w32, w16 = weights[0][0], weights[1][0]
    np.testing.assert_allclose(linear(x, w32), x @ w32.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(linear(x, w16), x @ bf16_to_float32(w16).T, rtol=1e-4, atol=1e-4)


def picked(shape, dtype) -> str:
    """What `kernels/linear.py` runs for one row times weights of `shape` stored as `dtype`."""
    from minigemma.kernels.linear import gemv_choice

    return gemv_choice(1, shape, dtype)


def main(argv=None) -> int:
    from benchmarks.run import markdown_table

    p = argparse.ArgumentParser(prog="python -m benchmarks.gemv", description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "small-e2b-like", "e2b"])
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds; each candidate keeps its least time")
    p.add_argument("--max-values", type=float, default=1e9,
                   help="skip matrices with more values than this (E2B's tied head is 403M)")
    args = p.parse_args(argv)
    import os

    rng = np.random.default_rng(0)
    print(f"GEMV, one row x (out, in) weights, microseconds per matrix (least of {args.repeats} interleaved rounds, "
          f"streamed past the cache); threads: Numba {os.environ.get('NUMBA_NUM_THREADS', 'all')}, "
          f"OpenBLAS {os.environ.get('OPENBLAS_NUM_THREADS', 'all')}; load average {os.getloadavg()[0]:.2f}\n")
    header = ["config", "out x in", "what", "f32 BLAS", "f32 GEMV serial", "f32 GEMV parallel", "f32 picks",
              "bf16 GEMV serial", "bf16 GEMV parallel", "bf16 picks", "f32 GB/s (picked)", "bf16 GB/s (picked)"]
    timed: dict[tuple[int, int], dict] = {}
    rows = []
    for name, config in config_dicts(args.configs).items():
        for shape, what in decode_shapes(config).items():
            if shape[0] * shape[1] > args.max_values:
                continue
            if shape not in timed:
                timed[shape] = time_shape(shape, args.repeats, rng)
            t = timed[shape]
            f32, b16 = picked(shape, np.float32), picked(shape, np.uint16)
            f32_s, b16_s = t[f"f32 {f32}"], t[f"bf16 {b16}"]
            rows.append([name, f"{shape[0]} x {shape[1]}", ", ".join(what)]
                        + [f"{1e6 * t[k]:.1f}" for k in ("f32 BLAS", "f32 GEMV serial", "f32 GEMV parallel")]
                        + [f32] + [f"{1e6 * t[k]:.1f}" for k in ("bf16 GEMV serial", "bf16 GEMV parallel")] + [b16]
                        + [f"{shape[0] * shape[1] * 4 / f32_s / 1e9:.1f}", f"{shape[0] * shape[1] * 2 / b16_s / 1e9:.1f}"])
    print(markdown_table(header, rows))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
