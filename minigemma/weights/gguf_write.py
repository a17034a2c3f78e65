"""Write a GGUF file from a Hugging Face checkpoint, the way llama.cpp's own converter writes it.

`minigemma quantize SRC OUT.gguf --type Q4_0` turns a Gemma 4 (text) or Gemma 3 checkpoint
directory into the one-file format llama.cpp, transformers' GGUF loader and minigemma read. The
layout is that of `convert_hf_to_gguf.py` (`conversion/gemma.py`, llama-cpp-python 0.3.36
sources), checked key by key and tensor by tensor against files that converter wrote
(tests/data/gguf_converter_listings.json):

* metadata: `general.*` (name, size label: the `gguf` package's own `Metadata`), then the
  architecture's keys under `gemma4.` / `gemma3.` (`add_arch_keys`). One addition: the converter
  writes no layer pattern for Gemma 3, and llama.cpp then assumes 5 sliding layers, 1 global; a
  Gemma 3 checkpoint with other `layer_types` gets `gemma3.attention.sliding_window_pattern` (one
  bool per layer, as Gemma 4 files have it), which llama.cpp reads when present;
* tensors under llama.cpp's names (the `gguf` package's name map: `blk.3.attn_q.weight`), in
  the checkpoint's order. Gemma 3's RMSNorm scales by `1 + w` and llama.cpp stores that `1 + w`;
  Gemma 4's scales by `w` and is stored as-is. Gemma 4's proportional RoPE (a quarter of the
  pairs rotate) becomes llama.cpp's `rope_freqs` table: factor 1 for rotating pairs, 1e30 (frozen)
  for the rest;
* the tokenizer: Gemma 4's `tokenizer.json` (BPE pieces, merges, special ids, chat template);
  Gemma 3's SentencePiece `tokenizer.model` (the vocabularies: `gguf_write_vocab.py`).

Each tensor's type follows llama.cpp (the rules: `gguf_write_types.py`): vectors, norms, `.scale`s
and the MoE router stay F32; the chosen type elsewhere, with llama-quantize's fallbacks for rows
that are not whole blocks; under Q4_K_M / Q5_K_M, llama-quantize's choice of Q6_K / Q8_0 tensor by
tensor. One difference from llama-quantize: under the 32-value 4- and 5-bit types (Q4_0 ... Q5_1)
it stores the head (`output`, or the tied `token_embd`) in Q6_K (Q8_0 when rows are too short for
its 256-value blocks); here the head gets the chosen type. Otherwise our files equal
llama-quantize's byte for byte (tests/test_gguf_write.py, tests/test_gguf_write_k.py).

Nothing is held whole: the tensor table is written first, then one tensor at a time, quantized a
block of rows at a time from the memory-mapped checkpoint. Quantizing is `gguf.quants.quantize`,
and for the K-quants, which it cannot write, `quants_k.K_QUANTIZERS` (both row by row, so chunking
changes no byte). `gguf` is an optional dependency: `pip install
'minigemma[gguf]'`.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, InputError
from .checkpoint import Checkpoint, to_f32
from .config_reader import read_json_object
from .gguf_write_types import TYPES, storage_types
from .gguf_write_vocab import gemma3_vocabulary, gemma4_vocabulary
from .quants_k import K_QUANTIZERS, finite_scales

ARCH_OF = {  # `architectures[0]` (or `model_type`) -> the GGUF architecture
    "Gemma4ForCausalLM": "gemma4", "Gemma4ForConditionalGeneration": "gemma4", "gemma4_text": "gemma4", "gemma4": "gemma4",
    "Gemma3ForCausalLM": "gemma3", "Gemma3ForConditionalGeneration": "gemma3", "gemma3_text": "gemma3", "gemma3": "gemma3",
}
GLOBAL, SLIDING = "full_attention", "sliding_attention"
NORM_SHIFT = {"gemma4": 0.0, "gemma3": 1.0}  # Gemma 3's norm scales by 1 + w; llama.cpp stores 1 + w
GEMMA3_PATTERN = 6  # llama.cpp's gemma3 default: every 6th layer global
FROZEN_ROPE_FACTOR = 1e30  # rope_freqs entry of a pair that must not rotate (its angle / 1e30 is 0)
# multimodal tensors a text GGUF leaves out (the converter's TextModel.filter_tensors, Gemma's share)
MULTIMODAL_MARKS = ("vision.", "audio.", "vision_", "audio_", "projector.", "patch_embed")
CHUNK_VALUES = 1 << 24  # values quantized at a time: 64 MB of float32
K_CHUNK_VALUES = 1 << 17  # the K-quant fits work on a dozen float32 copies of their chunk: 512 KB each stay in cache
FILE_TYPES = {"F32": "ALL_F32", "Q4_K": "MOSTLY_Q4_K_S", "Q5_K": "MOSTLY_Q5_K_S"}  # else MOSTLY_{type}


def require_gguf():
    try:
        import gguf
    except ImportError:
        raise InputError("writing GGUF needs the gguf package: pip install 'minigemma[gguf]'") from None
    return gguf


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output: its llama.cpp name, where its values come from, how it is stored."""

    name: str
    source: str | None  # checkpoint name; None: made here (`values`)
    shape: tuple[int, ...]  # NumPy order: (..., rows, cols)
    qtype: int  # GGMLQuantizationType
    shift: float = 0.0  # added to every value (Gemma 3 norms)
    values: np.ndarray | None = None


