"""The Gemma 4 language model end to end (mirrors `Gemma4TextModel` and `Gemma4ForCausalLM`).

    ids -> embed * sqrt(hidden)                            scaled token embedding
        -> PLE inputs (token table + context projection)   one small vector per layer per token
        -> decoder layers (sliding / global, dual RoPE)
        -> final RMSNorm
        -> logits = h @ embed.T                            the head is the embedding, tied
        -> cap * tanh(logits / cap)                        final logit soft-cap

The embedding is multiplied by sqrt(hidden) because the table is shared with the output head,
where small vectors are wanted; the scale brings the inputs back to unit-ish size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..weights.checkpoint import Checkpoint
from .config import TextConfig
from .backend import NUMPY, Backend
from .layer import ForwardContext, LayerWeights, decoder_layer, load_layer
from .norm import norm_weight, rms_norm
from .ops import linear, soft_cap
from .ple import PLEWeights, context_projection, load_ple, mix, token_identity
from .rope import inverse_frequencies, rope_tables


@dataclass(frozen=True)
class TextWeights:
    embed: np.ndarray  # (vocab, hidden)
    layers: tuple[LayerWeights, ...]
    final_norm: np.ndarray  # (hidden,)
    lm_head: np.ndarray  # (vocab, hidden): the embedding itself when tied
    ple: PLEWeights | None


def load_text(ckpt: Checkpoint, cfg: TextConfig, prefix: str, head_name: str) -> TextWeights:
    """`prefix`: where the text model's tensors live (`model` or `model.language_model`);
    `head_name`: the untied output head's tensor (`lm_head.weight`)."""
    h = cfg.hidden_size
    embed = ckpt.matrix(f"{prefix}.embed_tokens.weight", (cfg.vocab_size, h))
    if cfg.tie_word_embeddings:
        lm_head = embed
    else:
        lm_head = ckpt.matrix(head_name, (cfg.vocab_size, h))
    ple = None
    if cfg.has_ple:
        ple = load_ple(
            ckpt, prefix, cfg.vocab_size_per_layer_input, cfg.num_hidden_layers, cfg.hidden_size_per_layer_input, h
        )
    return TextWeights(
        embed=embed,
        layers=tuple(load_layer(ckpt, f"{prefix}.layers.{s.index}", s, cfg) for s in cfg.layers),
        final_norm=norm_weight(ckpt.f32(f"{prefix}.norm.weight", (h,)), cfg.norm_offset),
        lm_head=lm_head,
        ple=ple,
    )


def embed_tokens(ids: np.ndarray, w: TextWeights, cfg: TextConfig) -> np.ndarray:
    """Token ids (seq,) -> scaled embeddings (seq, hidden)."""
    return w.embed[ids] * np.float32(cfg.hidden_size**0.5)


def rope_for_positions(positions: np.ndarray, cfg: TextConfig) -> dict:
    """(cos, sin) tables for each layer type present: the dual RoPE."""
    tables = {}
    for layer_type, params in cfg.rope.items():
        head_dim = next(s.head_dim for s in cfg.layers if s.layer_type == layer_type)
        tables[layer_type] = rope_tables(positions, inverse_frequencies(params, head_dim))
    return tables


def text_forward(
    embeds: np.ndarray,
    ple_ids: np.ndarray | None,
    w: TextWeights,
    cfg: TextConfig,
    positions: np.ndarray,
    cache=None,
    tap=None,
    blocks=None,
    backend: Backend = NUMPY,
    keep: int | None = None,
) -> np.ndarray:
    """Run the decoder stack on scaled embeddings (seq, hidden); returns logits (seq, vocab).

    `ple_ids`: the token ids whose PLE table rows to use (multimodal placeholders pass the pad id);
    `positions`: absolute positions (seq,); `cache`: per-layer KV caches or None; `blocks`: image
    block id per absolute position, for bidirectional attention inside images (or None);
    `backend`: NumPy twins or Numba kernels for the hot loops (`kernels/__init__.py`);
    `keep`: how many of the last positions' logits are wanted (None: all). KV-shared layers write
    no cache, so they (and the head) run only on those positions, as the reference's
    `logits_to_keep` does: a prompt's chunks other than the last skip them (keep=0)."""
    rope = rope_for_positions(positions, cfg)
    ctx = ForwardContext(positions=positions, rope=rope, cache=cache, blocks=blocks, backend=backend)
    if tap is not None:
        ctx.tap = tap
    ctx.tap("embed", embeds)
    ple_inputs = None
    if w.ple is not None:
        n_layers, ple_dim = cfg.num_hidden_layers, cfg.hidden_size_per_layer_input
        identity = token_identity(ple_ids, w.ple, n_layers, ple_dim)  # (seq, layers, ple_dim)
        ctx.tap("ple.identity", identity)
        context = context_projection(embeds, w.ple, n_layers, ple_dim, cfg.rms_norm_eps)
        ctx.tap("ple.context", context)
        ple_inputs = mix(identity, context)
        ctx.tap("ple.inputs", ple_inputs)

    h = embeds
    for spec, lw in zip(cfg.layers, w.layers):
        if keep is not None and spec.reuses_kv and keep < len(h):  # from here on, only the kept positions
            if keep == 0:  # (the KV-shared layers are the last ones: nothing after them writes a cache)
                return np.zeros((0, w.lm_head.shape[0]), np.float32)
            h, ctx.positions = h[-keep:], ctx.positions[-keep:]
            ple_inputs = ple_inputs[-keep:] if ple_inputs is not None else None
            ctx.rope = {t: (cos[-keep:], sin[-keep:]) for t, (cos, sin) in ctx.rope.items()}
        layer_input = ple_inputs[:, spec.index] if ple_inputs is not None else None
        h = decoder_layer(h, lw, spec, cfg, ctx, layer_input)

    if keep is not None:
        h = h[len(h) - keep :]  # models without KV-shared layers: the head only where wanted
    h = rms_norm(h, w.final_norm, cfg.rms_norm_eps)
    ctx.tap("final_norm", h)
    logits = linear(h, w.lm_head)
    if cfg.final_logit_softcapping is not None:
        logits = soft_cap(logits, cfg.final_logit_softcapping)
    ctx.tap("logits", logits)
    return logits


def check_token_ids(input_ids, vocab_size: int, name: str = "input_ids") -> np.ndarray:
    """Validate token ids: integers, 1-D or 2-D, non-empty, each in [0, vocab_size)."""
    try:
        arr = np.asarray(input_ids)
    except ValueError as e:  # ragged nested lists
        raise InputError(f"{name}: expected a rectangular array of token ids ({e})") from None
    if arr.size == 0:
        raise InputError(f"{name}: empty input, expected at least one token id")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name}: expected integer token ids, found dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise InputError(f"{name}: expected shape (seq,) or (batch, seq), found {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise InputError(f"{name}: token id {bad} outside the vocabulary [0, {vocab_size})")
    return arr.astype(np.int64)
