"""A GGUF's metadata restated as the `config.json` a Hugging Face checkpoint of the same model has.

llama.cpp's converter (`conversion/gemma.py`, `Gemma3Model` / `Gemma4Model`) writes a model's
settings under its own keys, `{arch}.` + name; some of Gemma's live in tensors or in llama.cpp's
code instead. Each is mapped back to the field `config.json` would have, and the text config
parser (`text/config.py`) then reads the dict as it reads any checkpoint's:

| GGUF (`gemma4.` / `gemma3.`)                          | config.json                                  |
| ----------------------------------------------------- | -------------------------------------------- |
| `block_count`, `embedding_length`, `context_length`    | `num_hidden_layers`, `hidden_size`, `max_position_embeddings` |
| `attention.head_count`, `attention.layer_norm_rms_epsilon`, `attention.sliding_window` | `num_attention_heads`, `rms_norm_eps`, `sliding_window` |
| `attention.key_length_swa` / `key_length` (Gemma 4)   | `head_dim` / `per_layer_config` global layers' `head_dim` |
| `attention.head_count_kv`: a number, or one per layer  | `num_key_value_heads` (+ `per_layer_config`)  |
| `attention.sliding_window_pattern`: one bool per layer (true: sliding) | `layer_types`                |
| `attention.shared_kv_layers`                          | `num_kv_shared_layers`                       |
| `feed_forward_length`: a number, or per layer (x2 on KV-shared layers) | `intermediate_size`, `use_double_wide_mlp` |
| `embedding_length_per_layer_input` (0: none)          | `hidden_size_per_layer_input`                |
| `expert_count`, `expert_used_count`, `expert_feed_forward_length` | `num_experts`, `top_k_experts`, `moe_intermediate_size` |
| `rope.freq_base`, `rope.freq_base_swa`                | `rope_parameters` of global / sliding layers |
| tensor `rope_freqs` (1 for a rotated pair, 1e30 for a still one) | global layers' `proportional` RoPE, `partial_rotary_factor` |
| global layers without `attn_v`                        | `attention_k_eq_v`                           |
| `final_logit_softcapping`                             | `final_logit_softcapping`                    |
| `tokenizer.ggml.{bos,eos,padding}_token_id`, `tokenizer.ggml.tokens` | token ids, `vocab_size`         |
| no `output.weight` tensor                             | `tie_word_embeddings`                        |

Gemma 3 files (the `Gemma3ForCausalLM` of `weights_tools/gguf_import.py`) say less: llama.cpp fixes
their 5:1 layer pattern and the sliding layers' RoPE base (10k) in code, and scales the 27B's
queries by hidden / heads. Every missing or malformed key is a `ConfigError` naming it.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError

SLIDING, GLOBAL = "sliding_attention", "full_attention"  # the layer type names of config.json
GEMMA3_PATTERN = 6  # llama.cpp's Gemma 3: five sliding layers, then one global
GEMMA3_SLIDING_THETA = 10_000.0  # llama.cpp's Gemma 3 code fixes the sliding layers' base; older files omit it
GEMMA3_27B_LAYERS = 62  # llama.cpp scales the 27B's queries by 1/sqrt(hidden / heads), not 1/sqrt(head_dim)
ROTATED, STILL = 1.0, 1e30  # `rope_freqs` entries: a pair that turns, a pair divided to frequency ~0
MODEL_TYPES = {"gemma4": "gemma4_text", "gemma3": "gemma3_text"}
BLOCK_TENSOR = re.compile(r"^blk\.\d+\.")
SPECIAL_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_token_id"}


class Meta:
    """Typed access to `{arch}.` keys; failures name the key, what was expected and what was found."""

    def __init__(self, metadata: dict, arch: str, where: str):
        self.m, self.arch, self.where = metadata, arch, where

    def fail(self, key, expected, found):
        raise ConfigError(f"{self.where}: metadata {key}: expected {expected}, found {found!r}")

    def get(self, name: str, default=None):
        return self.m.get(f"{self.arch}.{name}", default)

    def has(self, name: str) -> bool:
        return f"{self.arch}.{name}" in self.m

    def count(self, name: str, default=None, allow_zero=False) -> int:
        key = f"{self.arch}.{name}"
        v = self.m.get(key, default)
        if v is None:
            self.fail(key, "a count (the file has no such key)", None)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
            self.fail(key, "a non-negative integer" if allow_zero else "a positive integer", v)
        return v

    def number(self, name: str, default=None) -> float:
        key = f"{self.arch}.{name}"
        v = self.m.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            self.fail(key, "a positive number", v)
        return float(v)

    def per_layer(self, name: str, n_layers: int, default=None) -> list[int]:
        """A count that is one number, or an array with one per layer."""
        key = f"{self.arch}.{name}"
        v = self.m.get(key, default)
        if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iu":
            if len(v) != n_layers:
                self.fail(key, f"one value per layer ({n_layers})", f"{len(v)} values")
            values = v.tolist()
        else:
            values = [self.count(name, default)] * n_layers
        if min(values) < 1:
            self.fail(key, "positive integers", values)
        return values


def hf_config(metadata: dict, tensor_names: set[str], rope_freqs, where: str) -> dict:
    """The config.json of the model a GGUF holds. `rope_freqs`: the values of the `rope_freqs`
    tensor as float32, or None; `where`: the file, for messages."""
    arch = metadata.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise ConfigError(f"{where}: general.architecture is {arch!r}; minigemma reads {sorted(MODEL_TYPES)}")
    m = Meta(metadata, arch, where)
    n = m.count("block_count")
    blocks = {int(name.split(".")[1]) for name in tensor_names if BLOCK_TENSOR.match(name)}
    if blocks != set(range(n)):  # also keeps a corrupt count from sizing per-layer lists
        found = f"tensors of blocks {min(blocks)} to {max(blocks)} ({len(blocks)} blocks)" if blocks else "no block tensors"
        m.fail(f"{arch}.block_count", f"blocks 0 to {n - 1} in the tensors (blk.N.*)", found)
    config = {
        "model_type": MODEL_TYPES[arch],
        "num_hidden_layers": n,
        "hidden_size": m.count("embedding_length"),
        "max_position_embeddings": m.count("context_length"),
        "num_attention_heads": m.count("attention.head_count"),
        "rms_norm_eps": m.number("attention.layer_norm_rms_epsilon"),
        "vocab_size": vocab_size(metadata, where),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    if m.has("attention.sliding_window"):
        config["sliding_window"] = m.count("attention.sliding_window")
    if m.has("final_logit_softcapping"):
        config["final_logit_softcapping"] = m.number("final_logit_softcapping")
    for field, key in SPECIAL_IDS.items():
        if f"tokenizer.ggml.{key}" in metadata:
            config[field] = metadata[f"tokenizer.ggml.{key}"]
    gemma = gemma4_fields if arch == "gemma4" else gemma3_fields
    return config | gemma(m, n, config, tensor_names, rope_freqs)


def vocab_size(metadata: dict, where: str) -> int:
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ConfigError(f"{where}: metadata tokenizer.ggml.tokens: expected the vocabulary (a list of strings), found {type(tokens).__name__}")
    return len(tokens)


def layer_types_from(m: Meta, n: int, default_pattern: int | None) -> list[str]:
    """`sliding_window_pattern`: one bool per layer (true: sliding), or llama.cpp's period
    (every `pattern`-th layer global), or, absent, the architecture's default period."""
    key = f"{m.arch}.attention.sliding_window_pattern"
    pattern = m.get("attention.sliding_window_pattern", default_pattern)
    if isinstance(pattern, np.ndarray) and pattern.dtype == bool:
        if len(pattern) != n:
            m.fail(key, f"one bool per layer ({n})", f"{len(pattern)} values")
        return [SLIDING if swa else GLOBAL for swa in pattern.tolist()]
    if pattern is None:
        m.fail(key, "one bool per layer", None)
    pattern = m.count("attention.sliding_window_pattern", default_pattern)
    return [SLIDING if (i + 1) % pattern else GLOBAL for i in range(n)]


