"""Putting images and audio into the text stream (mirrors `Gemma4MultimodalEmbedder` and the
merge in `Gemma4Model.forward`).

A multimodal prompt holds placeholder tokens (`<|image|>`, `<|audio|>`), one per soft token the
encoder will produce. The text model embeds the prompt as usual (placeholders embedded as the pad
token), then each placeholder's embedding is replaced, in order, by an encoder output projected
into the text model's space by an embedder: an RMSNorm without scale, then a linear projection.

Per-Layer Embeddings need a token id for every position; placeholders have no row of their own in
the PLE table, so the reference uses the pad token's row there, while the context part of PLE is
computed from the merged embeddings (the soft tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checkpoint import TensorSource
from .errors import InputError
from .norm import rms_norm
from .ops import linear


@dataclass(frozen=True)
class EmbedderWeights:
    projection: np.ndarray  # (text_hidden, encoder_hidden)


def load_embedder(ckpt: TensorSource, prefix: str, encoder_hidden: int, text_hidden: int) -> EmbedderWeights:
    return EmbedderWeights(ckpt.f32(f"{prefix}.embedding_projection.weight", (text_hidden, encoder_hidden)))


def embed_soft_tokens(x: np.ndarray, w: EmbedderWeights, eps: float) -> np.ndarray:
    """Encoder outputs (n, encoder_hidden) -> text-space soft tokens (n, text_hidden)."""
    return linear(rms_norm(x, None, eps), w.projection)


def placeholder_ids(ids: np.ndarray, placeholder_token_ids, pad_token_id: int) -> np.ndarray:
    """Token ids with every placeholder replaced by the pad id: what the embedding table and the
    PLE table are indexed with."""
    return np.where(np.isin(ids, list(placeholder_token_ids)), pad_token_id, ids)


def merge_soft_tokens(embeds: np.ndarray, ids: np.ndarray, token_id: int, soft_tokens: np.ndarray, what: str) -> np.ndarray:
    """Write `soft_tokens` (n, hidden) over the embeddings (seq, hidden) of the n positions where
    `ids == token_id`, in order. The counts must agree."""
    slots = np.flatnonzero(ids == token_id)
    if len(slots) != len(soft_tokens):
        raise InputError(
            f"input_ids: {len(slots)} {what} placeholder tokens (id {token_id}), but the {what} encoder produced "
            f"{len(soft_tokens)} soft tokens"
        )
    merged = embeds.copy()
    merged[slots] = soft_tokens
    return merged
