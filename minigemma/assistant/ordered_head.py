"""The ordered-embedding head (mirrors `Gemma4AssistantMaskedEmbedder`).

A full output head costs one dot product per vocabulary entry: 262k for Gemma 4, far more than
the drafter's few layers. The assistant instead groups the vocabulary into `num_centroids` equal
clusters (`token_ordering`: the tokens of cluster c are `ordering[c * n : (c + 1) * n]`, n =
vocab / clusters), scores the clusters first, and computes real logits only for the tokens of the
`centroid_intermediate_top_k` best clusters:

    centroid_logits = centroids @ h                       (num_centroids,)
    top             = the top_k clusters
    tokens          = ordering[top]                       (top_k * n,) token ids
    logits[tokens]  = lm_head[tokens] @ h
    logits[rest]    = min(those logits) - 1               a floor: never the argmax

For the E2B assistant: 2048 + 32 * 128 = 6144 dot products instead of 262144.
"""

from __future__ import annotations

import numpy as np

from ..text.ops import linear


def ordered_logits(h: np.ndarray, centroids, ordering: np.ndarray, lm_head, top_k: int) -> np.ndarray:
    """h (seq, hidden) -> logits (seq, vocab). `ordering` (num_centroids, n): token ids per cluster."""
    centroid_logits = linear(h, centroids)  # (seq, num_centroids)
    top = np.argpartition(-centroid_logits, top_k - 1, axis=-1)[:, :top_k]  # (seq, top_k): the set, any order
    tokens = ordering[top].reshape(len(h), -1)  # (seq, top_k * n)
    rows = lm_head[tokens.reshape(-1)].reshape(*tokens.shape, -1)  # (seq, top_k * n, hidden)
    selected = np.einsum("sd,snd->sn", h, rows)  # (seq, top_k * n)
    floor = selected.min() - np.float32(1.0)  # over every position, as the reference takes it
    logits = np.full((len(h), len(ordering) * ordering.shape[1]), floor, np.float32)
    np.put_along_axis(logits, tokens, selected, axis=-1)
    return logits
