"""Small GGUF files written the way llama.cpp's converter writes them, for the GGUF import tests.

`write_gemma3_gguf` takes a (randomised) reference `Gemma3ForCausalLM` and writes its weights under
llama.cpp's tensor names, taken from the `gguf` package's own name map (not from our importer's
table), with the Gemma norm `+1` folded in as llama.cpp does, each tensor in a chosen GGML type.
"""

from __future__ import annotations

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

SPECIAL_PIECES = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0-3, as in Gemma's vocabulary
CONTROL, NORMAL = 3, 1


def tiny_vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and types of a small SentencePiece BPE vocabulary: characters, then merges."""
    letters = "\u2581abcdefghijklmnopqrstuvwxyz0123456789"
    pieces = SPECIAL_PIECES + list(letters) + ["\u2581" + c for c in letters[1:]]
    pieces = pieces[:size]
    scores = [-1000.0] * len(SPECIAL_PIECES) + [-float(i) for i in range(size - len(SPECIAL_PIECES))]
    types = [CONTROL] * len(SPECIAL_PIECES) + [NORMAL] * (size - len(SPECIAL_PIECES))
    return pieces, scores, types


def write_gemma3_gguf(path, model, qtype_of=lambda name, values: Q.F32, arch: str = "gemma3", extra=()) -> None:
    """Write `model` (a `Gemma3ForCausalLM`) as a GGUF file. `qtype_of(gguf_name, values)`: the
    GGML type to store each tensor in (quantized with the gguf package), None to leave it out. `extra`: tensors
    `(name, qtype, (rows, cols))` added as zero bytes of any type, even one nothing dequantizes."""
    cfg = model.config
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    w.add_sliding_window(cfg.sliding_window)
    pieces, scores, types = tiny_vocabulary(cfg.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp stores a tied head once, as the embedding
        stem, suffix = hf_name.rsplit(".", 1)
        name = f"{names.get_name(stem)}.{suffix}"
        values = tensor.detach().float().numpy()
        if hf_name.endswith("norm.weight"):
            values = values + np.float32(1.0)  # llama.cpp's Gemma converter stores 1 + w
        qtype = qtype_of(name, values)
        if qtype is None:
            continue
        if qtype == Q.F32:
            w.add_tensor(name, values)
        else:
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    for name, qtype, (rows, cols) in extra:
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        w.add_tensor(name, np.zeros((rows, cols // block * block_bytes), np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
