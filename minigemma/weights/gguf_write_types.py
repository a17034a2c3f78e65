"""Which GGML type each tensor of a written GGUF gets, for every `minigemma quantize --type`.

Three families of rules, each the one llama.cpp's own tools apply:

* the converter's types (F32, F16, BF16, Q8_0; `convert_hf_to_gguf.py`) and llama-quantize's
  32-value types (Q4_0, Q4_1, Q5_0, Q5_1): every eligible matrix in the chosen type, a row whose
  length is not a multiple of the block in F16;
* one K-quant for every eligible matrix (Q4_K, Q5_K, Q6_K): as `llama-quantize --pure`; a row that
  is not a multiple of 256 falls back as llama-quantize does (Q4_K -> Q5_0, Q5_K -> Q5_1,
  Q6_K -> Q8_0; F16 if the fallback does not fit either). Q6_K equals llama-quantize's Q6_K for
  Gemma, whose mix only differs for 8-expert models. (llama-quantize's own "Q4_K" / "Q5_K" are
  aliases of the mixes below; ours are the plain types.)
* the mixes users download, Q4_K_M and Q5_K_M: mostly Q4_K / Q5_K, with more bits where the
  error costs most. This mirrors `llama_tensor_get_type_impl` in llama.cpp's src/llama-quant.cpp
  (llama-cpp-python 0.3.36 sources), reduced to what reaches Gemma 3 and Gemma 4 tensors:
    - the head (`output`, or with tied embeddings `token_embd` and `per_layer_token_embd`, which
      llama.cpp counts as token embeddings too): Q6_K, or Q8_0 when its rows are not whole
      256-value blocks;
    - `attn_v` (there is none on Gemma 4's k_eq_v and KV-shared layers): Q6_K for the i-th of
      n when `more_bits(i, n)`;
    - `ffn_down` and the experts' `ffn_down_exps` of layer i of n: Q6_K when `more_bits(i, n)`;
    - with exactly 8 experts (Mixtral's count; no Gemma has it): `attn_v`, `attn_k` Q8_0 and,
      under Q4_K_M, `attn_output` Q5_K;
  then the fallback above for rows that are not whole blocks.

In every family the tensors llama.cpp never quantizes stay F32: 1-D tensors, norms, anything not
named `.weight` (the `.scale` vectors), the MoE router `ffn_gate_inp`, and under the types only
llama-quantize writes, `per_layer_model_proj` ("not too big").
"""

from __future__ import annotations

import re

CONVERTER_TYPES = ("F32", "F16", "BF16", "Q8_0")  # what convert_hf_to_gguf.py writes itself; the rest llama-quantize does
BLOCK_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")
K_TYPES = ("Q4_K", "Q5_K", "Q6_K")
MIXES = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K"}  # mix -> the type of most of its matrices
TYPES = CONVERTER_TYPES + BLOCK_TYPES + K_TYPES + tuple(MIXES)
BLOCK_VALUES = {"F32": 1, "F16": 1, "BF16": 1, "Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32,
                "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
K_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # llama-quantize's tensor_type_fallback
LAYER = re.compile(r"blk\.(\d+)\.")


def more_bits(i: int, n: int) -> bool:
    """llama-quantize's use_more_bits: the first and last eighth of the layers, and every third
    one between them, get the bigger type."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def kept_f32(name: str, shape: tuple[int, ...], type_name: str) -> bool:
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return True
    if re.fullmatch(r"blk\.\d+\.ffn_gate_inp\.weight", name):  # the MoE router decides, keep it exact
        return True
    return type_name not in CONVERTER_TYPES and "per_layer_model_proj" in name


def fits(type_name: str, cols: int) -> str:
    """The type itself if a row of `cols` values is whole blocks of it, else the fallback."""
    if cols % BLOCK_VALUES[type_name] == 0:
        return type_name
    fallback = K_FALLBACK.get(type_name, "F16")
    return fallback if cols % BLOCK_VALUES[fallback] == 0 else "F16"


def storage_types(tensors: list[tuple[str, tuple[int, ...]]], type_name: str, n_layers: int, n_experts: int = 0) -> list[str]:
    """The GGML type name of each (llama.cpp name, NumPy shape) of one file, under `--type type_name`
    (module docstring). The whole list, because a mix looks at the file: is the head tied, how many
    `attn_v` are there."""
    tied = not any(name == "output.weight" for name, _ in tensors)
    attn_v = sorted(int(LAYER.match(n).group(1)) for n, _ in tensors if n.endswith("attn_v.weight"))
    out = []
    for name, shape in tensors:
        if kept_f32(name, shape, type_name):
            out.append("F32")
        elif type_name in MIXES:
            out.append(fits(mix_type(name, shape[-1], type_name, tied, attn_v, n_layers, n_experts), shape[-1]))
        else:
            out.append(fits(type_name, shape[-1]))
    return out


def mix_type(name: str, cols: int, mix: str, tied: bool, attn_v: list[int], n_layers: int, n_experts: int) -> str:
    """One tensor's type under Q4_K_M / Q5_K_M, before the fallback (module docstring)."""
    head = name == "output.weight" or tied and name in ("token_embd.weight", "per_layer_token_embd.weight")
    if head:
        return "Q6_K" if cols % BLOCK_VALUES["Q6_K"] == 0 else "Q8_0"
    layer = LAYER.match(name)
    i = int(layer.group(1)) if layer else -1
    if name.endswith("attn_v.weight"):
        if n_experts == 8:
            return "Q8_0"
        return "Q6_K" if more_bits(attn_v.index(i), len(attn_v)) else MIXES[mix]
    if name.endswith("attn_k.weight") and n_experts == 8:
        return "Q8_0"
    if name.endswith("attn_output.weight") and n_experts == 8 and mix == "Q4_K_M":
        return "Q5_K"
    if "ffn_down" in name and more_bits(i, n_layers):
        return "Q6_K"
    return MIXES[mix]
