"""The `Model` users hold: the public face of the package (`minigemma.load`, in `loading.py`,
makes one from a checkpoint directory or a GGUF file).

`Model.forward` turns token ids into logits; `Model.extend` feeds tokens through a KV cache, and
`Model.generate` / `Model.stream` write text (`generate/loop.py`);
`Model.trace` names every step on the way (`verify/trace.py`).
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np

from .generate import loop as generation
from .audio.tower import audio_soft_tokens
from .generate.cache import KVCache, new_cache
from .text.config import ModelConfig
from .errors import ConfigError, InputError
from .kernels import NUMPY, Backend
from .text.multimodal import (
    TEXT_BLOCK,
    check_placeholders,
    check_token_types,
    image_blocks,
    merge_soft_tokens,
    placeholder_ids,
)
from .text.model import TextWeights, check_token_ids, embed_tokens, text_forward
from .unified.audio import UnifiedAudio
from .unified.vision import UnifiedVision
from .vision.image import DEFAULT_SOFT_TOKENS
from .vision.tower import encode_images
from .text.ops import no_tap, scoped
from .verify.trace import Recorder

HEAD_NAME = "lm_head.weight"


class Model:
    """A loaded Gemma 4 checkpoint. Holds the config and float32 weights; no global state.

    `vision` / `audio`: the encoder towers' weights when the checkpoint has them, else None;
    `backend`: NumPy twins or Numba kernels for the hot loops (`kernels/__init__.py`)."""

    def __init__(
        self, config: ModelConfig, weights: TextWeights, path: str | None = None, vision=None, audio=None,
        backend: Backend = NUMPY, gguf_metadata: dict | None = None,
    ):
        self.config = config
        self.gguf_metadata = gguf_metadata  # a GGUF's metadata, where its tokenizer lives
        self.weights = weights
        self.path = path
        self.vision = vision
        self.audio = audio
        self.backend = backend

    @property
    def text_config(self):
        return self.config.text

    def forward(
        self,
        input_ids,
        pixel_values=None,
        image_position_ids=None,
        input_features=None,
        input_features_mask=None,
        mm_token_type_ids=None,
        pixel_values_videos=None,
        video_position_ids=None,
        num_frames_per_video=None,
    ) -> np.ndarray:
        """Token ids -> float32 logits. (seq,) -> (seq, vocab); (batch, seq) -> (batch, seq, vocab).

        Images, audio and videos come as the Hugging Face processor emits them (`pixel_values`,
        `image_position_ids`; `input_features`, `input_features_mask`; `pixel_values_videos`,
        `video_position_ids`, `num_frames_per_video`); their soft tokens replace the placeholder
        tokens of `input_ids`, in order, across the batch."""
        ids = check_token_ids(input_ids, self.config.text.vocab_size)
        batch = ids if ids.ndim == 2 else ids[None]
        soft = self.encode_media(pixel_values, image_position_ids, input_features, input_features_mask,
                                 pixel_values_videos, video_position_ids, num_frames_per_video)
        check_placeholders(ids, soft, self.config.tokens)
        if mm_token_type_ids is not None:
            check_token_types(mm_token_type_ids, ids, self.config.tokens)
        logits = [self._forward_one(row, row_soft, mm_token_type_ids) for row, row_soft in zip(batch, split_by_row(batch, soft))]
        return np.stack(logits) if ids.ndim == 2 else logits[0]

    def trace(self, input_ids, names=None, **media) -> dict[str, np.ndarray]:
        """Every named activation of one forward pass, in forward order (names: docs/verify.md).

        `input_ids`: one sequence (seq,); `names`: glob patterns selecting a subset (a string or
        a list, e.g. "layers.3.*"); `media`: images / audio as for `forward`. The values come
        from the very code path `forward` runs, recorded at its named steps."""
        ids = check_token_ids(input_ids, self.config.text.vocab_size)
        if ids.ndim != 1:
            raise InputError(f"input_ids: trace takes one sequence of shape (seq,), found shape {ids.shape}")
        mm_token_type_ids = media.pop("mm_token_type_ids", None)
        recorder = Recorder(names)
        soft = self.encode_media(**media, tap=recorder)
        check_placeholders(ids, soft, self.config.tokens)
        if mm_token_type_ids is not None:
            check_token_types(mm_token_type_ids, ids, self.config.tokens)
        soft = split_by_row(ids[None], soft)[0]
        self._forward_one(ids, soft, mm_token_type_ids, tap=recorder)
        return recorder.result()

    def encode_media(
        self, pixel_values=None, image_position_ids=None, input_features=None, input_features_mask=None,
        pixel_values_videos=None, video_position_ids=None, num_frames_per_video=None, tap=no_tap,
    ):
        """Run the encoders: a list of (placeholder token id, name, soft tokens (n, hidden)).
        `tap`: named steps of the encoders (`vision.*`, `audio.*`; the unified model's embedders
        `unified.vision.*`, `unified.audio.*`; a video's frames the same names under `video.`), for `trace`."""
        soft = []
        if pixel_values is not None or image_position_ids is not None:
            tokens = self.encode_stills(pixel_values, image_position_ids, tap, ("pixel_values", "image_position_ids"))
            soft.append((self.config.tokens["image_token_id"], "image", tokens))
        if pixel_values_videos is not None or video_position_ids is not None:
            names = ("pixel_values_videos", "video_position_ids")
            check_frame_counts(num_frames_per_video, pixel_values_videos)
            tokens = self.encode_stills(pixel_values_videos, video_position_ids, scoped(tap, "video."), names)
            soft.append((self.config.tokens["video_token_id"], "video", tokens))
        if input_features is not None or input_features_mask is not None:
            if self.audio is None:
                raise InputError("input_features: this checkpoint has no audio tower")
            if isinstance(self.audio, UnifiedAudio):
                tokens = self.audio.encode(input_features, input_features_mask, scoped(tap, "unified.audio."))
            else:
                tokens = audio_soft_tokens(self.audio, input_features, input_features_mask, tap)
            soft.append((self.config.tokens["audio_token_id"], "audio", tokens))
        return soft

    def encode_stills(self, pixels, positions, tap, names) -> np.ndarray:
        """Images, or a video's frames (each frame an image): the vision tower's soft tokens, or
        the unified model's embedded patches."""
        if self.vision is None:
            raise InputError(f"{names[0]}: this checkpoint has no vision tower")
        if isinstance(self.vision, UnifiedVision):
            return self.vision.encode(pixels, positions, scoped(tap, "unified.vision."), names)
        return encode_images(pixels, positions, self.vision.weights, self.vision.config, tap)

    def embed(self, ids: np.ndarray, soft=()) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (seq,) -> the text model's input embeddings (seq, hidden) with soft tokens
        merged in, and the ids to read Per-Layer Embeddings with (placeholders read the pad row)."""
        cfg = self.config.text
        if not soft:
            return embed_tokens(ids, self.weights, cfg), ids
        text_ids = placeholder_ids(ids, [token_id for token_id, _, _ in soft], cfg.pad_token_id)
        embeds = embed_tokens(text_ids, self.weights, cfg)
        for token_id, what, tokens in soft:
            embeds = merge_soft_tokens(embeds, ids, token_id, tokens, what)
        return embeds, text_ids

    def _forward_one(self, ids: np.ndarray, soft=(), mm_token_type_ids=None, tap=None) -> np.ndarray:
        cfg = self.config.text
        embeds, ple_ids = self.embed(ids, soft)
        positions = np.arange(len(ids))
        return text_forward(embeds, ple_ids, self.weights, cfg, positions, tap=tap, blocks=self.blocks(ids), backend=self.backend)

    def blocks(self, ids: np.ndarray, start: int = 0) -> np.ndarray | None:
        """Image block of each absolute position up to those of `ids` (which start at `start`), for
        the bidirectional attention inside images; None unless the config asks for it ("vision")."""
        if self.config.text.use_bidirectional_attention != "vision" or "image_token_id" not in self.config.tokens:
            return None
        image = self.config.tokens["image_token_id"]
        stills = np.where(ids == self.config.tokens.get("video_token_id"), image, ids)  # a video frame is an image block too
        return np.concatenate([np.full(start, TEXT_BLOCK), image_blocks(stills, image)])

    # ------------------------------------------------------------------ incremental decoding

    def new_cache(self, dtype=np.float32, lookback: int = 0) -> KVCache:
        """An empty KV cache for one sequence (ring buffers for sliding layers); keys and values
        stored as `dtype`, float32 or float16 (half the memory, widened in the attention kernel);
        the rings keep `lookback` positions more than the window needs, for a drafter."""
        return new_cache(self.config.text, dtype, lookback)

    def extend(self, input_ids, cache: KVCache, soft=(), keep: int | None = None, tap=None) -> np.ndarray:
        """Feed token ids (seq,) that continue the sequence held by `cache`: a prefill (or a chunk of
        one) or a decode step. Returns their logits (seq, vocab) and advances the cache; with
        `keep`, only the last `keep` positions' logits (keep, vocab), which spares the KV-shared
        layers' work on the others (`text_forward`). `tap`: named steps, as for `trace`
        (speculative decoding reads `final_norm` there)."""
        cfg = self.config.text
        ids = check_token_ids(input_ids, cfg.vocab_size)
        if ids.ndim != 1:
            raise InputError(f"input_ids: expected one sequence (seq,) to extend a cache with, found shape {ids.shape}")
        end = cache.length + len(ids)
        if end > cfg.max_position_embeddings:
            raise InputError(
                f"input_ids: {end} tokens in all ({cache.length} before these {len(ids)}) exceed the model's "
                f"context, max_position_embeddings={cfg.max_position_embeddings}"
            )
        embeds, ple_ids = self.embed(ids, soft)
        positions = np.arange(cache.length, end)
        blocks = self.blocks(ids, cache.length)
        logits = text_forward(embeds, ple_ids, self.weights, cfg, positions, cache=cache.layers, tap=tap, blocks=blocks,
                              backend=self.backend, keep=keep)
        cache.length = end
        return logits

    @cached_property
    def tokenizer(self):
        """The checkpoint's own tokenizer (tokenizer.model or tokenizer.json + tokenizer_config.json)."""
        from .generate.tokenizer import load_gguf_tokenizer, load_tokenizer

        if self.gguf_metadata is not None:
            return load_gguf_tokenizer(self.path, self.gguf_metadata)
        if self.path is None:
            raise ConfigError("this model was not loaded from a directory, so it has no tokenizer")
        return load_tokenizer(self.path)

    def generate(self, prompt, max_new_tokens: int = generation.DEFAULT_MAX_NEW_TOKENS, temperature=None, top_k=None, top_p=None, seed=None,
                 images=None, max_soft_tokens: int = DEFAULT_SOFT_TOKENS, audio=None, assistant=None, draft_tokens=None, videos=None,
                 kv_cache_dtype=np.float32):
        """Continue `prompt`. A str (or a list of chat messages, rendered with the checkpoint's chat
        template) -> the new text; a sequence of token ids -> np.ndarray of the new ids (the stop
        token included, when one ended the generation). `temperature=0`: greedy; unset sampling
        arguments take the checkpoint's `generation_config.json` values (greedy without one).
        `images`: files, Pillow images or uint8 arrays, one per `<|image|>` mark of the prompt (a
        prompt without marks gets them in front), each worth up to `max_soft_tokens` tokens.
        `audio`: clips (WAV paths or 1-D sample arrays), one per `<|audio|>` mark of the prompt
        (no marks: in front); chat messages carry theirs in {"type": "audio", "path": ...} items.
        `assistant`: an MTP drafter (its checkpoint directory, or a loaded `Assistant`) for speculative
        decoding: the same tokens when greedy, the same distribution when sampling, faster when its
        drafts are accepted; `draft_tokens`: drafts per round (default: its num_assistant_tokens).
        `videos`: an animated GIF, a folder of frames, an MP4/WebM (with the `video` extra) or frames
        (n, h, w, 3) uint8, one per `<|video|>` mark of a str prompt (no marks: in front); 32 frames
        are sampled, each worth 70 soft tokens after its mm:ss timestamp (`vision/video.py`).
        `kv_cache_dtype`: how the KV cache stores keys and values, float32 or float16 (half the
        memory; widened inside the attention kernels), as a dtype or its name."""
        return generation.generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, images, max_soft_tokens,
                                   audio, assistant, draft_tokens, videos, kv_cache_dtype)

    def stream(self, prompt, max_new_tokens: int = generation.DEFAULT_MAX_NEW_TOKENS, temperature=None, top_k=None, top_p=None, seed=None,
               images=None, max_soft_tokens: int = DEFAULT_SOFT_TOKENS, audio=None, assistant=None, draft_tokens=None, videos=None,
               kv_cache_dtype=np.float32):
        """Like `generate`, but yields the new text piece by piece as it is decoded."""
        return generation.stream(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, images, max_soft_tokens,
                                 audio, assistant, draft_tokens, videos, kv_cache_dtype)

    def __repr__(self) -> str:
        t = self.config.text
        return (
            f"Model({self.config.model_type}, layers={t.num_hidden_layers}, hidden={t.hidden_size}, "
            f"vocab={t.vocab_size}, path={self.path!r})"
        )


