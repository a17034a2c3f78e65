"""Write the `mmproj` companion GGUF of a Gemma 4 checkpoint, as llama.cpp's converter writes it.

`minigemma quantize SRC OUT.gguf --mmproj MMPROJ.gguf` writes, beside the text model, the file
`convert_hf_to_gguf.py SRC --mmproj` would (`conversion/gemma.py: Gemma4VisionAudioModel`):
architecture `clip`, general.type `mmproj`, the `clip.vision.*` / `clip.audio.*` keys in the
converter's order, the towers' tensors under llama.cpp's names in the checkpoint's order
(`gguf_mmproj_names.py`: names and the three tensors that change form), each stored as the
converter stores it:

* F32: 1-D tensors (norms, biases, clip bounds), `*_norm.weight`, anything not named `.weight`
  (`v.std_bias`), the position table, the audio convolutions (every audio tensor whose name has
  `.conv` or `_conv`: the subsampling convs and their projection, the depthwise kernel); the patch
  embedding too, unless the type is F16 (then F16);
* every other matrix in the chosen type (F32, F16, BF16 or Q8_0: the converter's own types), F16
  where a row is too short for Q8_0's 32-value blocks.

Where the converter has no key for a setting, llama.cpp's code fixes it (`gguf_mmproj.py`
lists them); a checkpoint that differs there gets a `ConfigError` naming the field instead of
a file that would silently run another model. Two choices of ours, equal to the converter's on
every released checkpoint: `clip.audio.num_mel_bins` is the checkpoint's feature extractor
`feature_size` (the converter: `input_feat_size`, else 128); `clip.vision.attention.layer_norm_epsilon`
is the vision config's `rms_norm_eps` (the converter looks for `layer_norm_eps`, else 1e-6). A
pooling kernel other than llama.cpp's 3 is written as `clip.vision.projector.scale_factor`, which
llama.cpp reads.

Checked against the converter (tests/test_gguf_mmproj.py, stored listings of its files): every key
and tensor equal to the byte, in every type, but for `per_dim_scale`: the converter's softplus is
torch's, whose vectorised exp / log1p may differ from NumPy's in the last bit (1 ulp at most).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, InputError
from .checkpoint import Checkpoint, to_f32
from .config_reader import read_json_object
from .gguf_mmproj import AUDIO_FIXED, PROJECTOR, SCALE_FACTOR, VISION_FIXED
from .gguf_mmproj_names import PATCH_EMBD, gguf_name, to_gguf
from .gguf_write import PlannedTensor, add_general, file_type, nbytes, quiet_gguf, require_gguf
from .gguf_write_types import CONVERTER_TYPES

IMAGE_SIZE = 224  # the converter's placeholder ("unused, but set to avoid error")
IMAGE_MEAN, IMAGE_STD = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]  # Gemma4ImageProcessor's defaults (it does not normalise)
MEL_BINS = 128  # the feature extractor's default
FFN_EXPANSION = 4  # the conformer's feed-forward width, hidden x 4
DEFAULT_EPS = 1e-6
PROCESSOR_FILES = (("processor_config.json", "image_processor"), ("preprocessor_config.json", None))


def write_mmproj(src: str | os.PathLike, out: str | os.PathLike, type_name: str = "F32") -> list[PlannedTensor]:
    """Write the towers of the `Gemma4ForConditionalGeneration` checkpoint `src` as the mmproj file `out`."""
    gguf = require_gguf()
    if type_name not in CONVERTER_TYPES:
        raise InputError(f"--type: an mmproj is written in one of {', '.join(CONVERTER_TYPES)} (the converter's types), found {type_name!r}")
    src = Path(src)
    raw = read_json_object(str(src / "config.json")) if (src / "config.json").exists() else None
    vision, audio = towers(raw, src)
    text_hidden = (raw.get("text_config") or {}).get("hidden_size")
    qtype = gguf.GGMLQuantizationType[type_name]
    ckpt = Checkpoint(src)
    plan = plan_tensors(gguf, ckpt, qtype, audio is not None)
    with quiet_gguf():
        w = gguf.GGUFWriter(os.fspath(out), "clip")
        for t in plan:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes(gguf, t), raw_dtype=t.qtype)
        add_general(gguf, w, src, gguf.GGUFType.MMPROJ)
        w.add_file_type(file_type(gguf, type_name))
        add_clip_keys(gguf, w, src, text_hidden, vision, audio)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        try:
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for t in plan:
                w.write_tensor_data(t.values)
        except OSError as e:
            raise InputError(f"{out}: cannot write ({e.strerror})") from None
        finally:
            w.close()
    return plan


def towers(raw: dict | None, src: Path) -> tuple[dict, dict | None]:
    """The vision and audio configs, checked to be what the layout can say."""
    where = src / "config.json"
    if raw is None or raw.get("model_type") != "gemma4" or not isinstance(raw.get("vision_config"), dict):
        found = None if raw is None else raw.get("model_type")
        raise ConfigError(f"{where}: an mmproj is written from a Gemma4ForConditionalGeneration (model_type 'gemma4' with a "
                          f"vision_config), found model_type {found!r}")
    vision, audio = raw["vision_config"], raw.get("audio_config")
    for key, fixed in VISION_FIXED.items():
        if key == "pooling_kernel_size":
            continue  # written as clip.vision.projector.scale_factor
        found = vision.get(key) or fixed
        if key == "rope_parameters":
            fixed, found = fixed["rope_theta"], found.get("rope_theta", fixed["rope_theta"])
        check_fixed(where, f"vision_config.{key}", fixed, found)
    if isinstance(audio, dict):
        for key, fixed in AUDIO_FIXED.items():
            check_fixed(where, f"audio_config.{key}", fixed, audio.get(key, fixed))
    return vision, audio if isinstance(audio, dict) else None


def check_fixed(where, field: str, fixed, found) -> None:
    if found != fixed:
        raise ConfigError(f"{where}: {field}: llama.cpp's mmproj layout has no key for it and fixes it to {fixed!r}, found {found!r}")


def processor_config(src: Path) -> dict:
    """The processor settings the converter reads (`processor_config.json`'s image_processor, or
    `preprocessor_config.json`), merged; the feature extractor's too."""
    merged = {}
    for name, key in reversed(PROCESSOR_FILES):
        file = src / name
        if file.exists():
            raw = read_json_object(str(file))
            merged |= raw | (raw.get(key) or {} if key else {}) | (raw.get("feature_extractor") or {})
    return merged


