"""The encoders of a GGUF model: llama.cpp's companion `mmproj` file, read as a Hugging Face checkpoint.

llama.cpp users run a multimodal Gemma 4 from two files: the text model (`model.gguf`) and the
encoders (`mmproj.gguf`, written by `convert_hf_to_gguf.py --mmproj`, architecture `clip`,
projector types `gemma4v` / `gemma4a`). `open_mmproj` restates the second as what minigemma's
tower loaders already read: the `vision_config` / `audio_config` of a config.json and a
`TensorSource` under Hugging Face names (`gguf_mmproj_names.py` has the name table and the three
tensors that change form). Quantized tensors (F16, Q8_0, ...) are dequantized by `quants.py`.

The file says little about the towers; the rest comes from its tensors' shapes or is fixed in
llama.cpp's code (`tools/mtmd/clip.cpp`, `models/gemma4v.cpp`, `models/gemma4a.cpp`):

| config field (vision)                       | from                                                   |
| ------------------------------------------- | ------------------------------------------------------ |
| hidden, intermediate size, layers, heads     | `clip.vision.embedding_length`, `feed_forward_length`, `block_count`, `attention.head_count` |
| patch_size, rms_norm_eps                     | `clip.vision.patch_size`, `attention.layer_norm_epsilon` |
| head_dim, num_key_value_heads                | shapes of `v.blk.0.attn_q_norm`, `v.blk.0.attn_k`       |
| position_embedding_size                      | shape of `v.position_embd`                              |
| use_clipped_linears, standardize             | whether `*.input_min`, `v.std_bias` are present          |
| pooling_kernel_size                          | `clip.vision.projector.scale_factor`, else llama.cpp's 3 |
| RoPE theta 100, gelu (tanh) MLP              | fixed by llama.cpp                                      |

| config field (audio)                         | from                                                   |
| ------------------------------------------- | ------------------------------------------------------ |
| hidden size, layers, heads; mel bins          | `clip.audio.embedding_length`, `block_count`, `attention.head_count`; `num_mel_bins` |
| subsampling channels, conv kernel, output dims | shapes of `a.conv1d.{0,1}`, `a.blk.0.conv_dw`, `a.pre_encode.out` |
| use_clipped_linears                          | whether `a.*.input_min` are present                      |
| chunk 12, context 13 left / 0 right, logit cap 50, residual 0.5, silu, eps 1e-6 | fixed by llama.cpp (which ignores the file's eps: older converters wrote a wrong one) |

Both must fit the text model: `clip.{vision,audio}.projection_dim` is its hidden size. Any
mismatch -- a text GGUF given as mmproj, another projector, a missing tensor, a wrong shape -- is
one `CheckpointError` naming the file, the key or tensor, what was expected and what was found.
"""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError
from .checkpoint import TensorRef, TensorSource
from .gguf import GGUFFile
from .gguf_mmproj_names import BOUNDS, from_gguf, gguf_name, hf_name, hf_shape
from .gguf_weights import PLAIN, QUANTIZED, dequantize

ARCH = "clip"
PROJECTOR = {"vision": "gemma4v", "audio": "gemma4a"}
SCALE_FACTOR = "clip.vision.projector.scale_factor"  # optional in clip.cpp: the pooling kernel
# what llama.cpp's code fixes for Gemma 4's towers, in config.json's terms
VISION_FIXED = {"rope_parameters": {"rope_type": "axial", "rope_theta": 100.0}, "hidden_activation": "gelu_pytorch_tanh",
                "pooling_kernel_size": 3}
AUDIO_FIXED = {"hidden_act": "silu", "residual_weight": 0.5, "attention_chunk_size": 12, "attention_context_left": 13,
               "attention_context_right": 0, "attention_logit_cap": 50.0, "attention_invalid_logits_value": -1.0e9,
               "gradient_clipping": 1.0e10, "rms_norm_eps": 1e-6}
DEFAULT_EPS = 1e-6
CAUSAL_IMAGE_HIDDEN = (1536, 2560)  # E2B / E4B: llama.cpp keeps image tokens causal (`multimodal_config`)
MEDIA_PIECES = {  # the multimodal special tokens, found by their pieces in the text model's vocabulary
    "image_token_id": "<|image|>", "boi_token_id": "<|image>", "eoi_token_id": "<image|>",
    "audio_token_id": "<|audio|>", "boa_token_id": "<|audio>", "eoa_token_index": "<audio|>", "video_token_id": "<|video|>",
}


