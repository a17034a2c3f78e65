"""`minigemma.load`: a checkpoint directory or a GGUF file -> the `Model` users hold.

`load(path)` reads a checkpoint directory in Hugging Face layout: `config.json` plus one or more
`*.safetensors` files, as written by `save_pretrained` or downloaded from the hub, in either
layout (`Gemma4ForCausalLM`: tensors under `model.*`; `Gemma4ForConditionalGeneration`: the text
model under `model.language_model.*`), and Gemma 3's text model (`Gemma3ForCausalLM`: `model.*`;
`Gemma3ForConditionalGeneration`: `language_model.model.*`, as its `save_pretrained` writes it);
or a GGUF file as llama.cpp writes it, with its companion `mmproj` file for the towers.
"""

from __future__ import annotations

import os
import re

from .audio.features import FeatureConfig
from .audio.tower import load_audio_tower
from .errors import CheckpointError, ConfigError, InputError
from .kernels import backend
from .model import HEAD_NAME, Model, default_model_path
from .text.config import ModelConfig, config_from_dict
from .text.model import load_text
from .unified.audio import load_unified_audio
from .unified.config import MODEL_TYPE as UNIFIED, load_model_config
from .unified.vision import load_unified_vision
from .vision.tower import load_vision_tower
from .weights.checkpoint import Checkpoint
from .weights.gguf import MAGIC as GGUF_MAGIC
from .weights.gguf_mmproj import multimodal_config, open_mmproj
from .weights.gguf_weights import open_gguf

TEXT_PREFIX = {"gemma4_text": "model", "gemma4": "model.language_model", "gemma3_text": "model", "gemma3": "language_model.model",
               UNIFIED: "model.language_model"}
GGUF_SUFFIX = ".gguf"
HEAD_NAMES = {"gemma3": "language_model.lm_head.weight"}  # an untied head where it is not HEAD_NAME
# Tensors a checkpoint may carry that the text model does not read: KV-shared layers' unused
# key/value projections (the reference ignores them too) and towers handled elsewhere.
IGNORED = (
    re.compile(r".*\.layers\.\d+\.self_attn\.(k_proj|v_proj|k_norm|v_norm)\.(weight|bias)$"),
    re.compile(r"^(vision_tower|multi_modal_projector)\..*"),  # Gemma 3's SigLIP tower: not run
)


def load(path: str | os.PathLike | None = None, kernels: bool | None = None, mmproj: str | os.PathLike | None = None) -> Model:
    """Load a checkpoint directory (Hugging Face layout) or a GGUF file. No path: the embedded default model.

    `kernels`: run the hot loops with the Numba kernels (and keep weights as stored) or with
    the NumPy twins; None: the MINIGEMMA_KERNELS environment variable decides, default on.
    `mmproj`: with a GGUF model, llama.cpp's companion file holding its vision / audio towers."""
    if path is None:
        path = default_model_path()
    path = os.fspath(path)
    if is_gguf(path):
        return load_gguf(path, kernels, mmproj)
    if mmproj is not None:
        raise InputError(f"mmproj: {os.fspath(mmproj)} goes with a GGUF model; {path} is a checkpoint directory, whose towers are in it")
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: not a directory (expected a checkpoint directory with config.json, or a .gguf file)")
    config = load_model_config(path)
    chosen = backend(kernels)
    ckpt = Checkpoint(path)
    ckpt.linear = chosen.linear
    prefix = TEXT_PREFIX[config.model_type]
    weights = load_text(ckpt, config.text, prefix, HEAD_NAMES.get(config.model_type, HEAD_NAME))
    hidden = config.text.hidden_size
    if config.model_type == UNIFIED:  # no towers: embedders of raw patches and raw frames
        vision = load_unified_vision(ckpt, config.vision, hidden) if config.vision is not None else None
        audio = load_unified_audio(ckpt, config.audio, hidden) if config.audio is not None else None
    else:
        vision = load_vision_tower(ckpt, config.vision, hidden) if config.vision is not None else None
        audio = load_audio_tower(ckpt, config, path) if config.audio is not None else None
    _check_unexpected(ckpt, config)
    return Model(config, weights, path, vision=vision, audio=audio, backend=chosen)


def is_gguf(path: str) -> bool:
    """A `.gguf` path, or any file that starts with GGUF's magic number."""
    if path.endswith(GGUF_SUFFIX):
        return True
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def load_gguf(path: str, kernels: bool | None = None, mmproj: str | os.PathLike | None = None) -> Model:
    """A GGUF file as llama.cpp writes it (`gemma4` / `gemma3` text models): config from its
    metadata, tensors left in the memory-mapped file, tokenizer from its metadata (`weights/gguf*.py`);
    with `mmproj`, the vision / audio towers from llama.cpp's companion file (`weights/gguf_mmproj.py`)."""
    raw, ckpt = open_gguf(path)
    towers = None
    if mmproj is not None:
        if raw["model_type"] != "gemma4_text":
            raise CheckpointError(f"{path}: an mmproj goes with a gemma4 model, this one is {raw['model_type']!r}")
        vision_raw, audio_raw, mels, towers = open_mmproj(os.fspath(mmproj), raw["hidden_size"])
        raw = multimodal_config(raw, ckpt.file.metadata, vision_raw, audio_raw)
    try:
        config = config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    chosen = backend(kernels)
    ckpt.linear, ckpt.quant_linear = chosen.linear, chosen.quant_linear
    weights = load_text(ckpt, config.text, "model", HEAD_NAME)
    _check_unexpected(ckpt, config)
    vision = audio = None
    if towers is not None:
        vision, audio = load_mmproj_towers(towers, config, mels)
    return Model(config, weights, path, vision=vision, audio=audio, backend=chosen, gguf_metadata=ckpt.file.metadata)


def load_mmproj_towers(towers, config: ModelConfig, mels: int | None):
    """The vision / audio towers of an mmproj file (`open_mmproj`); a config the file implies that the
    towers cannot run is an error of that file."""
    try:
        vision = load_vision_tower(towers, config.vision, config.text.hidden_size) if config.vision is not None else None
        audio = load_audio_tower(towers, config, None, FeatureConfig(feature_size=mels)) if config.audio is not None else None
    except ConfigError as e:
        raise CheckpointError(f"{towers.directory}: {e}") from None
    _check_unexpected(towers, config)
    return vision, audio


def _check_unexpected(ckpt: Checkpoint, config: ModelConfig) -> None:
    for name in ckpt.names():
        if name in ckpt.accessed or any(p.match(name) for p in IGNORED):
            continue
        if name == HEAD_NAME and config.text.tie_word_embeddings:
            continue  # some checkpoints store the tied head anyway
        raise CheckpointError(f"{ckpt.refs[name].file}: unexpected tensor {name!r} (not part of a {config.model_type} model)")
