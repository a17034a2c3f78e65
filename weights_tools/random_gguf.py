"""Write a random-weight Gemma 4 GGUF of a published size, straight to the file, one tensor at a time.

    python -m weights_tools.random_gguf OUT.gguf --shape e2b|e4b|26b-a4b|31b [--type Q4_0] [--head-type Q8_0]
                                        [--seed N] [--jobs N]

For the real-size rows of the benchmarks (`benchmarks/real_sizes.py`): does minigemma load and
decode the four Gemma 4 text models on a 24 GB machine, and how fast against the bandwidth roofline?
The 31B in float32 would be 124 GB and its bf16 checkpoint 62 GB, so nothing passes through a
Hugging Face checkpoint: each tensor is drawn with a seeded RNG a block of rows at a time,
quantized (Q4_0 / Q8_0 by `fast_quants`, bit for bit what `gguf.quants.quantize` -- the code
`minigemma quantize` uses -- writes, 3x faster; other types by `minigemma quantize`'s own
`gguf_write.quantize_rows`) and appended; the
largest thing in memory is one tensor's quantized bytes (the 31B's embedding: 1.5 GB in Q8_0).

The layout is `minigemma quantize`'s, i.e. llama.cpp's (`weights/gguf_write.py`: its metadata keys,
tensor names and per-tensor type rules are called, not copied): matrices in `--type`; 1-D tensors,
norms, the router and, under Q4_0 / Q5_x, `per_layer_model_proj` in F32 (llama-quantize's rules);
the PLE table (`per_layer_token_embd`) in `--type` like any matrix. `--type Q4_K_M` / `Q5_K_M`
write llama-quantize's mixes (`gguf_write_types`, head and PLE table in Q6_K included). Under the
32-value types the tied embedding, which is also the head, gets `--head-type`, Q8_0 by default:
llama-quantize stores it in Q6_K (`--head-type Q6_K`), which our writer could not write when the
benchmark rows below were measured (Q8_0 is 8.5 bits a weight against Q6_K's 6.56; the head is read
whole every token).

Values: matrices uniform with `random_checkpoint`'s standard deviation 0.02 (a uniform draw takes a
quarter of a normal's time, which was half the time of writing a file); norm weights 1 + N(0, 0.1)
and scalars (`layer_scalar`, router scales) 1, as `random_checkpoint` draws them. Each block of rows has its own generator, seeded by
(seed, tensor number, block number): the file is the same for any `--jobs`, and a test can draw a
tensor again (`drawn_values`) and compare it with what minigemma reads back.

The vocabulary is 262,144 placeholder pieces (`<pad> <eos> <bos> <unk>`, then `<unusedN>`): the
benchmarks feed token ids, so no text tokenizer is needed, but every size and id is the real one.

Where each shape comes from (the published `config.json`s of google/gemma-4-*; read here through
public code that quotes them, found with the search tools -- no file of Google's was fetched):

* E2B: `random_checkpoint.PRESETS["e2b"]` (hidden 1536, 35 layers, 8 heads, 1 KV head, head dim
  256 / global 512, intermediate 6144 double-wide on the 20 KV-shared layers, PLE 256, window 512,
  every 5th layer global), plus max_position_embeddings 131072.
* E4B: hidden 2560, 42 layers, intermediate 10240, 8 heads, 2 KV heads, head dim 256 / global 512,
  window 512, PLE 256 (table 262144 x 42*256), 18 KV-shared layers, every 6th layer global,
  max_position_embeddings 131072, softcap 30 -- quoted identically by two test suites pinning the
  published E4B (`EXPECTED_ARCHITECTURE` of an artifact builder; a Rust GGUF-metadata test that
  names it E4B). `use_double_wide_mlp`: false (the Rust test states it; a Spanish-language config
  summary lists it for E2B only). Global KV heads: none stated (= 2).
* 26B-A4B: hidden 2816, 30 layers, 16 heads, 8 KV heads, 2 global KV heads, head dim 256 / global
  512, intermediate 2112 (the dense MLP beside the experts), 128 experts top-8, moe_intermediate
  704, attention_k_eq_v true, window 1024, every 6th layer global, no PLE, no KV sharing,
  max_position_embeddings 262144 -- quoted identically by a Go MLX port's `TestParseTextConfig26B`,
  a Rust `Gemma4Config` sample and a Swift config fixture.
* 31B: hidden 5376, 60 layers, 32 heads, 16 KV heads, 4 global KV heads, head dim 256 / global
  512, intermediate 21504, attention_k_eq_v true, window 1024, every 6th layer global, dense, no
  PLE, no KV sharing, max_position_embeddings 262144 -- heads, KV heads, global KV heads and head
  dims from a vLLM-style runner test (`test_gemma4_31b_sets_heterogeneous_per_layer_shapes`), the
  intermediate size and window from a LoRA planner's `GEOMETRY` of Gemma-4-31B, k_eq_v from a model
  card of a 31B port ("full layers use num_global_key_value_heads 4 with attention_k_eq_v").
* All four: vocab 262144, final_logit_softcapping 30, rms_norm_eps 1e-6, tied embeddings, RoPE
  sliding theta 10k (default), global theta 1M proportional with partial_rotary_factor 0.25.
  Guessed: nothing but the values (random) and, for E4B, double-wide = false on one source's word.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from minigemma.errors import MinigemmaError
from minigemma.text.config import config_from_dict
from minigemma.weights import gguf_write
from minigemma.weights.gguf_write_types import TYPES, storage_types
from minigemma.weights.quants_k import K_QUANTIZERS
from weights_tools import fast_quants
from weights_tools.random_checkpoint import PRESETS, expected_tensors, published_dialect, random_values

VOCAB = 262144
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, as Gemma's vocabulary has them
CONTROL, UNUSED = 3, 5  # llama.cpp token types
ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
COMMON = {"model_type": "gemma4_text", "vocab_size": VOCAB, "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-6,
          "tie_word_embeddings": True, "rope_parameters": ROPE, "head_dim": 256, "global_head_dim": 512}


def every(n_layers: int, period: int) -> list[str]:
    """`period - 1` sliding layers, then a global one."""
    return ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n_layers)]


SHAPES = {  # the published text configs (module docstring: where each number comes from)
    "e2b": {**COMMON, **PRESETS["e2b"], "max_position_embeddings": 131072},
    "e4b": {
        **COMMON, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 42, "num_attention_heads": 8,
        "num_key_value_heads": 2, "sliding_window": 512, "hidden_size_per_layer_input": 256,
        "vocab_size_per_layer_input": VOCAB, "num_kv_shared_layers": 18, "use_double_wide_mlp": False,
        "max_position_embeddings": 131072, "layer_types": every(42, 6),
    },
    "26b-a4b": {
        **COMMON, "hidden_size": 2816, "intermediate_size": 2112, "num_hidden_layers": 30, "num_attention_heads": 16,
        "num_key_value_heads": 8, "num_global_key_value_heads": 2, "attention_k_eq_v": True, "sliding_window": 1024,
        "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0, "enable_moe_block": True, "num_experts": 128,
        "top_k_experts": 8, "moe_intermediate_size": 704, "max_position_embeddings": 262144, "layer_types": every(30, 6),
    },
    "31b": {
        **COMMON, "hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 60, "num_attention_heads": 32,
        "num_key_value_heads": 16, "num_global_key_value_heads": 4, "attention_k_eq_v": True, "sliding_window": 1024,
        "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0, "max_position_embeddings": 262144,
        "layer_types": every(60, 6),
    },
    # toy sizes of the same layouts, for tests and smoke runs
    "e2b-like": {**PRESETS["e2b-like"], "rope_parameters": ROPE},
    "a4b-like": {**PRESETS["a4b-like"], "rope_parameters": ROPE},
}
HEAD_TYPES = ("Q8_0", "Q6_K", "Q4_0", "F16", "F32")
HEAD = "token_embd.weight"  # the tied embedding: also the head
DEFAULT_HEAD = "Q8_0"  # under the 32-value 4/5-bit types (module docstring)
BLOCK_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")
LOG_VALUES = 1 << 27  # tensors this big get a progress line
STD = 0.02  # random_checkpoint's standard deviation of a matrix value
UNIFORM_WIDTH = STD * 12**0.5  # a uniform draw over this width has that standard deviation


def vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    pieces = list(SPECIALS) + [f"<unused{i}>" for i in range(size - len(SPECIALS))]
    return pieces, [0.0] * size, [CONTROL] * len(SPECIALS) + [UNUSED] * (size - len(SPECIALS))


def plan(gguf, config: dict, type_name: str, head_type: str | None) -> tuple[list[gguf_write.PlannedTensor], object]:
    """(every tensor of the file in writing order, the parsed text config). Types: `minigemma
    quantize`'s rules for `type_name` (`gguf_write_types.storage_types`), the tied head in
    `head_type` when given. A tensor's `source` is its Hugging Face name."""
    cfg = config_from_dict(config).text
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, cfg.num_hidden_layers)
    shapes = [(gguf_write.gguf_name(names, source, "gemma4"), source, shape) for source, shape in expected_tensors(config).items()]
    kinds = storage_types([(name, shape) for name, _, shape in shapes], type_name, cfg.num_hidden_layers,
                          int(config.get("num_experts") or 0))
    Q = gguf.GGMLQuantizationType
    tensors = [gguf_write.rope_freqs(gguf, config, cfg)]
    for (name, source, shape), kind in zip(shapes, kinds):
        kind = head_type if name == HEAD and head_type else kind
        tensors.append(gguf_write.PlannedTensor(name, source, shape, Q[kind]))
    return tensors, cfg


