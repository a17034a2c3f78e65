"""A GGUF file's tensors under the names minigemma's loaders ask for, kept in the memory map.

llama.cpp names tensors its own way (`blk.3.attn_q.weight`); the loaders of `text/` ask for the
Hugging Face names (`model.layers.3.self_attn.q_proj.weight`). `GGUFCheckpoint` is the same
`TensorSource` as a safetensors `Checkpoint`, so every loader works unchanged; it differs in how
a tensor is handed out:

* BF16 matrices: views of the map (`StoredMatrix` with the kernels), as from safetensors; F16 ones
  widened to float32 when loaded;
* matrices block-quantized (Q8_0, Q4_K, ...) or float32: `QuantMatrix`, the rows as stored, multiplied by
  the backend's `quant_linear` (the Numba kernels, or the twin that dequantizes a block of rows at
  a time), MoE experts as `QuantExperts` (`stack`): only the chosen experts' blocks are read;
* embedding and Per-Layer-Embedding tables, whatever their type: only the rows of the tokens seen
  are read and dequantized (`QuantMatrix[ids]`);
* Gemma 3 norm weights: llama.cpp stores `1 + w` (its RMSNorm multiplies by the weight as is);
  the Hugging Face weight is `w`, so the 1 comes off here and the Gemma 3 config adds it back at
  load, exactly as the reference does with the same file.

The names, checked against llama.cpp's converter (`conversion/gemma.py`: `Gemma4Model.modify_tensors`
renames the router's `scale` to `ffn_gate_inp.scale`, `per_expert_scale` to `ffn_down_exps.scale`,
and suffixes `layer_scalar` with `.weight`) and the `gguf` package's tensor map:
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import CheckpointError
from .checkpoint import TensorRef, TensorSource, bf16_to_f32
from .gguf import GGMLType, GGUFFile, GGUFTensor
from .gguf_config import hf_config
from .quants import dequantize as dequantize_blocks
from .quants_matrix import QuantExperts, QuantMatrix, dequantize_linear

# GGUF name -> Hugging Face name (`Gemma4ForCausalLM` / `Gemma3ForCausalLM`: text model under `model.`)
MODEL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "per_layer_token_embd.weight": "model.embed_tokens_per_layer.weight",
    "per_layer_model_proj.weight": "model.per_layer_model_projection.weight",
    "per_layer_proj_norm.weight": "model.per_layer_projection_norm.weight",
}
LAYER_NAMES = {  # `blk.{i}.` + GGUF name -> `model.layers.{i}.` + Hugging Face name
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "layer_output_scale.weight": "layer_scalar",
    "inp_gate.weight": "per_layer_input_gate.weight",
    "proj.weight": "per_layer_projection.weight",
    "post_norm.weight": "post_per_layer_input_norm.weight",
    "ffn_gate_inp.weight": "router.proj.weight",
    "ffn_gate_inp.scale": "router.scale",
    "ffn_down_exps.scale": "router.per_expert_scale",
    "ffn_gate_up_exps.weight": "experts.gate_up_proj",
    "ffn_down_exps.weight": "experts.down_proj",
    "pre_ffw_norm_2.weight": "pre_feedforward_layernorm_2.weight",
    "post_ffw_norm_1.weight": "post_feedforward_layernorm_1.weight",
    "post_ffw_norm_2.weight": "post_feedforward_layernorm_2.weight",
}
LAYER_TENSOR = re.compile(r"^blk\.(\d+)\.(.+)$")
ROPE_FREQS = "rope_freqs.weight"  # read into the config (`gguf_config.global_rope`), not a weight
MMPROJ_ARCH = "clip"  # llama.cpp's companion file of encoders (`gguf_mmproj.py`)
PLAIN = ("F32", "F16", "BF16")
QUANTIZED = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")  # what Q4_K_M ... Q8_0 files hold
NORM_SUFFIX = "norm.weight"
NORM_SHIFT = {"gemma3_text": 1.0}  # llama.cpp folds Gemma 3's `1 + w` into the stored norm weights


def hf_name(gguf_name: str, where: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    if gguf_name in MODEL_NAMES:
        return MODEL_NAMES[gguf_name]
    m = LAYER_TENSOR.match(gguf_name)
    if m and m.group(2) in LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"
    raise CheckpointError(f"{where}: tensor {gguf_name!r} is not part of a Gemma text model (no minigemma name for it)")


def dequantize(raw: np.ndarray, kind: GGMLType, cols: int) -> np.ndarray:
    """Stored rows -> float32 (rows, cols). F32 / F16 / BF16 here; block types by `quants.py`."""
    if kind.name == "BF16":
        return bf16_to_f32(raw).reshape(-1, cols)
    if kind.name in PLAIN:
        return np.asarray(raw, np.float32).reshape(-1, cols)
    return dequantize_blocks(np.asarray(raw).reshape(-1, raw.shape[-1]), kind.id, cols)


class GGUFCheckpoint(TensorSource):
    """The tensors of a `GGUFFile` under Hugging Face names. `norm_shift`: what llama.cpp added to
    every norm weight (1 for Gemma 3, 0 for Gemma 4), taken off again."""

    def __init__(self, file: GGUFFile, norm_shift: float = 0.0):
        super().__init__()
        self.file, self.directory, self.norm_shift = file, file.path, norm_shift
        self.quant_linear = dequantize_linear  # how a QuantMatrix multiplies: `Backend.quant_linear`
        self.tensors: dict[str, GGUFTensor] = {}
        self.refs = {}
        for t in file.tensors.values():
            if t.name == ROPE_FREQS:
                continue
            if t.type.name not in PLAIN + QUANTIZED:
                raise CheckpointError(
                    f"{file.path}: tensor {t.name!r} is stored as {t.type.name}; minigemma reads {', '.join(PLAIN + QUANTIZED)}"
                )
            name = hf_name(t.name, file.path)
            self.tensors[name] = t
            self.refs[name] = TensorRef(name, file.path, t.type.name, t.shape, t.start, t.nbytes)

    def ref(self, name: str, shape: tuple[int, ...] | None = None) -> TensorRef:
        try:
            return super().ref(name, shape)
        except CheckpointError:  # the same check, said with the file's own name for the tensor
            if name not in self.tensors:
                raise CheckpointError(f"{self.directory}: missing tensor {gguf_name(name)!r} ({name})") from None
            t = self.tensors[name]
            raise CheckpointError(
                f"{self.directory}: tensor {t.name!r} has shape {list(t.shape)} ({t.type.name}), the model's config "
                f"expects {list(shape)}"
            ) from None

    def _stored(self, ref: TensorRef):
        """A `QuantMatrix` of the map's rows (3-D: `QuantExperts`); F16 / BF16, and F32 vectors: a view."""
        t = self.tensors[ref.name]
        raw = self.file.raw(t)  # blocks: (rows, row_bytes)
        if t.type.name in PLAIN:
            if len(t.shape) != 2 or t.type.name != "F32":
                return raw
            # a float32 matrix (E2B's PLE projection) is one more type to the quantized
            # kernels: its GEMV is theirs, not OpenBLAS's, whose threads spin ~0.1 s after a call
            # (its THREAD_TIMEOUT) on the cores the GEMVs around it need (an E2B-shaped Q4_0 step:
            # 186 ms with OpenBLAS's, 112 ms without; benchmarks/README.md)
            raw = raw.view(np.uint8)  # (rows, cols x item size)
        if len(t.shape) == 3:
            return QuantExperts(raw.reshape(*t.shape[:2], -1), t.type.id, t.shape[-1], self.quant_linear)
        return QuantMatrix(raw, t.type.id, t.shape[-1], self.quant_linear)

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor as float32 in memory (dequantized, norm shift taken off)."""
        self.ref(name, shape)  # marks it read, checks the shape
        t = self.tensors[name]
        values = dequantize(self.file.raw(t), t.type, t.shape[-1]).reshape(t.shape)
        if self.norm_shift and name.endswith(NORM_SUFFIX):
            values = values - np.float32(self.norm_shift)
        return np.array(values, np.float32)  # ours, not a view of the map

    def matrix(self, name: str, shape: tuple[int, ...]):
        """As stored: blocks and float32 as a `QuantMatrix`, bf16 / f16 as for safetensors (`TensorSource.matrix`)."""
        ref = self.ref(name, shape)
        return self._stored(ref) if ref.dtype == "F32" or ref.dtype not in PLAIN else super().matrix(name, shape)

    def stack(self, name: str, shape: tuple[int, ...]):
        """A stack of matrices (MoE experts): `QuantExperts` when block-quantized, else float32."""
        ref = self.ref(name, shape)
        return self.f32(name, shape) if ref.dtype in PLAIN else self._stored(ref)


def gguf_name(hf: str) -> str:
    """The file's name for a Hugging Face name (for messages about a missing tensor)."""
    for g, h in MODEL_NAMES.items():
        if h == hf:
            return g
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", hf)
    if m:
        for g, h in LAYER_NAMES.items():
            if h == m.group(2):
                return f"blk.{m.group(1)}.{g}"
    return hf


def open_gguf(path) -> tuple[dict, GGUFCheckpoint]:
    """A GGUF model file -> (its config.json as a dict, its tensors). Nothing is read but the header
    and the small `rope_freqs` table."""
    file = GGUFFile(path)
    if file.metadata.get("general.architecture") == MMPROJ_ARCH:
        raise CheckpointError(f"{file.path}: general.architecture is {MMPROJ_ARCH!r}: an mmproj file (a model's encoders), "
                              "expected a text model; pass this file as mmproj (--mmproj) beside its model")
    rope = file.tensors.get(ROPE_FREQS)
    rope_freqs = dequantize(file.raw(rope), rope.type, rope.shape[-1]) if rope is not None else None
    config = hf_config(file.metadata, set(file.tensors), rope_freqs, file.path)
    return config, GGUFCheckpoint(file, NORM_SHIFT.get(config["model_type"], 0.0))