def write_gguf(src: str | os.PathLike, out: str | os.PathLike, cfg, type_name: str = "Q8_0") -> list[PlannedTensor]:
    """Write the checkpoint directory `src` as the GGUF file `out`, matrices in `type_name`.
    `cfg`: its parsed text config (`minigemma.text.config`, which fills in what config.json omits)."""
    gguf = require_gguf()
    if type_name not in TYPES:
        raise InputError(f"--type: expected one of {', '.join(TYPES)}, found {type_name!r}")
    src = Path(src)
    hp = hparams(src)
    arch = architecture(hp, src)
    ckpt = Checkpoint(src)
    with quiet_gguf():
        tokens, scores, types = (gemma4_vocabulary if arch == "gemma4" else gemma3_vocabulary)(src, hp)
        plan = plan_tensors(gguf, ckpt, hp, cfg, arch, type_name, n_vocab=len(tokens))
        w = gguf.GGUFWriter(os.fspath(out), arch)
        for t in plan:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes(gguf, t), raw_dtype=t.qtype)
        add_general(gguf, w, src)
        add_arch_keys(gguf, w, hp, cfg, arch, file_type(gguf, type_name))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(gguf, w, src, arch, tokens, scores, types)
        try:
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for t in plan:
                w.write_tensor_data(stored_bytes(gguf, ckpt, t))
        except OSError as e:
            raise InputError(f"{out}: cannot write ({e.strerror})") from None
        finally:
            w.close()
    return plan


@contextmanager
def quiet_gguf():
    """The gguf package logs each key it overwrites (as the converter does: an int, then the per-layer
    array in its place) and each special token it sets; a command line tool prints none of that."""
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------ config

def hparams(src: Path) -> dict:
    """config.json as the converter sees it: a multimodal config's `text_config` lifted to the top."""
    file = src / "config.json"
    if not file.exists():
        raise ConfigError(f"{file}: no config.json found (expected a Hugging Face checkpoint directory)")
    raw = read_json_object(str(file))
    text = raw.get("text_config")
    return {**raw, **text} if isinstance(text, dict) else raw


def architecture(hp: dict, src: Path) -> str:
    names = list(hp.get("architectures") or []) + [hp.get("model_type")]
    for name in names:
        if name in ARCH_OF:
            return ARCH_OF[name]
    raise ConfigError(f"{src / 'config.json'}: architectures / model_type: expected a Gemma 4 or Gemma 3 model, found {names}")


def file_type(gguf, type_name: str) -> int:
    """`general.file_type`: the LlamaFileType of a file whose matrices are mostly `type_name` (a plain
    Q4_K / Q5_K file is the "small" mix's kind: llama.cpp has no file type for one K-quant alone)."""
    return int(gguf.LlamaFileType[FILE_TYPES.get(type_name, f"MOSTLY_{type_name}")])


def layer_of_type(cfg, layer_type: str):
    return next((s for s in cfg.layers if s.layer_type == layer_type), None)


