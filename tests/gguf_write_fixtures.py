"""Fixed small checkpoints, and what llama.cpp's own converter wrote for them, for `minigemma quantize`.

`CASES`: four small random checkpoints (Gemma 4 with every switch, in bf16; Gemma 4 in the
multimodal layout; Gemma 3 untied with linear RoPE; Gemma 3 multimodal with a SigLIP tower the text
GGUF leaves out). Their weights come from NumPy's PCG64 with a fixed seed (stable across NumPy
versions, unlike torch's generator), their tokenizers from the embedded tiny model.

`listing(path)`: a GGUF file as comparable data: every key (type and value, long arrays as a
sha256), every tensor (type, shape, sha256 of its bytes), in file order.

tests/data/gguf_converter_listings.json holds the listings of the files that
`convert_hf_to_gguf.py` from the llama-cpp-python 0.3.36 sources wrote for each case and type it
writes (F32, F16, BF16, Q8_0), and of what `llama-quantize` made of its F32 files in the 4- and
5-bit types. To capture them again (this runs the converter, which needs torch, and llama-quantize):

    python tests/gguf_write_fixtures.py /path/to/llama.cpp /path/to/llama-quantize
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LISTINGS = HERE / "data" / "gguf_converter_listings.json"
TINY = Path(__file__).resolve().parent.parent / "minigemma" / "data" / "tiny"
SLIDING, GLOBAL = "sliding_attention", "full_attention"
CONVERTER_TYPES = ("F32", "F16", "BF16", "Q8_0")  # the types convert_hf_to_gguf.py writes itself
LLAMA_QUANTIZE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")  # the rest: llama-quantize of the converter's F32 file
INLINE_VALUES = 64  # longer arrays and strings are listed as a sha256

GEMMA4 = dict(
    vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=2,
    num_key_value_heads=2, head_dim=32, global_head_dim=64, num_global_key_value_heads=1, attention_k_eq_v=True,
    layer_types=[SLIDING, SLIDING, GLOBAL, SLIDING, GLOBAL], sliding_window=8, num_kv_shared_layers=2,
    use_double_wide_mlp=True, hidden_size_per_layer_input=8, vocab_size_per_layer_input=4096,
    final_logit_softcapping=30.0, rms_norm_eps=1e-6, enable_moe_block=True, num_experts=4, top_k_experts=2,
    moe_intermediate_size=32,
    rope_parameters={SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                     GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}},
)
GEMMA3 = dict(
    vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=7, num_attention_heads=2,
    num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8, rms_norm_eps=1e-6,
    sliding_window_pattern=6,  # the 5:1 pattern, the only one a converter-written gemma3 file can state
    rope_parameters={SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                     GLOBAL: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
)
GEMMA4_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
GEMMA3_TOKENIZER = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
# case -> (family, layout, dtype, seed); the listings hold CONVERTER_TYPES of the first two, F32 of the rest
CASES = {
    "gemma4": ("gemma4", "causal", "bfloat16", 1),
    "gemma3": ("gemma3", "causal", "float32", 2),
    "gemma4_mm": ("gemma4", "mm", "float32", 3),
    "gemma3_mm": ("gemma3", "mm", "float32", 4),
}


def case_types(case: str) -> tuple[str, ...]:
    return CONVERTER_TYPES if case in ("gemma4", "gemma3") else ("F32",)


def reference_model(family: str, layout: str, tie: bool = True):
    """The transformers model of a case, weights still as initialised."""
    import torch
    from transformers import (Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextConfig,
                              Gemma4Config, Gemma4ForCausalLM, Gemma4ForConditionalGeneration, Gemma4TextConfig)

    torch.manual_seed(0)
    if family == "gemma4":
        text = Gemma4TextConfig(**GEMMA4)
        if layout == "causal":
            return Gemma4ForCausalLM(text)
        return Gemma4ForConditionalGeneration(Gemma4Config(text_config=text.to_dict(), vision_config=None, audio_config=None))
    text = Gemma3TextConfig(**GEMMA3, tie_word_embeddings=tie)
    if layout == "causal":
        return Gemma3ForCausalLM(text)
    vision = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text.to_dict(), vision_config=vision, mm_tokens_per_image=4))


def fill(model, seed: int):
    """Every parameter and persistent buffer from NumPy's PCG64: scales (norms, layer scalars, router
    scales, every 1-D tensor) U(0.5, 1.5), embeddings N(0, 1), projections N(0, 1/fan_in)."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            shape = tuple(t.shape)
            if t.ndim <= 1 or name.endswith(("norm.weight", "layernorm.weight")):
                values = 0.5 + rng.random(shape)
            elif "embed" in name:
                values = rng.standard_normal(shape)
            else:
                values = rng.standard_normal(shape) / math.sqrt(shape[-1])
            t.copy_(torch.from_numpy(np.asarray(values, dtype=np.float32)))
    return model.eval()


