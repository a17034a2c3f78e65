"""Write a random Gemma 4 checkpoint in Hugging Face layout, with NumPy only (no torch).

    python -m weights_tools.random_checkpoint OUT_DIR [--preset tiny|e2b|e2b-like|a4b-like] [--config CONFIG.json]
                                              [--dtype bf16|f32|f16] [--seed N] [--kv-on-shared]

The tensor names and shapes come from minigemma's own loader (`expected_tensors`), run against a
recorder instead of a file, so this writer can never disagree with what `minigemma.load` reads.
Tensors are generated and written one block of rows at a time, so an E2B-sized checkpoint
(`--preset e2b`: 4.6 G values, 9.3 GB in bf16) never sits in memory. Values: projections
N(0, std), norm weights 1 + N(0, 0.1), scalars 1 (the release-like presets randomise those too:
identity values hide bugs).

Like the published checkpoints (not like `save_pretrained`), and so readable by ports written
against them: `config.json` in the published dialect (`global_head_dim`,
`num_global_key_value_heads`; a `per_layer_config` given in --config is turned into those), and
with `--kv-on-shared` the k/v projections and k-norm the released E2B ships on its KV-shared
layers, which no layer reads (minigemma and transformers ignore them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

from minigemma.errors import MinigemmaError
from minigemma.weights.checkpoint import TensorRef, write_safetensors
from minigemma.text.config import config_from_dict
from minigemma.text.model import load_text

PRESETS = {
    # a model small enough to try every CLI command on in a second
    "tiny": {
        "model_type": "gemma4_text", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "global_head_dim": 32, "sliding_window": 16, "hidden_size_per_layer_input": 16,
        "vocab_size_per_layer_input": 512, "num_kv_shared_layers": 2, "use_double_wide_mlp": True,
        "enable_moe_block": True, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 4096,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2,
    },
    # the published E2B text dimensions
    "e2b": {
        "model_type": "gemma4_text", "vocab_size": 262144, "hidden_size": 1536, "intermediate_size": 6144,
        "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
        "global_head_dim": 512, "sliding_window": 512, "hidden_size_per_layer_input": 256,
        "vocab_size_per_layer_input": 262144, "num_kv_shared_layers": 20, "use_double_wide_mlp": True,
        "final_logit_softcapping": 30.0,
        "layer_types": [("full_attention" if (i + 1) % 5 == 0 else "sliding_attention") for i in range(35)],
    },
    # E2B's layout at toy size: 4:1 sliding/global, the second half KV-shared (its last two
    # producers sliding then global, as in E2B and as llama.cpp requires), PLE, double-wide MLP
    "e2b-like": {
        "model_type": "gemma4_text", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 10, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "global_head_dim": 32, "sliding_window": 6, "hidden_size_per_layer_input": 8,
        "vocab_size_per_layer_input": 128, "num_kv_shared_layers": 5, "use_double_wide_mlp": True,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 4096,
        "layer_types": [("full_attention" if (i + 1) % 5 == 0 else "sliding_attention") for i in range(10)],
    },
    # 26B-A4B's layout at toy size: 5:1, MoE beside the dense MLP, keys = values on global
    # layers with their own KV head count, no PLE, no KV sharing
    "a4b-like": {
        "model_type": "gemma4_text", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 32,
        "num_hidden_layers": 6, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16,
        "global_head_dim": 32, "num_global_key_value_heads": 1, "attention_k_eq_v": True,
        "sliding_window": 6, "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0,
        "enable_moe_block": True, "num_experts": 8, "top_k_experts": 2, "moe_intermediate_size": 16,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 4096,
        "layer_types": [("full_attention" if (i + 1) % 6 == 0 else "sliding_attention") for i in range(6)],
    },
}
RELEASE_LIKE = ("e2b-like", "a4b-like")  # every value random, scalars included


BLOCK_VALUES = 2**24  # values made at a time: 64 MB of float32


class _ShapeRecorder:
    """Stands in for a `Checkpoint`: records every tensor the loader asks for, returns zero views."""

    def __init__(self):
        self.shapes: dict[str, tuple[int, ...]] = {}

    def ref(self, name, shape=None):
        self.shapes[name] = tuple(shape) if shape is not None else self.shapes[name]
        return TensorRef(name, "", "F32", self.shapes[name], 0, 0)

    def f32(self, name, shape=None):
        self.ref(name, shape)
        return np.broadcast_to(np.float32(0), shape)

    raw = matrix = f32


class RandomWeights:
    """Stands in for a checkpoint: every tensor a loader asks for is made on the spot, random, of
    the shape it asks for, and kept in `tensors` (so the same weights can be loaded elsewhere, e.g.
    into the reference). For towers no trained checkpoint of ours has (the lessons' vision and
    audio encoders). Values: projections and tables N(0, 1/fan_in) so activations stay O(1);
    norm weights 1 + N(0, 0.1); clip bounds wide (+-10), leaving O(1) values alone."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, np.ndarray] = {}

    def f32(self, name: str, shape=None) -> np.ndarray:
        shape = tuple(shape)
        if name.endswith(("_min", "_max")):
            value = np.full(shape, -10.0 if name.endswith("_min") else 10.0, np.float32)
        elif len(shape) == 1:  # norm weights, scales, biases
            value = np.float32(1.0) + np.float32(0.1) * self.rng.standard_normal(shape, np.float32)
        else:
            value = self.rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(shape[-1]))
        self.tensors[name] = value
        return value