def add_clip_keys(gguf, w, src: Path, text_hidden: int, vision: dict, audio: dict | None) -> None:
    """`clip.*`, in the converter's order (MmprojModel, then Gemma4VisionAudioModel)."""
    proc = processor_config(src)
    w.add_clip_has_vision_encoder(True)
    w.add_vision_projection_dim(text_hidden)
    w.add_vision_image_size(IMAGE_SIZE)
    w.add_vision_patch_size(vision.get("patch_size", 16))
    w.add_vision_embedding_length(vision.get("hidden_size", 768))
    w.add_vision_feed_forward_length(vision.get("intermediate_size", 3072))
    w.add_vision_block_count(vision.get("num_hidden_layers", 16))
    w.add_vision_head_count(vision.get("num_attention_heads", 12))
    w.add_vision_image_mean(proc.get("image_mean", IMAGE_MEAN))
    w.add_vision_image_std(proc.get("image_std", IMAGE_STD))
    if audio is not None:
        w.add_clip_has_audio_encoder(True)
        w.add_audio_projection_dim(text_hidden)
        hidden = audio.get("hidden_size", 1024)
        w.add_audio_embedding_length(hidden)
        w.add_audio_feed_forward_length(hidden * FFN_EXPANSION)
        w.add_audio_block_count(audio.get("num_hidden_layers", 12))
        w.add_audio_head_count(audio.get("num_attention_heads", 8))
    w.add_clip_vision_projector_type(PROJECTOR["vision"])
    w.add_vision_attention_layernorm_eps(vision.get("rms_norm_eps", DEFAULT_EPS))
    if audio is not None:
        w.add_clip_audio_projector_type(PROJECTOR["audio"])
        w.add_audio_num_mel_bins(audio.get("input_feat_size", proc.get("feature_size", MEL_BINS)))
        w.add_audio_attention_layernorm_eps(DEFAULT_EPS)
    pooling = vision.get("pooling_kernel_size", VISION_FIXED["pooling_kernel_size"])
    if pooling != VISION_FIXED["pooling_kernel_size"]:
        w.add_uint32(SCALE_FACTOR, pooling)


def is_tower(name: str) -> bool:
    return name.startswith(("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio."))


def storage_type(gguf, hf: str, g: str, shape: tuple[int, ...], qtype):
    """The GGML type the converter stores a tensor in (module docstring)."""
    Q = gguf.GGMLQuantizationType
    audio = "audio_tower" in hf or "embed_audio" in hf
    if len(shape) <= 1 or g.endswith("_norm.weight") or not g.endswith(".weight"):
        return Q.F32
    if audio and (".conv" in hf or "_conv" in hf) or "position_embedding_table" in hf:
        return Q.F32
    if g == PATCH_EMBD:
        return Q.F16 if qtype == Q.F16 else Q.F32
    return qtype


def plan_tensors(gguf, ckpt: Checkpoint, qtype, with_audio: bool) -> list[PlannedTensor]:
    """Every tower tensor, converted and stored (they are small: the towers of E4B are ~0.7 GB in f32)."""
    plan = []
    for source in ckpt.names():
        if not is_tower(source) or not with_audio and ("audio_tower" in source or "embed_audio" in source):
            continue
        name = gguf_name(source)
        if name is None:
            raise CheckpointError(f"{ckpt.refs[source].file}: tensor {source!r} has no name in llama.cpp's Gemma 4 mmproj layout")
        values = to_gguf(name, to_f32(ckpt.raw(source), ckpt.refs[source].dtype))
        kind = storage_type(gguf, source, name, values.shape, qtype)
        try:
            data = gguf.quants.quantize(values, kind)
        except gguf.QuantError:  # rows too short for the blocks: the converter falls back to F16
            kind = gguf.GGMLQuantizationType.F16
            data = gguf.quants.quantize(values, kind)
        plan.append(PlannedTensor(name, source, values.shape, kind, values=data))
    return plan