def check_frame_counts(num_frames_per_video, pixel_values_videos) -> None:
    """`num_frames_per_video` (the reference requires it) must add up to the frames given."""
    if num_frames_per_video is None:
        raise InputError("num_frames_per_video: required with pixel_values_videos (the video processor returns it)")
    counts = np.asarray(num_frames_per_video)
    frames = np.shape(pixel_values_videos)[0] if np.ndim(pixel_values_videos) else None
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 1) or counts.sum() != frames:
        raise InputError(
            f"num_frames_per_video: expected positive frame counts adding up to the {frames} frames of "
            f"pixel_values_videos, found {counts.tolist()}"
        )


def split_by_row(batch: np.ndarray, soft: list) -> list[list]:
    """Hand each batch row the soft tokens of its own placeholders, consumed in order."""
    rows, offsets = [], [0] * len(soft)
    for row in batch:
        row_soft = []
        for j, (token_id, what, tokens) in enumerate(soft):
            n = int(np.sum(row == token_id))
            row_soft.append((token_id, what, tokens[offsets[j] : offsets[j] + n]))
            offsets[j] += n
        rows.append(row_soft)
    for (token_id, what, tokens), used in zip(soft, offsets):
        if used != len(tokens):
            raise InputError(
                f"input_ids: {used} {what} placeholder tokens (id {token_id}) in all, but the {what} encoder "
                f"produced {len(tokens)} soft tokens"
            )
    return rows


def default_model_path(name: str = "tiny") -> str:
    """The small trained Gemma 4 that ships inside the package (`tiny`), or its chat sibling
    (`tiny-chat`, the default of `minigemma chat`)."""
    here = os.path.join(os.path.dirname(__file__), "data", name)
    if not os.path.isdir(here):
        raise ConfigError(f"{here}: the embedded default model is not installed; pass a checkpoint directory")
    return here


def default_chat_model_path() -> str:
    """The embedded chat model: the tiny model fine-tuned on conversations (`data/tiny-chat`)."""
    return default_model_path("tiny-chat")