def expected_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor `minigemma.load` reads for this `config.json` dict."""
    cfg = config_from_dict(config)
    prefix = "model" if cfg.model_type == "gemma4_text" else "model.language_model"
    recorder = _ShapeRecorder()
    load_text(recorder, cfg.text, prefix, "lm_head.weight")
    return recorder.shapes


def random_blocks(name: str, shape, rng: np.random.Generator, random_scalars: bool = False):
    """The tensor's values as consecutive blocks of rows: E2B's PLE table alone (262144 x 8960)
    would take 9.4 GB in float32, so it is made and written a block at a time."""
    rows = max(1, BLOCK_VALUES // max(1, int(np.prod(shape[1:], dtype=np.int64))))
    for r0 in range(0, shape[0], rows):
        yield random_values(name, (min(rows, shape[0] - r0), *shape[1:]), rng, random_scalars=random_scalars)


def published_dialect(config: dict) -> dict:
    """`config.json` as the published checkpoints write it: global layers described by
    `global_head_dim` (and `num_global_key_value_heads`), not by `save_pretrained`'s sparse
    `per_layer_config`. Refuses a per_layer_config the published keys cannot express."""
    config = dict(config)
    if config.get("text_config") is not None:  # the conditional-generation layout nests the text model
        config["text_config"] = published_dialect(config["text_config"])
        return config
    plc = config.pop("per_layer_config", None)
    if not plc:
        return config
    types = config_from_dict(config).text.layer_types  # the layer types do not depend on the overrides
    if any(types[int(k)] != "full_attention" for k in plc):
        raise ValueError("per_layer_config overrides a sliding layer: the published dialect cannot say that")
    overrides = [plc.get(str(i), plc.get(i, {})) for i, t in enumerate(types) if t == "full_attention"]
    dims = {(o.get("head_dim", config["head_dim"]), o.get("num_key_value_heads", config["num_key_value_heads"])) for o in overrides}
    if len(dims) > 1:
        raise ValueError(f"per_layer_config gives global layers different shapes {sorted(dims)}: the published dialect cannot say that")
    if dims:
        head_dim, kv_heads = dims.pop()
        config["global_head_dim"] = head_dim
        if kv_heads != config.get("num_key_value_heads"):
            if not config.get("attention_k_eq_v"):
                raise ValueError(
                    "per_layer_config changes the global KV heads without attention_k_eq_v: the published dialect cannot say that"
                )
            config["num_global_key_value_heads"] = kv_heads
    return config


def shared_kv_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """The k/v projections and k-norm of every KV-shared layer, shaped as that layer would have
    them if it computed its own keys: what the released E2B ships, and no layer reads."""
    text = config.get("text_config") or config
    unshared = dict(text, num_kv_shared_layers=0, use_double_wide_mlp=False)
    every = expected_tensors(dict(config, text_config=unshared) if "text_config" in config else unshared)
    shared = {spec.index for spec in config_from_dict(config).text.layers if spec.reuses_kv}
    pattern = re.compile(r".*\.layers\.(\d+)\.self_attn\.(k_proj|v_proj|k_norm)\.weight$")
    return {n: shape for n, shape in every.items() if (m := pattern.fullmatch(n)) and int(m[1]) in shared}


SCALARS = ("layer_scalar", "router.scale", "per_expert_scale")
QK_NORMS = ("q_norm.weight", "k_norm.weight")
QK_NORM_SCALE = 0.5


def random_values(name: str, shape, rng: np.random.Generator, std: float = 0.02, random_scalars: bool = False):
    if name.endswith(SCALARS) and not random_scalars:
        return np.ones(shape, np.float32)
    if len(shape) == 1:  # norm weights
        value = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if random_scalars and name.endswith(QK_NORMS):
            # attention scaling is 1.0: q.k of unit-RMS heads would be ~sqrt(head_dim), far sharper than
            # trained norms make it, and float32 implementations would differ past 1e-4 there
            value *= np.float32(QK_NORM_SCALE)
        return value
    return (std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def write_random_checkpoint(out: str, config: dict, dtype: str = "BF16", seed: int = 0, kv_on_shared: bool = False,
                            random_scalars: bool = False) -> str:
    """Write config.json (published dialect) and model.safetensors. The same arguments write the
    same bytes: a golden trace names its checkpoint by preset and seed."""
    os.makedirs(out, exist_ok=True)
    config = published_dialect(config)
    shapes = expected_tensors(config)
    if kv_on_shared:  # appended after the tensors the model reads, so those keep their values
        shapes.update(shared_kv_tensors(config))
    rng = np.random.default_rng(seed)
    tensors = {name: (shape, (lambda n=name, s=shape: random_blocks(n, s, rng, random_scalars))) for name, shape in shapes.items()}
    write_safetensors(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"}, dtype=dtype)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.random_checkpoint", description=__doc__.split("\n")[0])
    p.add_argument("out", help="directory to write config.json and model.safetensors into")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--config", help="a config.json to use instead of a preset")
    p.add_argument("--dtype", choices=["bf16", "f32", "f16"], default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kv-on-shared", action="store_true",
                   help="also write the k/v projections and k-norm of KV-shared layers, unused, as the released E2B ships them")
    args = p.parse_args(argv)
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    else:
        config = PRESETS[args.preset]
    try:
        write_random_checkpoint(args.out, config, dtype=args.dtype.upper(), seed=args.seed, kv_on_shared=args.kv_on_shared,
                                random_scalars=args.preset in RELEASE_LIKE and not args.config)
    except (ValueError, MinigemmaError) as e:
        print(f"random_checkpoint: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote a random {config.get('model_type')} checkpoint to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
