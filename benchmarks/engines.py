"""One engine, one process: load a checkpoint, prefill a prompt, decode greedily, report JSON.

    python -m benchmarks.engines ENGINE MODEL_DIR --prompt 512 --new 128 --threads 2

ENGINE: `kernels` (minigemma, Numba kernels), `numpy` (minigemma, NumPy only), `torch`
(transformers eager, float32); or, MODEL_DIR unused, `bandwidth` (the machine's memory read
rate) and `compile` (the first call of every kernel: compiling, or reading Numba's cache).
Each engine runs in a process of its own so that its peak RSS is its own; `run.py` starts them.
The thread count is fixed through the environment before NumPy, Numba or torch start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
# a short first run: compiles (or loads) kernels, faults pages in. Its prompt is longer than the
# decode GEMV's 8 rows (kernels/linear.GEMV_MAX_ROWS), so the prefill path's kernels load here too,
# not inside the timed prefill (which an 8-token warm-up left them to: 0.1-2 s of a 128-token prefill)
WARMUP_PROMPT, WARMUP_NEW = 24, 2


def peak_rss_bytes() -> int:
    """This process's own peak RSS: VmHWM, the high-water mark of its memory map. Not ru_maxrss,
    which Linux carries over from the parent at fork (exec keeps it): every engine process started
    by `benchmarks.run`, whose own RSS holds the random weights it built, reported ~3.2 GB however
    little it used itself (issue 16's "3.22 GB in the table, 1.65 GB by hand")."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux: the closest the platform offers
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class Minigemma:
    def __init__(self, path: str, kernels: bool | None):
        import minigemma

        self.model = minigemma.load(path, kernels=kernels)

    def prefill(self, ids):
        """As `generate` does: chunks of 512 tokens, the last token's logits only."""
        from minigemma.generate.loop import prefill

        self.cache = self.model.new_cache()
        return int(prefill(self.model, ids, self.cache).argmax())

    def step(self, token: int) -> int:
        import numpy as np

        return int(self.model.extend(np.array([token]), self.cache)[-1].argmax())


class Torch:
    def __init__(self, path: str, threads: int):
        import torch
        from transformers import Gemma4ForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = Gemma4ForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()

    def prefill(self, ids):
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.as_tensor(ids)[None], past_key_values=self.cache, use_cache=True,
                             logits_to_keep=1)  # as `generate` asks: also spares the KV-shared layers the prompt
        return int(out.logits[0, -1].argmax())

    def step(self, token: int) -> int:
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.tensor([[token]]), past_key_values=self.cache, use_cache=True)
        return int(out.logits[0, -1].argmax())


def generate(engine, ids, new: int) -> tuple[list[int], float, float]:
    """Greedy: prefill, then `new - 1` decode steps. Returns (tokens, prefill s, decode s)."""
    start = time.perf_counter()
    tokens = [engine.prefill(ids)]
    prefilled = time.perf_counter()
    for _ in range(new - 1):
        tokens.append(engine.step(tokens[-1]))
    return tokens, prefilled - start, time.perf_counter() - prefilled


