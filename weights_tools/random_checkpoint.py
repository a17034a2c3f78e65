"""Write a random Gemma 4 checkpoint in Hugging Face layout, with NumPy only (no torch).

    python -m weights_tools.random_checkpoint OUT_DIR [--preset tiny|e2b] [--config CONFIG.json]
                                              [--dtype bf16|f32|f16] [--seed N]

The tensor names and shapes come from minigemma's own loader (`expected_tensors`), run against a
recorder instead of a file, so this writer can never disagree with what `minigemma.load` reads.
Tensors are generated and written one block of rows at a time, so an E2B-sized checkpoint
(`--preset e2b`: 4.6 G values, 9.3 GB in bf16) never sits in memory. Values: projections
N(0, std), norm weights 1 + N(0, 0.1), scalars 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

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
}


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

    raw = matrix = stack = f32


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


def random_blocks(name: str, shape, rng: np.random.Generator):
    """The tensor's values as consecutive blocks of rows: E2B's PLE table alone (262144 x 8960)
    would take 9.4 GB in float32, so it is made and written a block at a time."""
    rows = max(1, BLOCK_VALUES // max(1, int(np.prod(shape[1:], dtype=np.int64))))
    for r0 in range(0, shape[0], rows):
        yield random_values(name, (min(rows, shape[0] - r0), *shape[1:]), rng)


def random_values(name: str, shape, rng: np.random.Generator, std: float = 0.02):
    if name.endswith("layer_scalar") or name.endswith("router.scale") or name.endswith("per_expert_scale"):
        return np.ones(shape, np.float32)
    if len(shape) == 1:  # norm weights
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return (std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def write_random_checkpoint(out: str, config: dict, dtype: str = "BF16", seed: int = 0) -> str:
    os.makedirs(out, exist_ok=True)
    shapes = expected_tensors(config)
    rng = np.random.default_rng(seed)
    tensors = {name: (shape, (lambda n=name, s=shape: random_blocks(n, s, rng))) for name, shape in shapes.items()}
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
    args = p.parse_args(argv)
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    else:
        config = PRESETS[args.preset]
    write_random_checkpoint(args.out, config, dtype=args.dtype.upper(), seed=args.seed)
    print(f"wrote a random {config.get('model_type')} checkpoint to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
