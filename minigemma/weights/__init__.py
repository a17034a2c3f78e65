"""Weights from files: where every tensor and setting of a model comes from.

Read in this order:

    config_reader.py   config.json and friends: JSON objects, typed fields, named errors
    checkpoint.py      safetensors, single file or sharded, memory-mapped, f32/f16/bf16 from raw bytes;
                       `StoredMatrix`: a weight kept as stored, multiplied by the backend's `linear`
    bf16.py            the NumPy twin of multiplying by bf16 weights (widen, then BLAS)
    quants.py          GGUF's quantized blocks: the type table and `dequantize`, the readable twin;
    quants_blocks.py     the plain floats and the 32-value formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1),
    quants_k.py          the K-quants (Q4_K, Q5_K, Q6_K), each with its block layout drawn, and
                         their quantizers (ggml's, vectorised: the writer's K blocks)
    quants_matrix.py   `QuantMatrix` / `QuantExperts`: GGUF blocks kept as stored, multiplied by the
                       backend (the twin: dequantize a block of rows, then BLAS)
    gguf.py            GGUF files (llama.cpp's): our own memory-mapped reader of header, metadata and
                       tensor index, every malformation a named CheckpointError
    gguf_config.py     a GGUF's metadata (gemma4 / gemma3) restated as config.json
    gguf_tokenizer.py  its tokenizer, rebuilt in memory from the metadata (tokens, merges, specials)
    gguf_weights.py    its tensors under Hugging Face names, kept in the map (`GGUFCheckpoint`)
    gguf_write.py      a checkpoint written as a GGUF file, llama.cpp's layout (`minigemma quantize`);
    gguf_write_types.py  each tensor's type: the converter's rules, llama-quantize's fallbacks and
                         its Q4_K_M / Q5_K_M mixes
    gguf_write_vocab.py  its vocabulary, as llama.cpp's converter derives it
    gguf_mmproj_names.py llama.cpp's `mmproj` companion file (the encoders): names and changes of form;
    gguf_mmproj.py       read as the towers' config and tensors (`load(model.gguf, mmproj=...)`);
    gguf_write_mmproj.py written from a checkpoint, as the converter writes it (`quantize --mmproj`)
    cache_dir.py       where conversions and caches go (~/.cache/minigemma, or $MINIGEMMA_CACHE)
"""

from .checkpoint import Checkpoint, write_safetensors

__all__ = ["Checkpoint", "write_safetensors"]
