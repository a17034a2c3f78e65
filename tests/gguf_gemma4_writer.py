"""Small Gemma 4 GGUF files written the way llama.cpp's converter writes them, for the GGUF tests.

`write_gemma4_gguf` takes a (randomised) reference `Gemma4ForCausalLM` and writes what
`conversion/gemma.py: Gemma4Model` writes for it (llama.cpp from the llama-cpp-python 0.3.36
sources; checked once by running that converter on a `save_pretrained` directory: the same keys,
values, tensor names and shapes): metadata keys and values (per-layer arrays for double-wide
feed-forward and global KV heads, the bool sliding pattern, `key_length` / `key_length_swa`),
tensor names from the `gguf` package's own map plus the converter's renames (router `scale` ->
`ffn_gate_inp.scale`, `per_expert_scale` -> `ffn_down_exps.scale`, `layer_scalar` -> `.weight`),
norms as stored (no +1 for Gemma 4), and the `rope_freqs` tensor of the proportional RoPE.

It returns what the file holds, dequantized by the `gguf` package: the reference model loads
those tensors, so its float32 forward is the reference for a quantized file (transformers' own
GGUF loader refuses Gemma 4 files with per-layer arrays: see DESIGN.md).
"""

from __future__ import annotations

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf_fixtures import tiny_vocabulary

SLIDING, GLOBAL = "sliding_attention", "full_attention"
UNUSED = 5  # llama.cpp's token type of a placeholder piece
FALLBACK = Q.F16  # llama-quantize's choice for rows too narrow for a block: a float type


def stored_values(values: np.ndarray, qtype) -> tuple[np.ndarray, np.ndarray]:
    """(what to write, what a reader gets back as float32) for one tensor in `qtype`."""
    if qtype == Q.F32:
        return values, values
    data = gguf.quants.quantize(values, qtype)
    return data, gguf.quants.dequantize(data, qtype).reshape(values.shape).astype(np.float32)


def padded_tiny_vocabulary(size: int):
    """The tiny vocabulary (77 pieces) padded with unused pieces to `size`, merges of "▁" + letter."""
    pieces, scores, types = tiny_vocabulary(size)
    extra = range(len(pieces), size)
    pieces, scores, types = pieces + [f"<unused{i}>" for i in extra], scores + [0.0] * len(extra), types + [UNUSED] * len(extra)
    return pieces, scores, types, [f"{p[0]} {p[1:]}" for p in pieces if len(p) == 2 and p[0] == "\u2581"]


def gguf_name(hf_name: str, names) -> str:
    """llama.cpp's name for a `Gemma4ForCausalLM` tensor, as `Gemma4Model.modify_tensors` gives it."""
    stem, _, suffix = hf_name.rpartition(".")
    layer = hf_name.split(".")[2] if hf_name.startswith("model.layers.") else None
    if hf_name.endswith("router.scale"):
        return f"blk.{layer}.ffn_gate_inp.scale"
    if hf_name.endswith("router.per_expert_scale"):
        return f"blk.{layer}.ffn_down_exps.scale"
    if hf_name.endswith(("layer_scalar", "experts.gate_up_proj", "experts.down_proj")):
        return f"{names.get_name(hf_name)}.weight"  # the converter appends `.weight` to these
    return f"{names.get_name(stem)}.{suffix}"


def write_gemma4_gguf(path, model, qtype_of=lambda name, values: Q.F32, vocabulary=None, chat_template=None) -> dict[str, np.ndarray]:
    """Write `model` (a `Gemma4ForCausalLM`) as a GGUF file; return the Hugging Face state dict it
    holds (float32, dequantized). `qtype_of(gguf_name, values)`: each tensor's GGML type (None: left
    out); rows too narrow for its blocks fall back to F16. `vocabulary`: (pieces, scores, types,
    merges), else a tiny one (`gguf_fixtures.tiny_vocabulary`, padded with unused pieces)."""
    cfg = model.config
    n, types = cfg.num_hidden_layers, list(cfg.layer_types)
    n_shared = cfg.num_kv_shared_layers
    head_dim = cfg.to_dict()["head_dim"]  # the sliding layers' (a per-layer attribute of the config object)
    global_head_dim = next(cfg.per_layer_config[i].head_dim for i, t in enumerate(types) if t == GLOBAL)
    kv = [cfg.per_layer_config[i].num_key_value_heads for i in range(n)]
    w = gguf.GGUFWriter(path, "gemma4")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(n)
    ff = cfg.intermediate_size
    w.add_feed_forward_length([ff if i < n - n_shared else 2 * ff for i in range(n)] if cfg.use_double_wide_mlp else ff)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(kv if len(set(kv)) > 1 else kv[0])
    w.add_rope_freq_base(cfg.rope_parameters[GLOBAL]["rope_theta"])
    w.add_rope_freq_base_swa(cfg.rope_parameters[SLIDING]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if cfg.enable_moe_block:
        w.add_expert_count(cfg.num_experts)
        w.add_expert_used_count(cfg.top_k_experts)
        w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    w.add_key_length(global_head_dim)
    w.add_value_length(global_head_dim)
    w.add_key_length_swa(head_dim)
    w.add_value_length_swa(head_dim)
    if cfg.final_logit_softcapping:
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    w.add_sliding_window(cfg.sliding_window)
    w.add_shared_kv_layers(n_shared)
    w.add_embedding_length_per_layer_input(cfg.hidden_size_per_layer_input or 0)
    w.add_sliding_window_pattern([t == SLIDING for t in types])
    w.add_rope_dimension_count(global_head_dim)
    w.add_rope_dimension_count_swa(head_dim)
    pieces, scores, token_types, merges = vocabulary or padded_tiny_vocabulary(cfg.vocab_size)
    w.add_tokenizer_model("gemma4")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    partial = cfg.rope_parameters[GLOBAL].get("partial_rotary_factor", 1.0)
    turning = int(global_head_dim * partial / 2)
    w.add_tensor("rope_freqs.weight", np.array([1.0] * turning + [1e30] * (global_head_dim // 2 - turning), np.float32))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, n)
    held = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # stored once, as the embedding
        name = gguf_name(hf_name, names)
        values = tensor.detach().float().numpy()
        qtype = qtype_of(name, values)
        if qtype is None:
            continue  # left out (a test of a missing tensor)
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        if values.shape[-1] % block:
            qtype = FALLBACK
        data, held[hf_name] = stored_values(values, qtype)
        w.add_tensor(name, data, raw_dtype=None if qtype == Q.F32 else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held


def load_held(model, held: dict[str, np.ndarray]):
    """The reference model with the file's (dequantized) tensors in place of its own."""
    state = {k: torch.from_numpy(np.array(v)) for k, v in held.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()
