"""llama.cpp's intermediate tensors under minigemma's names, so `compare` can say where
llama.cpp's graph leaves the reference on the same weights.

    minigemma trace --engine llama.cpp --model FILE.gguf --ids 2,15,7 --out llama.safetensors [--llama-dump BIN]

llama.cpp names the tensors of its Gemma 4 graph with `cb(tensor, "name", layer)`
(`src/models/gemma4.cpp`), and calls a callback on each while it computes. `llama-eval-callback`
prints only three values per edge of each tensor, so `weights_tools/llama_dump/llama_dump.cpp`
(forty lines against llama.h; `weights_tools/llama_dump/build.sh` compiles it against a
llama.cpp build) writes every tensor whole: records of [u32 name length][name][u32 4][i64 ne[4]]
[f32 data, ne0 fastest]. `LLAMA_NAMES` maps its names to minigemma's (docs/verify.md has the
table); the binary comes from `--llama-dump` or the MINIGEMMA_LLAMA_DUMP environment variable.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile

import numpy as np

from ..errors import InputError
from .trace import forward_order

ENV = "MINIGEMMA_LLAMA_DUMP"
# (llama.cpp name, minigemma name); `-{i}` is layer i. A name llama.cpp gives twice in a layer
# (a view of the same tensor) is taken at its first occurrence.
LLAMA_NAMES = (
    ("inp_scaled", "embed"),
    ("inp_per_layer_selected", "ple.identity"),
    ("per_layer_proj", "ple.context"),
    ("inp_per_layer", "ple.inputs"),
    ("attn_norm-{i}", "layers.{i}.attn.in"),
    ("Qcur_normed-{i}", "layers.{i}.attn.q"),
    ("Kcur_normed-{i}", "layers.{i}.attn.k"),
    ("Vcur_normed-{i}", "layers.{i}.attn.v"),
    ("kqv_out-{i}", "layers.{i}.attn.context"),
    ("attn_post_norm-{i}", "layers.{i}.attn.post_norm"),
    ("attn_out-{i}", "layers.{i}.attn.residual"),
    ("ffn_norm-{i}", "layers.{i}.mlp.in"),  # dense layers
    ("ffn_norm_1-{i}", "layers.{i}.mlp.in"),  # MoE layers: the shared expert's input
    ("ffn_geglu-{i}", "layers.{i}.mlp.gated"),
    ("ffn_out-{i}", "layers.{i}.mlp.out"),  # dense layers
    ("ffn_mlp-{i}", "layers.{i}.mlp.post_norm"),  # MoE layers: after post_feedforward_layernorm_1
    ("ffn_moe_probs-{i}", "layers.{i}.moe.router.probs"),
    ("ffn_norm_2-{i}", "layers.{i}.moe.experts.in"),
    ("ffn_moe-{i}", "layers.{i}.moe.experts.post_norm"),
    ("ffn_moe_combined-{i}", "layers.{i}.moe.out"),
    ("ffn_post_norm-{i}", "layers.{i}.{ffw}.post_norm"),  # mlp without MoE, moe with it
    ("pe_in-{i}", "layers.{i}.ple.in"),
    ("per_layer_embd_out-{i}", "layers.{i}.ple.post_norm"),
    ("l_out-{i}", "layers.{i}.out"),
    ("result_norm", "final_norm"),
    ("result_output", "logits"),
)


def name_regex() -> str:
    """The names `LLAMA_NAMES` reads, as llama_dump's filter (the rest of the graph is not written)."""
    plain = [llama for llama, _ in LLAMA_NAMES if "{i}" not in llama]
    layered = [llama.removesuffix("-{i}") for llama, _ in LLAMA_NAMES if "{i}" in llama]
    return f"({'|'.join(plain)}|({'|'.join(layered)})-[0-9]+)"


def read_dump(path: str) -> dict[str, np.ndarray]:
    """A llama_dump file: name -> float32 array in NumPy axis order (ggml's ne reversed), the
    first record of each name."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read the llama.cpp dump ({e.strerror})") from None
    out, at = {}, 0
    try:
        while at < len(data):
            (n,) = struct.unpack_from("<I", data, at)
            name = data[at + 4 : at + 4 + n].decode()
            at += 4 + n
            (dims,) = struct.unpack_from("<I", data, at)
            ne = struct.unpack_from(f"<{dims}q", data, at + 4)
            at += 4 + 8 * dims
            count = int(np.prod(ne))
            if at + 4 * count > len(data):
                raise ValueError
            if name not in out:
                out[name] = np.frombuffer(data, np.float32, count, at).reshape(ne[::-1]).copy()
            at += 4 * count
    except (struct.error, ValueError, UnicodeDecodeError):
        raise InputError(f"{path}: not a llama_dump file (a record at byte {at} is cut short or malformed)") from None
    return out


def as_minigemma(dump: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """llama.cpp's tensors under minigemma's names and shapes, in forward order."""
    layers = sorted({int(m[1]) for n in dump if (m := re.fullmatch(r"l_out-(\d+)", n))})
    acts = {}
    for llama, ours in LLAMA_NAMES:
        for i in layers if "{i}" in llama else [None]:
            name = llama.format(i=i)
            if name not in dump:
                continue
            moe = f"ffn_moe-{i}" in dump
            acts[ours.format(i=i, ffw="moe" if moe else "mlp")] = _squeeze(dump[name])
    for i in layers:  # o_proj's input: (seq, heads * head_dim) -> per head, as the queries
        q, ctx = acts.get(f"layers.{i}.attn.q"), acts.get(f"layers.{i}.attn.context")
        if q is not None and ctx is not None:
            if q.ndim != 3 or ctx.ndim != 2 or ctx.shape[0] != q.shape[0] or ctx.shape[1] != q.shape[1] * q.shape[2]:
                raise InputError(f"llama.cpp dump: kqv_out-{i} {ctx.shape} does not split into the heads of Qcur_normed-{i} {q.shape}")
            acts[f"layers.{i}.attn.context"] = ctx.reshape(ctx.shape[0], q.shape[1], -1)
    return {n: acts[n] for n in forward_order(acts)}


def _squeeze(a: np.ndarray) -> np.ndarray:
    """ggml pads every tensor to 4 axes: drop the leading ones of size 1 (axis 0 is the token)."""
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return np.ascontiguousarray(a)


def find_binary(flag: str | None) -> str:
    path = flag or os.environ.get(ENV)
    if not path:
        raise InputError(f"--engine llama.cpp: give the llama_dump binary with --llama-dump PATH or ${ENV} "
                         "(build it with weights_tools/llama_dump/build.sh, docs/verify.md)")  # fmt: skip
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise InputError(f"--llama-dump {path}: not an executable file")
    return path


def capture(binary: str, gguf: str, ids) -> dict[str, np.ndarray]:
    """Run llama.cpp on the ids and return its activations under minigemma's names."""
    if not os.path.isfile(gguf):
        raise InputError(f"--model {gguf}: no such GGUF file (--engine llama.cpp reads one .gguf)")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "dump.bin")
        argv = [binary, gguf, out, ",".join(str(int(i)) for i in ids), name_regex()]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no message"])[-1]
            raise InputError(f"llama.cpp ({binary}) failed on {gguf} with status {r.returncode}: {last}")
        return as_minigemma(read_dump(out))
