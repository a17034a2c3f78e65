"""Fixtures for the K-quant writer: blocks and files made by llama.cpp's own `llama-quantize`.

tests/data/kquant_llama_blocks.npz: `values` (24, 256) float32, one Q4_K / Q5_K / Q6_K super-block
a row, drawn to reach every branch of ggml's quantizers (`ROW_KINDS`: typical, tiny, huge, constant,
all-zero, all-positive, sparse, outliers, ties on a grid, float16 underflow of the block scale, ...),
and `Q4_K`, `Q5_K`, `Q6_K` (24, block bytes) uint8: what llama-quantize wrote for them. Made by
putting the rows into `blk.0.attn_q.weight` of a small Gemma 3 F32 GGUF (written by
`minigemma quantize --type F32`, whose F32 output equals llama.cpp's converter's), then
`llama-quantize --pure F32.gguf out.gguf Q4_K_M | Q5_K_M | Q6_K` (--pure: every matrix in the
mix's base type), llama.cpp as vendored in llama-cpp-python 0.3.36, and reading the rows back.

tests/data/gguf_llama_quantize_k_listings.json: `K_CASES`, two small random checkpoints whose
rows are whole 256-value blocks (Gemma 4 with every switch, Gemma 3 with 10 layers), and
`NARROW_CASES` (gguf_write_fixtures.CASES whose rows are too short: the fallbacks) and `DEEP`
(E2B's 35-layer plan at hidden 32, where each Q6_K choice shows as its fallback), and the
listings (gguf_write_fixtures.listing: every key, every tensor's type, shape and sha256) of what
llama-quantize made of the converter's F32 file in Q4_K_M, Q5_K_M and Q6_K.

To make both again (needs torch, the llama.cpp sources and a built llama-quantize):

    python tests/kquant_fixtures.py /path/to/llama.cpp /path/to/llama-quantize
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf_write_fixtures import GEMMA3_TOKENIZER, GEMMA4, GEMMA4_TOKENIZER, GLOBAL, SLIDING, TINY, dump_listings, fill, listing, write_case

HERE = Path(__file__).resolve().parent
BLOCKS = HERE / "data" / "kquant_llama_blocks.npz"
K_LISTINGS = HERE / "data" / "gguf_llama_quantize_k_listings.json"
K_FILE_TYPES = ("Q4_K_M", "Q5_K_M", "Q6_K")
HOST_TENSOR = "blk.0.attn_q.weight"  # (256, 256) in the host file: its first rows carry the drawn blocks

GEMMA4_K = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=5, num_attention_heads=2,
    num_key_value_heads=1, head_dim=128, global_head_dim=256, attention_k_eq_v=True,
    layer_types=[SLIDING, SLIDING, GLOBAL, SLIDING, GLOBAL], sliding_window=16, num_kv_shared_layers=2,
    use_double_wide_mlp=True, hidden_size_per_layer_input=256, vocab_size_per_layer_input=4096,
    final_logit_softcapping=30.0, rms_norm_eps=1e-6, enable_moe_block=True, num_experts=4, top_k_experts=2,
    moe_intermediate_size=256,
    rope_parameters={SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                     GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}},
)
GEMMA3_K = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=10, num_attention_heads=2,
    num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=16, rms_norm_eps=1e-6,
    sliding_window_pattern=6,  # as the real 270M: transformers' GGUF reader assumes 256 and no RoPE scaling
    rope_parameters={SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                     GLOBAL: {"rope_type": "default", "rope_theta": 1e6}},
)
K_CASES = {"gemma4_k": ("gemma4", 21), "gemma3_k": ("gemma3", 22)}  # case -> (family, seed)
NARROW_CASES = ("gemma4", "gemma3")  # gguf_write_fixtures' cases, hidden 32: every K row falls back
# E2B's layer plan (35 layers, 4 sliding : 1 global, the last 20 KV-shared, no MoE, no k_eq_v) at
# hidden 32: a Q6_K choice shows as its fallback Q8_0, so the mixes' layer rule is seen on 35 layers
DEEP = {**GEMMA4, "num_hidden_layers": 35, "layer_types": ([SLIDING] * 4 + [GLOBAL]) * 7, "num_kv_shared_layers": 20,
        "enable_moe_block": False, "attention_k_eq_v": False, "num_global_key_value_heads": None}
DEEP_CASE, DEEP_SEED = "gemma4_deep", 23


def write_k_case(case: str, root, layers: int | None = None) -> Path:
    """Save a K case's checkpoint (float32 weights from `fill`, config, tokenizer) as `root/case`
    (`root/case-{layers}` with only `layers` layers)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Gemma4ForCausalLM, Gemma4TextConfig

    family, seed = K_CASES[case]
    config = {**(GEMMA4_K if family == "gemma4" else GEMMA3_K), **({"num_hidden_layers": layers} if layers else {})}
    model = Gemma4ForCausalLM(Gemma4TextConfig(**config)) if family == "gemma4" else Gemma3ForCausalLM(Gemma3TextConfig(**config))
    out = Path(root) / (f"{case}-{layers}" if layers else case)
    fill(model, seed).save_pretrained(out)
    for file in GEMMA4_TOKENIZER if family == "gemma4" else GEMMA3_TOKENIZER:
        shutil.copy(TINY / file, out / file)
    return out