def add_general(gguf, w, src: Path, kind: str | None = None) -> None:
    """general.type / name / size_label ..., exactly as the converter fills them (gguf.Metadata);
    `kind`: general.type, a model unless said (an mmproj file: "mmproj")."""
    total, shared, expert, n_expert = w.get_total_parameter_count()
    meta = gguf.Metadata.load(None, src, None, total)
    if meta.name is None:
        meta.name = src.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    w.add_type(kind or gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(w)


def add_arch_keys(gguf, w, hp: dict, cfg, arch: str, ftype: int) -> None:
    """The `{arch}.` keys, in the converter's order (TextModel, then Gemma3Model, then Gemma4Model)."""
    full, swa = layer_of_type(cfg, GLOBAL), layer_of_type(cfg, SLIDING)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)  # Gemma 4 double-wide: the per-layer array below
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)  # Gemma 4 with global KV heads: the array below
    rope_full = cfg.rope.get(GLOBAL) or cfg.rope.get(SLIDING)
    if rope_full.rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_full.factor)
    w.add_rope_freq_base(rope_full.theta)
    if SLIDING in cfg.rope:
        w.add_rope_freq_base_swa(cfg.rope[SLIDING].theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if arch == "gemma4" and hp.get("num_experts") is not None:
        w.add_expert_count(hp["num_experts"])
    if arch == "gemma4" and hp.get("top_k_experts") is not None:
        w.add_expert_used_count(hp["top_k_experts"])
    head_dim_full = full.head_dim if arch == "gemma4" else cfg.head_dim
    w.add_key_length(head_dim_full)
    w.add_value_length(head_dim_full)
    w.add_file_type(ftype)
    if cfg.final_logit_softcapping:
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    if hp.get("sliding_window_pattern") != 1:
        w.add_sliding_window(cfg.sliding_window)
        if arch == "gemma3" and list(cfg.layer_types) != gemma3_default_types(cfg.num_hidden_layers):
            w.add_sliding_window_pattern([t == SLIDING for t in cfg.layer_types])
    if arch == "gemma4":
        add_gemma4_keys(w, hp, cfg, full, swa)


def gemma3_default_types(n_layers: int) -> list[str]:
    """The layer types llama.cpp assumes for a gemma3 file without a pattern key: 5 sliding, 1 global."""
    return [GLOBAL if (i + 1) % GEMMA3_PATTERN == 0 else SLIDING for i in range(n_layers)]


def add_gemma4_keys(w, hp: dict, cfg, full, swa) -> None:
    w.add_shared_kv_layers(cfg.num_kv_shared_layers)
    w.add_embedding_length_per_layer_input(cfg.hidden_size_per_layer_input)
    w.add_sliding_window_pattern([s.layer_type == SLIDING for s in cfg.layers])
    head_dim_swa = swa.head_dim if swa is not None else cfg.head_dim
    w.add_key_length_swa(head_dim_swa)
    w.add_value_length_swa(head_dim_swa)
    if hp.get("moe_intermediate_size") is not None:
        w.add_expert_feed_forward_length(hp["moe_intermediate_size"])
    if cfg.use_double_wide_mlp:  # KV-shared layers have a twice-as-wide MLP
        w.add_feed_forward_length([s.mlp_intermediate for s in cfg.layers])
    if global_kv_heads_stated(hp, cfg):
        w.add_head_count_kv([s.num_kv_heads for s in cfg.layers])
    w.add_rope_dimension_count(full.head_dim)  # global layers rotate all dims; rope_freqs freezes the rest
    w.add_rope_dimension_count_swa(head_dim_swa)


def global_kv_heads_stated(hp: dict, cfg) -> bool:
    """The converter writes KV heads per layer when the config states the global layers' count
    (`num_global_key_value_heads`, or `per_layer_config` in save_pretrained's dialect). The values
    are those the model uses (transformers reads the global count only with attention_k_eq_v)."""
    if hp.get("num_global_key_value_heads") is not None:
        return True
    per_layer = hp.get("per_layer_config") or {}
    return any(
        "num_key_value_heads" in v and int(k) < cfg.num_hidden_layers and cfg.layers[int(k)].layer_type == GLOBAL
        for k, v in per_layer.items() if isinstance(v, dict) and str(k).isdigit()
    )


# ------------------------------------------------------------------------------------ tensors

def plan_tensors(gguf, ckpt: Checkpoint, hp: dict, cfg, arch: str, type_name: str, n_vocab: int) -> list[PlannedTensor]:
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    plan = [rope_freqs(gguf, hp, cfg)] if arch == "gemma4" else []
    for source in ckpt.names():
        name = gguf_name(names, source, arch)
        if name is None:
            continue
        shape = tuple(ckpt.refs[source].shape)
        if arch == "gemma3" and name == "token_embd.weight" and shape[0] > n_vocab:
            shape = (n_vocab, *shape[1:])  # rows past the tokenizer's vocabulary are dropped
        shift = NORM_SHIFT[arch] if source.endswith("norm.weight") else 0.0
        plan.append(PlannedTensor(name, source, shape, None, shift))
    n_experts = int(hp.get("num_experts") or 0) if arch == "gemma4" else 0
    kinds = storage_types([(t.name, t.shape) for t in plan], type_name, cfg.num_hidden_layers, n_experts)
    Q = gguf.GGMLQuantizationType
    return [t if t.source is None else replace(t, qtype=Q[kind]) for t, kind in zip(plan, kinds)]


def gguf_name(names, source: str, arch: str) -> str | None:
    """llama.cpp's name of a checkpoint tensor; None for what a text GGUF leaves out."""
    if any(mark in source for mark in MULTIMODAL_MARKS):
        return None
    key = source.replace("language_model.", "")
    if arch == "gemma4":
        bid = re.search(r"\.layers\.(\d+)\.", key)
        if key.endswith("router.scale"):  # the router's input scale
            return f"blk.{bid.group(1)}.ffn_gate_inp.scale"
        if key.endswith("per_expert_scale"):  # scales each expert's output: llama.cpp applies it after ffn_down
            return f"blk.{bid.group(1)}.ffn_down_exps.scale"
        if key.endswith(("layer_scalar", "per_dim_scale")) or ".experts." in key and not key.endswith(".weight"):
            key += ".weight"
    name = names.get_name(key, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise CheckpointError(f"{source}: no llama.cpp tensor name for this {arch} checkpoint tensor")
    return name


def rope_freqs(gguf, hp: dict, cfg) -> PlannedTensor:
    """Gemma 4's global layers rotate the first `partial_rotary_factor` share of the pairs (i, i + d/2):
    llama.cpp rotates all and divides each pair's angle by this table, 1e30 freezing a pair."""
    rope = cfg.rope[GLOBAL]
    if rope.rope_type != "proportional":
        raise ConfigError(f"rope_parameters.{GLOBAL}.rope_type: llama.cpp's gemma4 expects 'proportional', found {rope.rope_type!r}")
    head_dim = layer_of_type(cfg, GLOBAL).head_dim
    n_rot = int(head_dim * rope.partial_rotary_factor / 2)
    values = np.array([1.0] * n_rot + [FROZEN_ROPE_FACTOR] * (head_dim // 2 - n_rot), np.float32)  # (head_dim / 2,)
    return PlannedTensor("rope_freqs.weight", None, values.shape, gguf.GGMLQuantizationType.F32, values=values)


def nbytes(gguf, t: PlannedTensor) -> int:
    return int(np.prod(gguf.quant_shape_to_byte_shape(t.shape, t.qtype), dtype=np.int64))


def quantize_rows(gguf, values: np.ndarray, qtype) -> np.ndarray:
    """float32 (rows, cols) -> (rows, bytes per row) uint8 in `qtype`."""
    if qtype.name in K_QUANTIZERS:
        with np.errstate(all="ignore"):  # overflowing scales: `finite_scales` names the tensor
            return K_QUANTIZERS[qtype.name](values).reshape(len(values), -1)
    return gguf.quants.quantize(values, qtype).view(np.uint8).reshape(len(values), -1)


def stored_bytes(gguf, ckpt: Checkpoint, t: PlannedTensor) -> np.ndarray:
    """The tensor as the file stores it, (rows, bytes per row) uint8, made a block of rows at a time."""
    cols = t.shape[-1] if t.shape else 1
    rows = int(np.prod(t.shape[:-1], dtype=np.int64))
    out = np.empty((rows, nbytes(gguf, t) // rows), np.uint8)
    if t.source is None:
        out[:] = quantize_rows(gguf, t.values.reshape(rows, cols), t.qtype)
        return out
    ref = ckpt.refs[t.source]
    stored = ckpt.raw(t.source).reshape(-1, cols)[:rows]  # (rows, cols) view of the mapped file
    step = max(1, (K_CHUNK_VALUES if t.qtype.name in K_QUANTIZERS else CHUNK_VALUES) // cols)
    for r in range(0, rows, step):
        values = to_f32(stored[r : r + step], ref.dtype)  # (step, cols)
        if t.shift:
            values += np.float32(t.shift)
        out[r : r + step] = quantize_rows(gguf, values, t.qtype)
        if t.qtype.name in K_QUANTIZERS and not finite_scales(out[r : r + step], t.qtype.name):
            raise InputError(f"{t.source}: values up to {np.abs(values).max():.3g} overflow the float16 scales of "
                             f"{t.qtype.name} blocks (llama-quantize refuses them too); choose --type BF16 or F32")
    return out


# ------------------------------------------------------------------------------------ tokenizer

def add_tokenizer(gguf, w, src: Path, arch: str, tokens, scores, types) -> None:
    if arch == "gemma4":
        w.add_tokenizer_model("gemma4")
    else:
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if arch == "gemma4":
        gguf.SpecialVocab(src, load_merges=True).add_to_gguf(w, quiet=True)
        w.add_add_space_prefix(False)
        w.add_add_bos_token(True)
    else:
        gguf.SpecialVocab(src, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)
        w.add_add_space_prefix(False)
