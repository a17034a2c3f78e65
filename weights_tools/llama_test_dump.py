"""Make the llama.cpp dump the tests read (tests/data/llama_dump_e2b_like.bin): a random
checkpoint in the E2B-like layout (vocabulary widened to the embedded tokenizer's, which
llama.cpp's converter needs), converted to an f32 GGUF by llama.cpp's own converter, run by
llama_dump on fixed ids. The test makes the same checkpoint again and traces it with minigemma.

    python -m weights_tools.llama_test_dump LLAMA_SRC LLAMA_DUMP_BINARY OUT.bin
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from minigemma.model import default_model_path
from minigemma.verify.llama_cpp import name_regex
from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint

VOCAB = 4096  # the embedded model's tokenizer
CONFIG = dict(PRESETS["e2b-like"], vocab_size=VOCAB, vocab_size_per_layer_input=VOCAB, architectures=["Gemma4ForCausalLM"])
IDS = (2, 17, 101, 5, 120, 33, 7, 64)  # past the sliding window of 6
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


def write_checkpoint(out: str) -> str:
    write_random_checkpoint(out, CONFIG, "F32", seed=0, kv_on_shared=True, random_scalars=True)
    return out


def main(argv=None) -> int:
    src, binary, out = (argv or sys.argv[1:])[:3]
    with tempfile.TemporaryDirectory() as tmp:
        model = write_checkpoint(os.path.join(tmp, "model"))
        for name in TOKENIZER_FILES:
            shutil.copy(os.path.join(default_model_path(), name), model)
        gguf = os.path.join(tmp, "model.gguf")
        subprocess.run([sys.executable, os.path.join(src, "convert_hf_to_gguf.py"), model, "--outfile", gguf, "--outtype", "f32"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([binary, gguf, out, ",".join(map(str, IDS)), name_regex()], check=True, capture_output=True)
    print(f"wrote {out} ({os.path.getsize(out) / 2**10:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