def chunk_rows(t: gguf_write.PlannedTensor) -> int:
    """Rows drawn (and seeded) together: as many as `minigemma quantize` quantizes at a time."""
    values = gguf_write.K_CHUNK_VALUES if t.qtype.name in K_QUANTIZERS else gguf_write.CHUNK_VALUES
    return max(1, values // t.shape[-1])


def drawn_values(t: gguf_write.PlannedTensor, number: int, chunk: int, seed: int) -> np.ndarray:
    """Rows chunk*R .. (chunk+1)*R of tensor `number` (its place in the file) as float32 (rows, cols);
    a 1-D tensor is one row."""
    cols, rows = t.shape[-1], int(np.prod(t.shape[:-1], dtype=np.int64))
    step = chunk_rows(t)
    n = min(step, rows - chunk * step)
    rng = np.random.default_rng([seed, number, chunk])
    if len(t.shape) == 1:  # norm weights, scalars: as random_checkpoint draws them
        return random_values(t.source, (cols,), rng).reshape(1, cols)
    # matrices: uniform, of random_checkpoint's standard deviation (a uniform draw takes a quarter
    # of a normal's time, which was half of writing the file)
    return (rng.random((n, cols), dtype=np.float32) - np.float32(0.5)) * np.float32(UNIFORM_WIDTH)


def tensor_values(t: gguf_write.PlannedTensor, number: int, seed: int) -> np.ndarray:
    """The whole tensor as drawn (float32, its shape): for tests, on small shapes."""
    if t.source is None:
        return t.values
    rows = int(np.prod(t.shape[:-1], dtype=np.int64))
    chunks = -(-rows // chunk_rows(t))
    return np.concatenate([drawn_values(t, number, c, seed) for c in range(chunks)]).reshape(t.shape)


def _stored_chunk(args) -> bytes:
    t, number, chunk, seed = args
    values = drawn_values(t, number, chunk, seed)
    if t.qtype.name in fast_quants.KERNELS:  # the same bytes as gguf.quants, faster
        return fast_quants.quantize(values, t.qtype.name).tobytes()
    import gguf

    return gguf_write.quantize_rows(gguf, values, t.qtype).tobytes()  # K-quants: minigemma quantize's own


def stored(gguf, t: gguf_write.PlannedTensor, number: int, seed: int, pool) -> np.ndarray:
    """The tensor as the file stores it, (rows, bytes per row) uint8, made a chunk of rows at a time."""
    rows = int(np.prod(t.shape[:-1], dtype=np.int64)) if len(t.shape) > 1 else 1
    out = np.empty((rows, gguf_write.nbytes(gguf, t) // rows), np.uint8)
    if t.source is None:
        out[:] = gguf.quants.quantize(t.values.reshape(rows, -1), t.qtype).view(np.uint8).reshape(rows, -1)
        return out
    step = chunk_rows(t)
    jobs = [(t, number, c, seed) for c in range(-(-rows // step))]
    for c, data in enumerate(pool.map(_stored_chunk, jobs) if pool else map(_stored_chunk, jobs)):
        part = out[c * step : (c + 1) * step]
        part[:] = np.frombuffer(data, np.uint8).reshape(part.shape)
    return out


def write_random_gguf(out: str, config: dict, type_name: str = "Q4_0", head_type: str | None = "Q8_0", seed: int = 0,
                      jobs: int = 1, log=None, name: str = "gemma4") -> list[gguf_write.PlannedTensor]:
    """Write `config` (a Gemma 4 text config.json dict) as a random GGUF at `out`; return its plan."""
    gguf = gguf_write.require_gguf()
    config = published_dialect(config)
    tensors, cfg = plan(gguf, config, type_name, head_type)
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    with gguf_write.quiet_gguf():
        w = gguf.GGUFWriter(os.fspath(out), "gemma4")
        try:
            for t in tensors:
                w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), gguf_write.nbytes(gguf, t), raw_dtype=t.qtype)
            add_metadata(gguf, w, config, cfg, type_name, name)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            start = time.perf_counter()
            for number, t in enumerate(tensors):
                w.write_tensor_data(stored(gguf, t, number, seed, pool))
                if log and int(np.prod(t.shape)) >= LOG_VALUES:
                    log(f"  {t.name} {list(t.shape)} {t.qtype.name} ({time.perf_counter() - start:.0f} s)")
        finally:
            w.close()
            if pool:
                pool.shutdown()
    return tensors


def add_metadata(gguf, w, config: dict, cfg, type_name: str, name: str) -> None:
    """`minigemma quantize`'s keys for the architecture, and the placeholder vocabulary."""
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"random {name}")
    gguf_write.add_arch_keys(gguf, w, config, cfg, "gemma4", gguf_write.file_type(gguf, type_name))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    pieces, scores, types = vocabulary(config["vocab_size"])
    w.add_tokenizer_model("gemma4")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    pad, eos, bos, unk = range(len(SPECIALS))
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(pad)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.random_gguf", description=__doc__.split("\n")[0])
    p.add_argument("out", help="the .gguf file to write")
    p.add_argument("--shape", choices=sorted(SHAPES), default="e2b")
    p.add_argument("--type", default="Q4_0", choices=[t for t in TYPES if t != "BF16"],
                   help="as `minigemma quantize --type` (default Q4_0; Q4_K_M: llama-quantize's mix, head included)")
    p.add_argument("--head-type", default=None, choices=HEAD_TYPES,
                   help="the tied embedding / head (default: Q8_0 under Q4_0 .. Q5_1, the type's own rule otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="processes quantizing at once (the file is the same for any)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        head = args.head_type or (DEFAULT_HEAD if args.type in BLOCK_TYPES else None)
        write_random_gguf(args.out, SHAPES[args.shape], args.type, head, args.seed, args.jobs,
                          log=lambda s: print(s, file=sys.stderr), name=args.shape)
    except (ValueError, MinigemmaError) as e:
        print(f"random_gguf: error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: random {args.shape}, {args.type}, {size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