def case_file_types(case: str) -> tuple[str, ...]:
    return K_FILE_TYPES[:2] if case == DEEP_CASE else K_FILE_TYPES  # the deep case: the mixes


def write_deep_case(root) -> Path:
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    out = Path(root) / DEEP_CASE
    fill(Gemma4ForCausalLM(Gemma4TextConfig(**DEEP)), DEEP_SEED).save_pretrained(out)
    for file in GEMMA4_TOKENIZER:
        shutil.copy(TINY / file, out / file)
    return out


def row_kinds(rng) -> dict[str, np.ndarray]:
    """24 super-blocks of 256 values, each meant to reach a branch of the quantizers."""
    n = lambda scale=1.0: (rng.standard_normal(256) * scale).astype(np.float32)  # noqa: E731
    grid = (rng.integers(-8, 8, 256) * 0.25).astype(np.float32)
    outlier = n()
    outlier[37] = 40.0
    sparse = n() * (rng.random(256) < 0.1)
    split = np.concatenate([np.zeros(128, np.float32), n()[:128]])
    mixed = n()
    mixed[64:96] = -0.3  # a constant negative sub-block among normal ones
    scales = np.repeat(10.0 ** rng.integers(-4, 3, 16), 16).astype(np.float32)  # sub-blocks of very different sizes
    return {
        "normal": n(), "normal_1e-2": n(1e-2), "normal_1e3": n(1e3), "normal_1e-4": n(1e-4),
        "positive": (0.5 + rng.random(256)).astype(np.float32), "negative": -(0.5 + rng.random(256)).astype(np.float32),
        "constant": np.full(256, 0.7, np.float32), "zeros": np.zeros(256, np.float32),
        "fp16_underflow_1e-9": n(1e-9), "below_eps_1e-20": n(1e-20), "huge_1e4": n(1e4),
        "cauchy": rng.standard_cauchy(256).astype(np.float32), "sparse": sparse.astype(np.float32), "outlier": outlier,
        "sub_block_scales": n() * scales, "grid_ties": grid, "half_zero": split, "constant_sub_block": mixed,
        "alternating": np.tile(np.float32([1, -1]), 128), "ramp": np.exp(np.linspace(-6, 3, 256)).astype(np.float32),
        "normal_a": n(), "normal_b": n(0.05), "uniform": (rng.random(256) * 2 - 1).astype(np.float32),
        "positive_ramp": np.linspace(0, 1, 256, dtype=np.float32),
    }


def capture_blocks(llama_quantize: str) -> None:
    import gguf

    values = np.stack(list(row_kinds(np.random.default_rng(15)).values()))  # (24, 256)
    found = {"values": values}
    with tempfile.TemporaryDirectory() as tmp:
        src = write_k_case("gemma3_k", tmp)
        host = Path(tmp) / "host.F32.gguf"
        subprocess.run([sys.executable, "-m", "minigemma", "quantize", str(src), str(host), "--type", "F32"], check=True)
        reader = gguf.GGUFReader(host, "r+")
        tensor = next(t for t in reader.tensors if t.name == HOST_TENSOR)
        tensor.data[: len(values)] = values
        reader.data.flush()
        del reader, tensor
        for file_type in K_FILE_TYPES:
            out = Path(tmp) / f"out.{file_type}.gguf"
            subprocess.run([llama_quantize, "--pure", str(host), str(out), file_type], check=True, capture_output=True)
            t = next(t for t in gguf.GGUFReader(out).tensors if t.name == HOST_TENSOR)
            found[t.tensor_type.name] = np.asarray(t.data)[: len(values)].copy()
    np.savez_compressed(BLOCKS, **found)


def capture_listings(converter_dir: str, llama_quantize: str) -> None:
    found = {"converter": "convert_hf_to_gguf.py (f32), then llama-quantize, of llama.cpp as vendored in llama-cpp-python 0.3.36",
             "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case in (*K_CASES, *NARROW_CASES, DEEP_CASE):
            src = write_k_case(case, tmp) if case in K_CASES else write_deep_case(tmp) if case == DEEP_CASE else write_case(case, tmp)
            f32 = Path(tmp) / f"{case}.F32.gguf"
            subprocess.run([sys.executable, "convert_hf_to_gguf.py", str(src), "--outfile", str(f32), "--outtype", "f32"],
                           cwd=converter_dir, check=True, capture_output=True)
            for file_type in case_file_types(case):
                out = Path(tmp) / f"{case}.{file_type}.gguf"
                subprocess.run([llama_quantize, str(f32), str(out), file_type], check=True, capture_output=True)
                found["cases"][f"{case}/{file_type}"] = listing(out)
    K_LISTINGS.write_text(dump_listings(found))


def load_blocks() -> dict[str, np.ndarray]:
    with np.load(BLOCKS) as data:
        return {k: data[k] for k in data.files}


if __name__ == "__main__":
    if "--listings-only" not in sys.argv:
        capture_blocks(sys.argv[2])
    capture_listings(sys.argv[1], sys.argv[2])
    print(json.dumps({k: list(v.shape) for k, v in load_blocks().items()}))
