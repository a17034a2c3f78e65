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

from ..weights.checkpoint import TensorSource
from ..errors import InputError, plural
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


MODALITIES = {"image": "image_token_id", "audio": "audio_token_id", "video": "video_token_id"}  # name -> its placeholder token
INPUT_NAMES = {"image": "pixel_values", "audio": "input_features", "video": "pixel_values_videos"}


def check_placeholders(ids: np.ndarray, soft: list, tokens: dict) -> None:
    """Placeholders of a modality with no input of that modality is a user mistake (the model
    would silently read pad embeddings there): say so."""
    given = {what for _, what, _ in soft}
    for what, token in MODALITIES.items():
        n = int(np.sum(ids == tokens[token])) if token in tokens else 0
        if n and what not in given:
            raise InputError(f"input_ids: {n} {what} placeholder tokens (id {tokens[token]}), but no {what} was given ({INPUT_NAMES[what]})")


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


# --------------------------------------------------------------------------------------------
# bidirectional attention inside an image (`create_masks_for_vision_model`)
#
# With `use_bidirectional_attention == "vision"`, the tokens of one image see each other both
# ways on sliding-window layers (an image is not read left to right), while text stays causal
# and global layers stay causal for everyone. An image is a run of consecutive placeholder
# tokens; `<|image>` / `<image|>` around each image keep two images apart.

TEXT_BLOCK = -1  # block id of every token outside an image


def image_blocks(ids: np.ndarray, image_token_id: int) -> np.ndarray:
    """Block id of each token (seq,): 0, 1, ... for the runs of image placeholders, -1 for text."""
    is_image = ids == image_token_id
    starts = is_image & ~np.concatenate([[False], is_image[:-1]])  # first token of each run
    return np.where(is_image, np.cumsum(starts) - 1, TEXT_BLOCK)


def block_at(blocks: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The block of each absolute position in `pos`; positions past the end of `blocks`
    (generated text) are text."""
    inside = pos < len(blocks)
    return np.where(inside, blocks[np.where(inside, pos, 0)], TEXT_BLOCK)


def same_block(blocks: np.ndarray, q_pos: np.ndarray, k_pos: np.ndarray) -> np.ndarray:
    """(q_len, k_len) bool: query and key are tokens of the same image."""
    bq, bk = block_at(blocks, q_pos), block_at(blocks, k_pos)
    return (bq[:, None] == bk[None, :]) & (bq[:, None] != TEXT_BLOCK)


# What the processor's `mm_token_type_ids` says of each token.
TOKEN_TYPES = {"image_token_id": 1, "video_token_id": 2, "audio_token_id": 3}


def token_types(ids: np.ndarray, tokens: dict) -> np.ndarray:
    """`mm_token_type_ids` as the processor writes it: each placeholder's type, 0 for text."""
    types = np.zeros(np.shape(ids), dtype=np.int64)
    for name, kind in TOKEN_TYPES.items():
        types[np.asarray(ids) == tokens[name]] = kind
    return types


def check_token_types(mm_token_type_ids, ids: np.ndarray, tokens: dict) -> None:
    """`mm_token_type_ids` adds nothing the placeholders do not already say; reject it when it
    disagrees with them (0 text, 1 image, 2 video, 3 audio)."""
    types = np.asarray(mm_token_type_ids)
    if types.shape != ids.shape:
        raise InputError(f"mm_token_type_ids: expected shape {ids.shape} (as input_ids), found {types.shape}")
    expected = token_types(ids, tokens)
    wrong = np.argwhere(types != expected)
    if len(wrong):
        at = tuple(int(i) for i in wrong[0])
        raise InputError(
            f"mm_token_type_ids: at {at} says {int(types[at])}, but input_ids holds token {int(ids[at])} there, "
            f"which is type {int(expected[at])} (0 text, 1 image, 2 video, 3 audio)"
        )


# --------------------------------------------------------------------------------------------
# prompts with images (the expansion `Gemma4Processor` does)

IMAGES_FIRST_SEPARATOR = "\n\n"  # between the images and the text of a prompt that does not place them


def expand_image_marks(text: str, soft_tokens: list[int], image: str, boi: str, eoi: str) -> str:
    """Each image mark (`<|image|>`) of the prompt becomes `<|image>` + n x `<|image|>` + `<image|>`,
    n = that image's soft-token count, as `Gemma4Processor` writes it. A prompt with no mark gets
    its images in front of the text."""
    return expand_marks(text, [boi + image * n + eoi for n in soft_tokens], image, "image")


def expand_marks(text: str, expansions: list[str], mark: str, what: str, separator: str = IMAGES_FIRST_SEPARATOR) -> str:
    """Each `mark` of the prompt becomes its item's expansion, in order; a prompt with no mark gets
    its items in front of the text (images, and video frames, `vision/video.py`)."""
    marks = text.count(mark)
    if marks == 0 and expansions:
        text, marks = mark * len(expansions) + separator + text, len(expansions)
    if marks != len(expansions):
        raise InputError(f"prompt: {plural(marks, what + ' mark')} {mark!r}, but {plural(len(expansions), what)} given")
    pieces = text.split(mark)
    return pieces[0] + "".join(expansion + piece for expansion, piece in zip(expansions, pieces[1:]))