class MmprojCheckpoint(TensorSource):
    """The tensors of an mmproj file under Hugging Face names and shapes, dequantized on request."""

    def __init__(self, file: GGUFFile):
        super().__init__()
        self.file, self.directory = file, file.path
        self.stored, self.refs = {}, {}
        for t in file.tensors.values():
            name = hf_name(t.name)
            if name is None:
                raise CheckpointError(f"{file.path}: tensor {t.name!r} is not part of a Gemma 4 mmproj (no minigemma name for it)")
            if t.type.name not in PLAIN + QUANTIZED:
                raise CheckpointError(f"{file.path}: tensor {t.name!r} is stored as {t.type.name}; minigemma reads {', '.join(PLAIN + QUANTIZED)}")
            self.stored[name] = t
            self.refs[name] = TensorRef(name, file.path, t.type.name, hf_shape(t.name, t.shape), t.start, t.nbytes)

    def ref(self, name: str, shape: tuple[int, ...] | None = None) -> TensorRef:
        self.accessed.add(name)
        if name not in self.refs:
            raise CheckpointError(f"{self.directory}: missing tensor {gguf_name_of(name)!r} ({name})")
        ref = self.refs[name]
        if shape is not None and tuple(ref.shape) != tuple(shape):
            t = self.stored[name]
            raise CheckpointError(
                f"{self.directory}: tensor {t.name!r} has shape {list(t.shape)} ({t.type.name}, {name} {list(ref.shape)}), "
                f"the model expects {name} {list(shape)}"
            )
        return ref

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        ref = self.ref(name, shape)
        t = self.stored[name]
        values = dequantize(self.file.raw(t), t.type, t.shape[-1]).reshape(t.shape)
        return np.array(from_gguf(t.name, values, ref.shape), np.float32)

    def matrix(self, name: str, shape: tuple[int, ...]):
        return self.f32(name, shape)


def gguf_name_of(hf: str) -> str:
    return gguf_name(hf) or hf


class Keys:
    """Typed access to the `clip.` metadata; failures are `CheckpointError`s naming the key."""

    def __init__(self, file: GGUFFile):
        self.m, self.path = file.metadata, file.path

    def fail(self, key: str, expected: str, found) -> None:
        raise CheckpointError(f"{self.path}: metadata {key}: expected {expected}, found {found!r}")

    def count(self, key: str, default=None) -> int:
        v = self.m.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            self.fail(key, "a positive integer" if key in self.m else "a positive integer (the file has no such key)", v)
        return v

    def number(self, key: str, default: float) -> float:
        v = self.m.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            self.fail(key, "a positive number", v)
        return float(str(np.float32(v)))  # the float32 the file holds, as written: 1e-06, not 9.99999997e-07


def check_kind(file: GGUFFile) -> None:
    """An mmproj file, not a model: `general.architecture` is `clip`."""
    arch = file.metadata.get("general.architecture")
    if arch != ARCH:
        hint = " (a text model: pass it as the model, and its mmproj file as mmproj)" if arch in ("gemma4", "gemma3") else ""
        raise CheckpointError(f"{file.path}: general.architecture is {arch!r}, expected {ARCH!r} for an mmproj file{hint}")


def tensor_shape(file: GGUFFile, name: str, dims: int) -> tuple[int, ...]:
    t = file.tensors.get(name)
    if t is None:
        raise CheckpointError(f"{file.path}: missing tensor {name!r}")
    if len(t.shape) != dims:
        raise CheckpointError(f"{file.path}: tensor {name!r} has shape {list(t.shape)}, expected {dims} dimensions")
    return t.shape


def check_projector(k: Keys, what: str, text_hidden: int) -> None:
    key = f"clip.{what}.projector_type"
    found = k.m.get(key, k.m.get("clip.projector_type"))
    if found != PROJECTOR[what]:
        k.fail(key, repr(PROJECTOR[what]) + " (Gemma 4's)", found)
    dim = k.count(f"clip.{what}.projection_dim")
    if dim != text_hidden:
        k.fail(f"clip.{what}.projection_dim", f"the text model's hidden size {text_hidden}", dim)


