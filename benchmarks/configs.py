"""The benchmark configs, as `transformers.Gemma4TextConfig` keyword arguments, and the random
weights every engine of a run reads (built by the reference itself, saved with `save_pretrained`).

* `tiny`: a small MoE model, where Python overhead per token, not FLOPs, decides the speed;
* `small-e2b-like`: E2B's layer shapes (hidden 1536, 8 heads, 1 KV head, head dims 256 / 512,
  window 512, PLE 256, double-wide MLP on the 4 KV-shared layers) on 12 layers (the default 5:1
  pattern) and a 32k vocab: 713.4M parameters, 2.85 GB in float32, bandwidth-bound when decoding.
"""

from __future__ import annotations

import json
import os

SLIDING, GLOBAL = "sliding_attention", "full_attention"


def default_layer_types(n: int) -> list[str]:
    """`Gemma4TextConfig`'s default 5:1 pattern: five sliding layers, then a global one (the last
    layer is always global)."""
    return [GLOBAL if (i + 1) % 6 == 0 or i == n - 1 else SLIDING for i in range(n)]


def global_layers(layer_types, head_dim: int, kv_heads: int) -> dict:
    """`per_layer_config` giving global layers their own head dim and KV heads (the published
    `num_global_key_value_heads` only applies with `attention_k_eq_v`)."""
    return {str(i): {"head_dim": head_dim, "num_key_value_heads": kv_heads} for i, t in enumerate(layer_types) if t == GLOBAL}


TINY_TYPES, SMALL_TYPES = default_layer_types(6), default_layer_types(12)
CONFIGS = {
    "tiny": dict(
        vocab_size=4096, vocab_size_per_layer_input=4096, hidden_size=256, intermediate_size=1024,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        layer_types=TINY_TYPES, per_layer_config=global_layers(TINY_TYPES, 128, 1), sliding_window=128,
        hidden_size_per_layer_input=64, enable_moe_block=True, num_experts=8, top_k_experts=2,
        moe_intermediate_size=256, final_logit_softcapping=30.0,
    ),
    "small-e2b-like": dict(
        vocab_size=32768, vocab_size_per_layer_input=32768, hidden_size=1536, intermediate_size=6144,
        num_hidden_layers=12, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
        layer_types=SMALL_TYPES, per_layer_config=global_layers(SMALL_TYPES, 512, 1), sliding_window=512,
        hidden_size_per_layer_input=256, num_kv_shared_layers=4, use_double_wide_mlp=True,
        final_logit_softcapping=30.0,
    ),
}


def build(name: str, out: str, seed: int = 0) -> str:
    """Random weights for config `name` in `out` (float32 safetensors + config.json); kept if
    already there, so every engine and every later run reads the very same weights."""
    marker = os.path.join(out, "config.json")
    if os.path.exists(marker):
        return out
    import torch
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    torch.manual_seed(seed)
    config = Gemma4TextConfig(**CONFIGS[name])
    model = Gemma4ForCausalLM(config).eval()
    model.save_pretrained(out)  # float32, the dtype the reference built it in
    with open(os.path.join(out, "benchmark.json"), "w") as f:
        json.dump({"config": name, "seed": seed, "parameters": sum(p.numel() for p in model.parameters())}, f)
    return out


def bf16_copy(src: str, dst: str) -> str:
    """The same weights rounded to bf16 (NumPy only, a tensor at a time): what a published
    checkpoint looks like, for the kernels' GEMV that reads bf16 directly."""
    import shutil

    from minigemma.weights.checkpoint import Checkpoint, write_safetensors

    if os.path.exists(os.path.join(dst, "config.json")):
        return dst
    os.makedirs(dst, exist_ok=True)
    ckpt = Checkpoint(src)
    tensors = {name: (ckpt.refs[name].shape, lambda n=name: ckpt.raw(n)) for name in ckpt.names()}
    write_safetensors(os.path.join(dst, "model.safetensors"), tensors, {"format": "pt"}, dtype="BF16")
    shutil.copy(os.path.join(src, "config.json"), dst)  # last: its presence says the copy is whole
    return dst