def prompt(vocab: int, n: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(3, vocab, n)  # ids 0-2 are pad / eos / bos


def run_engine(name: str, path: str, n_prompt: int, n_new: int, threads: int) -> dict:
    start = time.perf_counter()
    engine = Torch(path, threads) if name == "torch" else Minigemma(path, kernels=name == "kernels")
    loaded = time.perf_counter()
    with open(os.path.join(path, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    generate(engine, prompt(vocab, WARMUP_PROMPT, seed=1), WARMUP_NEW)
    warm = time.perf_counter()
    tokens, prefill_s, decode_s = generate(engine, prompt(vocab, n_prompt), n_new)
    return {
        "engine": name,
        "load_s": loaded - start,
        "first_run_s": warm - loaded,  # includes compiling the kernels, or reading them from the cache
        "prefill_tok_s": n_prompt / prefill_s,
        "decode_tok_s": (n_new - 1) / decode_s,
        "peak_rss": peak_rss_bytes(),
        "tokens": tokens,
    }


def bandwidth(threads: int, gib: float = 1.0, repeats: int = 5) -> dict:
    """Best read rate over `repeats` sums of a `gib` GiB float32 array, with `threads` threads:
    what a bandwidth-bound GEMV can at best stream."""
    import numpy as np

    a = np.ones(int(gib * 2**30) // 4, np.float32)
    total = _parallel_sum()
    total(a)
    best = min(_timed(lambda: total(a)) for _ in range(repeats))
    return {"engine": "bandwidth", "gb_s": a.nbytes / best / 1e9, "peak_rss": peak_rss_bytes()}


def _parallel_sum():
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=True)
    def parallel_sum(a):
        s = np.float32(0.0)
        for i in prange(a.shape[0]):
            s += a[i]
        return s

    return parallel_sum


def compile_kernels() -> dict:
    """Time the first call of every kernel, on inputs of the types a model passes them (float32,
    int64 positions, read-only mapped bf16 bits): compilation, or a read of the on-disk cache."""
    import numpy as np

    from minigemma.kernels import backend
    from minigemma.text.moe import ExpertWeights
    from minigemma.text.ops import gelu_tanh

    kernels = backend(True)
    rng = np.random.default_rng(0)
    q, kv, pos = rng.standard_normal((3, 2, 4), dtype=np.float32), rng.standard_normal((3, 1, 4), dtype=np.float32), np.arange(3)
    w = ExpertWeights(rng.standard_normal((4, 6, 5), dtype=np.float32), rng.standard_normal((4, 5, 3), dtype=np.float32))
    x = rng.standard_normal((20, 5), dtype=np.float32)
    bits, w32 = rng.integers(0, 2**14, (7, 5)).astype(np.uint16), x[:7].copy()  # bf16 and float32 weights
    bits.setflags(write=False)  # read-only, as views of the mapped file are
    w32.setflags(write=False)
    index, weights = np.array([[0, 2]] * 20), np.ones((20, 2), np.float32)
    calls = {
        "attention": lambda: (kernels.attend(q, kv, kv, pos, pos, 2, True), kernels.attend(q[:1], kv, kv, pos[:1], pos, 2, True),
                              kernels.attend(q[:1], kv.astype(np.float16), kv.astype(np.float16), pos[:1], pos, 2, True)),
        "experts": lambda: (kernels.experts(x[:1], index[:1], weights[:1], w, gelu_tanh), kernels.experts(x, index, weights, w, gelu_tanh)),
        "linear": lambda: (kernels.linear(x[:1], bits), kernels.linear(x, bits), kernels.linear(x[:1], w32)),
    }
    seconds = {name: _timed(call) for name, call in calls.items()}
    misses = sum(sum(d.stats.cache_misses.values()) for d in _dispatchers())  # 0: nothing compiled
    return {"engine": "compile", "seconds": seconds, "total_s": sum(seconds.values()), "compiled": misses}


def _dispatchers():
    """Every cached Numba function of the kernels."""
    from numba.core.registry import CPUDispatcher

    from minigemma.kernels import decode_attention, linear, moe

    for module in (decode_attention, linear, moe):
        for value in vars(module).values():
            for d in value if isinstance(value, tuple) else (value,):
                if isinstance(d, CPUDispatcher):
                    yield d


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("engine", choices=["kernels", "numpy", "torch", "bandwidth", "compile"])
    p.add_argument("model", nargs="?", default="")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gib", type=float, default=1.0, help="bandwidth: GiB of float32 to read")
    args = p.parse_args(argv)
    if any(os.environ.get(v) != str(args.threads) for v in THREAD_VARIABLES):
        sys.exit(f"set {', '.join(THREAD_VARIABLES)}={args.threads} before starting (run.py does)")
    if args.engine == "bandwidth":
        result = bandwidth(args.threads, args.gib)
    elif args.engine == "compile":
        result = compile_kernels()
    else:
        result = run_engine(args.engine, args.model, args.prompt, args.new, args.threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