def clipped(file: GGUFFile, prefix: str) -> bool:
    return any(n.startswith(prefix) and n.endswith(BOUNDS) for n in file.tensors)


def vision_config(file: GGUFFile, k: Keys) -> dict:
    hidden, layers = k.count("clip.vision.embedding_length"), k.count("clip.vision.block_count")
    heads = k.count("clip.vision.attention.head_count")
    head_dim = tensor_shape(file, "v.blk.0.attn_q_norm.weight", 1)[0]
    kv_rows = tensor_shape(file, "v.blk.0.attn_k.weight", 2)[0]
    if kv_rows % head_dim:
        raise CheckpointError(f"{file.path}: tensor 'v.blk.0.attn_k.weight' has {kv_rows} rows, expected a multiple of head_dim {head_dim}")
    return VISION_FIXED | {
        "hidden_size": hidden, "intermediate_size": k.count("clip.vision.feed_forward_length"), "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_rows // head_dim, "head_dim": head_dim,
        "rms_norm_eps": k.number("clip.vision.attention.layer_norm_epsilon", DEFAULT_EPS),
        "pooling_kernel_size": k.count(SCALE_FACTOR, VISION_FIXED["pooling_kernel_size"]),
        "patch_size": k.count("clip.vision.patch_size"),
        "position_embedding_size": tensor_shape(file, "v.position_embd.weight", 3)[1],
        "use_clipped_linears": clipped(file, "v."), "standardize": "v.std_bias" in file.tensors,
    }


def audio_config(file: GGUFFile, k: Keys) -> dict:
    return AUDIO_FIXED | {
        "hidden_size": k.count("clip.audio.embedding_length"), "num_hidden_layers": k.count("clip.audio.block_count"),
        "num_attention_heads": k.count("clip.audio.attention.head_count"),
        "subsampling_conv_channels": [tensor_shape(file, f"a.conv1d.{i}.weight", 4)[0] for i in (0, 1)],
        "conv_kernel_size": tensor_shape(file, "a.blk.0.conv_dw.weight", 2)[1],
        "output_proj_dims": tensor_shape(file, "a.pre_encode.out.weight", 2)[0],
        "use_clipped_linears": clipped(file, "a."),
    }


def media_tokens(text_metadata: dict) -> dict[str, int]:
    """The ids of the image / audio / video marks, by their pieces in the text model's vocabulary."""
    pieces = text_metadata.get("tokenizer.ggml.tokens") or []
    index = {piece: i for i, piece in enumerate(pieces) if piece in MEDIA_PIECES.values()}
    return {key: index[piece] for key, piece in MEDIA_PIECES.items() if piece in index}


def open_mmproj(path, text_hidden: int) -> tuple[dict | None, dict | None, int | None, MmprojCheckpoint]:
    """An mmproj file -> (vision_config or None, audio_config or None, mel bins or None, its tensors),
    checked against the text model's hidden size `text_hidden`."""
    file = GGUFFile(path)
    check_kind(file)
    k = Keys(file)
    vision = audio = mels = None
    if k.m.get("clip.has_vision_encoder"):
        check_projector(k, "vision", text_hidden)
        vision = vision_config(file, k)
    if k.m.get("clip.has_audio_encoder"):
        check_projector(k, "audio", text_hidden)
        audio = audio_config(file, k)
        mels = k.count("clip.audio.num_mel_bins")
    if vision is None and audio is None:
        k.fail("clip.has_vision_encoder / clip.has_audio_encoder", "true (an encoder)", None)
    return vision, audio, mels, MmprojCheckpoint(file)


def multimodal_config(text: dict, text_metadata: dict, vision: dict | None, audio: dict | None) -> dict:
    """The config.json of `Gemma4ForConditionalGeneration` made of a text GGUF's config and the
    mmproj's towers. llama.cpp lets image tokens attend to each other both ways except on the
    E2B / E4B shapes (hidden 1536 / 2560: `mtmd_decode_use_non_causal`), as their configs say too."""
    bidirectional = None if text["hidden_size"] in CAUSAL_IMAGE_HIDDEN else "vision"
    text = {**text, "model_type": "gemma4_text", "use_bidirectional_attention": bidirectional if vision else None}
    return {"model_type": "gemma4", "text_config": text, "vision_config": vision, "audio_config": audio,
            **media_tokens(text_metadata)}