def gemma3_fields(m: Meta, n: int, config: dict, tensor_names: set[str], rope_freqs) -> dict:
    head_dim = m.count("attention.key_length")
    if m.get("attention.value_length", head_dim) != head_dim:
        m.fail(f"{m.arch}.attention.value_length", f"key_length {head_dim}", m.get("attention.value_length"))
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    global_rope = {"rope_type": "default", "rope_theta": m.number("rope.freq_base")}
    kind, factor = m.get("rope.scaling.type", "none"), m.get("rope.scaling.factor", 1.0)
    if kind not in ("none", None) and factor != 1.0:
        if kind != "linear":
            m.fail(f"{m.arch}.rope.scaling.type", "'linear' or 'none'", kind)
        global_rope = {"rope_type": "linear", "factor": float(factor), "rope_theta": global_rope["rope_theta"]}
    return {
        "intermediate_size": m.count("feed_forward_length"),
        "num_key_value_heads": m.count("attention.head_count_kv"),
        "head_dim": head_dim,
        "layer_types": layer_types_from(m, n, GEMMA3_PATTERN),
        "rope_parameters": {
            SLIDING: {"rope_type": "default", "rope_theta": m.number("rope.freq_base_swa", GEMMA3_SLIDING_THETA)},
            GLOBAL: global_rope,
        },
        "query_pre_attn_scalar": hidden // heads if n == GEMMA3_27B_LAYERS else head_dim,
    }


