"""The assistant end to end: weights, loading, and one draft step (mirrors
`Gemma4AssistantForCausalLM`, `Gemma4UnifiedAssistantForCausalLM`).

    x      = pre_projection([target_embed(token) ; h])       projections.py
    x      = decoder layers over the target's keys/values    decoder.py
    x      = final_norm(x)
    h'     = post_projection(x)                              the next step's h
    logits = lm_head(x)  or  the ordered-embedding head      ordered_head.py (no soft-cap)

A checkpoint directory as `save_pretrained` writes it: `config.json` (`model_type`
`gemma4_assistant`), `model.safetensors` with `model.layers.*` (no key/value projections: every
layer reads the target's), `model.embed_tokens.weight` (the tied head; the drafter never embeds
its own input), `model.norm.weight`, `pre_projection.weight`, `post_projection.weight`, and with
ordered embeddings `masked_embedding.centroids.weight` and `masked_embedding.token_ordering`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..kernels import backend as choose_backend
from ..text.backend import NUMPY, Backend
from ..text.layer import LayerWeights, load_layer
from ..text.norm import norm_weight
from ..text.ops import linear, no_tap, scoped
from ..weights.checkpoint import Checkpoint, TensorSource
from .config import AssistantConfig, load_assistant_config
from .decoder import check_pairing, run_stack, stack_config
from .ordered_head import ordered_logits
from .projections import project_in, project_out

PREFIX = "model"
HEAD_NAME = "lm_head.weight"
GENERATION_CONFIG = "generation_config.json"
# key/value projections a checkpoint may carry on KV-shared layers, which never run (as for the target)
UNUSED_KV = re.compile(r".*\.layers\.\d+\.self_attn\.(k_proj|v_proj|k_norm|v_norm)\.(weight|bias)$")


@dataclass(frozen=True)
class AssistantWeights:
    pre_projection: np.ndarray  # (hidden, 2 * backbone)
    post_projection: np.ndarray  # (backbone, hidden)
    layers: tuple[LayerWeights, ...]
    final_norm: np.ndarray  # (hidden,)
    lm_head: np.ndarray  # (vocab, hidden): the embedding table when tied
    centroids: np.ndarray | None  # (num_centroids, hidden), with ordered embeddings
    ordering: np.ndarray | None  # (num_centroids, vocab / num_centroids) token ids per cluster


def load_assistant_weights(ckpt: TensorSource, cfg: AssistantConfig) -> AssistantWeights:
    t = cfg.text
    h, backbone, vocab = t.hidden_size, cfg.backbone_hidden_size, t.vocab_size
    embed = ckpt.matrix(f"{PREFIX}.embed_tokens.weight", (vocab, h))
    centroids = ordering = None
    if cfg.use_ordered_embeddings:
        centroids = ckpt.matrix("masked_embedding.centroids.weight", (cfg.num_centroids, h))
        ordering = np.asarray(ckpt.raw("masked_embedding.token_ordering", (vocab,)), np.int64)
        if ordering.min() < 0 or ordering.max() >= vocab:
            raise CheckpointError(f"masked_embedding.token_ordering: expected token ids in [0, {vocab}), found {ordering.min()}..{ordering.max()}")
        ordering = ordering.reshape(cfg.num_centroids, cfg.tokens_per_centroid)
    return AssistantWeights(
        pre_projection=ckpt.matrix("pre_projection.weight", (h, 2 * backbone)),
        post_projection=ckpt.matrix("post_projection.weight", (backbone, h)),
        layers=tuple(load_layer(ckpt, f"{PREFIX}.layers.{s.index}", s, t) for s in t.layers),
        final_norm=norm_weight(ckpt.f32(f"{PREFIX}.norm.weight", (h,)), t.norm_offset),
        lm_head=embed if cfg.tie_word_embeddings else ckpt.matrix(HEAD_NAME, (vocab, h)),
        centroids=centroids,
        ordering=ordering,
    )


class Assistant:
    """A loaded drafter. `step` is one draft step; `generate/speculative.py` drives the rounds."""

    def __init__(self, config: AssistantConfig, weights: AssistantWeights, path: str | None = None,
                 backend: Backend = NUMPY, num_assistant_tokens: int | None = None):
        self.config = config
        self.weights = weights
        self.path = path
        self.backend = backend
        self.num_assistant_tokens = num_assistant_tokens  # drafts per round, from generation_config.json

    @cached_property
    def stack_config(self):
        return stack_config(self.config.text)

    def check_target(self, target_text) -> None:
        """ConfigError unless this drafter was made for a target of this shape."""
        check_pairing(self.config.text, self.config.backbone_hidden_size, target_text)

    def step(self, token_embedding: np.ndarray, target_hidden: np.ndarray, position: int, target_kv: dict,
             tap=no_tap) -> tuple[np.ndarray, np.ndarray]:
        """One draft step: the target's scaled embedding of the last token (backbone,) and the hidden
        state before it (backbone,), the token's `position`, and the target's keys/values
        (`decoder.run_stack`) -> (logits (vocab,), the next step's hidden state (backbone,)).
        `tap`: named steps, under `assistant.` (`layers.{i}.*` as for the target)."""
        cfg, w = self.config, self.weights
        tap = scoped(tap, "assistant.")
        x = project_in(token_embedding[None], target_hidden[None], w.pre_projection)  # (1, hidden)
        tap("pre_projection", x)
        h = run_stack(x, position, target_kv, w.layers, w.final_norm, self.stack_config, self.backend, tap)
        projected = project_out(h, w.post_projection)  # (1, backbone)
        tap("post_projection", projected)
        if cfg.use_ordered_embeddings:
            logits = ordered_logits(h, w.centroids, w.ordering, w.lm_head, cfg.centroid_intermediate_top_k)
        else:
            logits = linear(h, w.lm_head)
        tap("logits", logits)
        return logits[0], projected[0]

    def __repr__(self) -> str:
        t = self.config.text
        return f"Assistant({self.config.model_type}, layers={t.num_hidden_layers}, hidden={t.hidden_size}, path={self.path!r})"


def load_assistant(path: str | os.PathLike, kernels: bool | None = None) -> Assistant:
    """Load an assistant checkpoint directory (Hugging Face layout)."""
    from ..weights.config_reader import read_json_object

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: not a directory (expected an assistant checkpoint directory with config.json)")
    cfg = load_assistant_config(path)
    chosen = choose_backend(kernels)
    ckpt = Checkpoint(path)
    ckpt.linear = chosen.linear
    weights = load_assistant_weights(ckpt, cfg)
    for name in ckpt.names():
        if name in ckpt.accessed or UNUSED_KV.match(name) or (name == HEAD_NAME and cfg.tie_word_embeddings):
            continue
        raise CheckpointError(f"{ckpt.refs[name].file}: unexpected tensor {name!r} (not part of a {cfg.model_type} model)")
    gen_file = os.path.join(path, GENERATION_CONFIG)
    n = read_json_object(gen_file).get("num_assistant_tokens") if os.path.exists(gen_file) else None
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ConfigError(f"{gen_file}: num_assistant_tokens: expected an integer >= 1, found {n!r}")
    return Assistant(cfg, weights, path, chosen, n)
