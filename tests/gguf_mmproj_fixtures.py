"""A fixed small Gemma 4 with both towers, and what llama.cpp's converter wrote as its mmproj.

`write_mmproj_case(root)` saves a `Gemma4ForConditionalGeneration` (text, vision and audio towers;
weights from NumPy's PCG64, `gguf_write_fixtures.fill`, stable across versions) with the tiny
model's tokenizer and a processor config, as `convert_hf_to_gguf.py --mmproj` needs one.
tests/data/gguf_mmproj_converter_listings.json holds the listings (`gguf_write_fixtures.listing`)
of the mmproj files that converter (llama.cpp sources at /work/llama-src, the `conversion/gemma.py`
generation) wrote for it in F32, F16, BF16 and Q8_0, and the values of its softplus'd tensors
(`softplus_values`). To capture them again (needs torch):

    python tests/gguf_mmproj_fixtures.py /path/to/llama.cpp
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gguf_write_fixtures import CONVERTER_TYPES, GEMMA4, GEMMA4_TOKENIZER, TINY, dump_listings, fill, listing

HERE = Path(__file__).resolve().parent
LISTINGS = HERE / "data" / "gguf_mmproj_converter_listings.json"
SEED = 6
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              head_dim=16, patch_size=4, position_embedding_size=24, use_clipped_linears=True, standardize=True)
AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[8, 4],
             output_proj_dims=32, use_clipped_linears=True)
SOFTPLUS = ".per_dim_scale.weight"  # stored as softplus(p)
PROCESSOR = {"image_processor": {"image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0]}}


def write_mmproj_case(root) -> Path:
    import torch
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig

    torch.manual_seed(0)
    text = Gemma4TextConfig(**GEMMA4)
    model = Gemma4ForConditionalGeneration(Gemma4Config(text_config=text.to_dict(), vision_config=VISION, audio_config=AUDIO))
    out = Path(root) / "gemma4_towers"
    fill(model, SEED).save_pretrained(out)
    for file in GEMMA4_TOKENIZER:
        shutil.copy(TINY / file, out / file)
    (out / "processor_config.json").write_text(json.dumps(PROCESSOR))
    return out


def capture(converter_dir: str) -> None:
    found = {"converter": "convert_hf_to_gguf.py --mmproj of the llama.cpp sources in /work/llama-src", "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = write_mmproj_case(tmp)
        for type_name in CONVERTER_TYPES:
            out = Path(tmp) / f"mmproj.{type_name}.gguf"
            subprocess.run([sys.executable, "convert_hf_to_gguf.py", str(src), "--mmproj", "--outfile", str(out),
                            "--outtype", type_name.lower()], cwd=converter_dir, check=True, capture_output=True)
            found["cases"][f"mmproj/{type_name}"] = listing(out)
            found["softplus"] = softplus_values(out)
    LISTINGS.write_text(dump_listings(found)[: -len("}}\n")] + "},\n" + f'"softplus": {json.dumps(found["softplus"])}' + "}\n")


def softplus_values(path) -> dict[str, list[float]]:
    """The `per_dim_scale` tensors' values: the converter computes softplus with torch, whose vectorised
    exp / log1p may differ from NumPy's in the last bit, so these are compared to 1 ulp, not by hash."""
    import gguf

    return {t.name: [float(v) for v in t.data] for t in gguf.GGUFReader(path).tensors if t.name.endswith(SOFTPLUS)}


if __name__ == "__main__":
    capture(sys.argv[1])