def gemma4_fields(m: Meta, n: int, config: dict, tensor_names: set[str], rope_freqs) -> dict:
    types = layer_types_from(m, n, None)
    head_dim = m.count("attention.key_length_swa", m.get("attention.key_length"))
    global_head_dim = m.count("attention.key_length")
    kv = m.per_layer("attention.head_count_kv", n)
    n_shared = m.count("attention.shared_kv_layers", 0, allow_zero=True)
    if n_shared >= n:
        m.fail(f"{m.arch}.attention.shared_kv_layers", f"fewer than block_count ({n})", n_shared)
    ff = m.per_layer("feed_forward_length", n)
    first_shared = n - n_shared
    double_wide = n_shared > 0 and ff[-1] == 2 * ff[0]  # `use_double_wide_mlp`: KV-shared layers twice as wide
    expected_ff = [ff[0] * (2 if double_wide and i >= first_shared else 1) for i in range(n)]
    if ff != expected_ff:
        m.fail(f"{m.arch}.feed_forward_length", f"one width, doubled on the {n_shared} KV-shared layers {expected_ff}", ff)
    sliding_kv = next((kv[i] for i, t in enumerate(types) if t == SLIDING), kv[0])
    per_layer = {}
    for i, t in enumerate(types):
        override = {"head_dim": global_head_dim} if t == GLOBAL and global_head_dim != head_dim else {}
        if kv[i] != sliding_kv:
            override["num_key_value_heads"] = kv[i]
        if override:
            per_layer[str(i)] = override
    k_eq_v = any(
        t == GLOBAL and i < first_shared and f"blk.{i}.attn_k.weight" in tensor_names and f"blk.{i}.attn_v.weight" not in tensor_names
        for i, t in enumerate(types)
    )
    fields = {
        "layer_types": types,
        "head_dim": head_dim,
        "num_key_value_heads": sliding_kv,
        "per_layer_config": per_layer,
        "num_kv_shared_layers": n_shared,
        "intermediate_size": ff[0],
        "use_double_wide_mlp": double_wide,
        "attention_k_eq_v": k_eq_v,
        "hidden_size_per_layer_input": m.count("embedding_length_per_layer_input", 0, allow_zero=True),
        "rope_parameters": {
            SLIDING: {"rope_type": "default", "rope_theta": m.number("rope.freq_base_swa")},
            GLOBAL: global_rope(m, rope_freqs, global_head_dim),
        },
    }
    if fields["hidden_size_per_layer_input"]:
        fields["vocab_size_per_layer_input"] = config["vocab_size"]  # checked against the table's rows on load
    swa_rot = m.get("rope.dimension_count_swa", head_dim)
    if swa_rot != head_dim:
        m.fail(f"{m.arch}.rope.dimension_count_swa", f"key_length_swa {head_dim} (every sliding pair turns)", swa_rot)
    experts = m.count("expert_count", 0, allow_zero=True)
    if experts:
        fields |= {
            "enable_moe_block": True,
            "num_experts": experts,
            "top_k_experts": m.count("expert_used_count"),
            "moe_intermediate_size": m.count("expert_feed_forward_length"),
        }
    return fields


def global_rope(m: Meta, rope_freqs, head_dim: int) -> dict:
    """Global layers' RoPE. llama.cpp's RoPE rotates the first `rope.dimension_count` dims; Gemma 4's
    proportional RoPE turns only the first quarter of the pairs, so the converter writes a
    `rope_freqs` tensor that divides each pair's frequency: 1 for a pair that turns, 1e30 for one
    that stays still. Back in config.json terms: `partial_rotary_factor` = turning pairs / all pairs."""
    theta = m.number("rope.freq_base")
    if rope_freqs is None:
        return {"rope_type": "default", "rope_theta": theta}
    pairs = head_dim // 2
    values = np.asarray(rope_freqs, np.float32).reshape(-1)
    turning = int(np.sum(values == np.float32(ROTATED)))
    expected = np.array([ROTATED] * turning + [STILL] * (pairs - turning), np.float32)
    if values.shape != expected.shape or not np.array_equal(values, expected):
        raise ConfigError(
            f"{m.where}: tensor rope_freqs: expected {pairs} entries (global head dim {head_dim} / 2), "
            f"1.0 for the turning pairs then 1e30, found {values.tolist()[:8]}... ({values.size} entries)"
        )
    factor = 2 * turning / head_dim
    if int(factor * head_dim // 2) != turning:  # the reference's own arithmetic must give the count back
        raise ConfigError(f"{m.where}: tensor rope_freqs: {turning} turning pairs of {pairs} is no partial_rotary_factor")
    return {"rope_type": "proportional", "partial_rotary_factor": factor, "rope_theta": theta}