def write_case(case: str, root: str | os.PathLike) -> Path:
    """Save a case's checkpoint (weights, config, tokenizer) as `root/case`; return that directory."""
    import torch

    family, layout, dtype, seed = CASES[case]
    model = fill(reference_model(family, layout, tie=layout != "causal"), seed).to(getattr(torch, dtype))
    out = Path(root) / case
    model.save_pretrained(out)
    for file in GEMMA4_TOKENIZER if family == "gemma4" else GEMMA3_TOKENIZER:
        shutil.copy(TINY / file, out / file)
    return out


def digest(value) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value).encode()).hexdigest()


def listing(path: str | os.PathLike) -> dict:
    """A GGUF file as JSON-comparable data (module docstring)."""
    import gguf

    reader = gguf.GGUFReader(path)
    keys = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        long = isinstance(value, list | str) and len(value) > INLINE_VALUES
        keys.append([key, [t.name for t in field.types], digest(value) if long else value])
    tensors = [
        [t.name, t.tensor_type.name, [int(n) for n in t.shape], "sha256:" + hashlib.sha256(np.asarray(t.data).tobytes()).hexdigest()]
        for t in reader.tensors
    ]
    return json.loads(json.dumps({"keys": keys, "tensors": tensors}))


def capture(converter_dir: str, llama_quantize: str) -> None:
    """Run llama.cpp's converter on every case and type, and llama-quantize on the F32 files of the
    first two cases for the types only it writes; write the listings (module docstring)."""
    found = {"converter": "convert_hf_to_gguf.py and llama-quantize of llama.cpp as vendored in llama-cpp-python 0.3.36",
             "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            src = write_case(case, tmp)
            for type_name in case_types(case):
                out = Path(tmp) / f"{case}.{type_name}.gguf"
                subprocess.run([sys.executable, "convert_hf_to_gguf.py", str(src), "--outfile", str(out),
                                "--outtype", type_name.lower()], cwd=converter_dir, check=True, capture_output=True)
                found["cases"][f"{case}/{type_name}"] = listing(out)
            for type_name in LLAMA_QUANTIZE_TYPES if len(case_types(case)) > 1 else ():
                out = Path(tmp) / f"{case}.{type_name}.gguf"
                subprocess.run([llama_quantize, str(Path(tmp) / f"{case}.F32.gguf"), str(out), type_name], check=True, capture_output=True)
                found["cases"][f"{case}/{type_name}"] = listing(out)
    LISTINGS.parent.mkdir(exist_ok=True)
    LISTINGS.write_text(dump_listings(found))


def dump_listings(found: dict) -> str:
    """JSON with one key or tensor a line, so that a recapture diffs line by line."""
    lines = ["{", f'"converter": {json.dumps(found["converter"])},', '"cases": {']
    for i, (name, entry) in enumerate(found["cases"].items()):
        lines.append(f'{json.dumps(name)}: {{"keys": [')
        lines.append(",\n".join(json.dumps(k) for k in entry["keys"]) + "],")
        lines.append('"tensors": [')
        lines.append(",\n".join(json.dumps(t) for t in entry["tensors"]) + "]}" + ("," if i < len(found["cases"]) - 1 else ""))
    return "\n".join(lines + ["}}", ""])


if __name__ == "__main__":
    capture(sys.argv[1], sys.argv[2])
