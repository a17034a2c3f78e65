"""The images and audio clips of a conversation, for `chat.Conversation` (what `Gemma4Processor`
does to a chat's media, turn after turn).

A user turn's content may hold media items beside its text, as chat templates read them:

    {"type": "image", "image": PATH or PIL image or array}     (or "path": PATH)
    {"type": "audio", "audio": PATH or samples}                (or "path": PATH)
    {"type": "video", "video": PATH or frames}                 (or "path": PATH)

The template writes one mark per item (`<|image|>`, `<|audio|>`, `<|video|>`). Every turn the whole history
is rendered again, so every mark must be expanded again to its begin token, n placeholders and
end token (vision_prompt.py, audio_prompt.py), n being that item's soft-token count. An item is
encoded once, when its turn arrives; its count and soft tokens are kept here, so that later
turns render it without running a tower, and a KV cache that starts over is fed it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio.prompt import audio_tokens, encode_clips, expand_audio_markers
from ..errors import InputError, plural
from ..vision.image import DEFAULT_SOFT_TOKENS
from ..text.multimodal import expand_image_marks
from ..vision.prompt import image_marks, preprocess_for
from ..vision.video import expand_video_marks
from .video_prompt import video_expansions, video_inputs, video_token

KINDS = ("video", "image", "audio")  # the order in which marks are expanded; each kind has its own placeholder


@dataclass(frozen=True)
class Media:
    """The items of one kind seen so far, in conversation order."""

    counts: tuple[int, ...] = ()  # soft tokens per item
    tokens: tuple[np.ndarray, ...] = ()  # (count, hidden) soft tokens per item
    texts: tuple[str, ...] = ()  # videos: what each one's mark becomes (timestamps and placeholders)

    def plus(self, counts, tokens: np.ndarray, texts=()) -> Media:
        """These items and the new ones, whose soft tokens come concatenated (sum(counts), hidden)."""
        return Media(self.counts + tuple(counts), self.tokens + tuple(np.split(tokens, np.cumsum(counts)[:-1])),
                     self.texts + tuple(texts))


@dataclass(frozen=True)
class ChatMedia:
    """A conversation's images and clips so far; `add` returns a new one, so a turn that fails
    half-way leaves the conversation's media as they were."""

    model: object
    max_soft_tokens: int = DEFAULT_SOFT_TOKENS  # each image's budget
    seen: dict = field(default_factory=lambda: {kind: Media() for kind in KINDS})

    def add(self, content, kinds=KINDS) -> ChatMedia:
        """The media so far and those of `content` (a message's content: a str has none)."""
        seen = dict(self.seen)
        for kind in kinds:
            items = [item for item in content if isinstance(item, dict) and item.get("type") == kind] if isinstance(content, list) else []
            payloads = [item.get(kind, item.get("path")) for item in items]  # the image / clip itself, or its path
            for i, (item, payload) in enumerate(zip(items, payloads)):
                if payload is None:
                    raise InputError(f"{kind} item {i} of a message: expected it under {kind!r} or 'path', found {item!r}")
            if items:
                seen[kind] = seen[kind].plus(*self.encode_items(kind, payloads))
        return ChatMedia(self.model, self.max_soft_tokens, seen)

    def encode_items(self, kind: str, items) -> tuple:
        """Items of one kind -> (soft tokens per item, all their soft tokens (n, hidden)[, videos' mark texts])."""
        if kind == "audio":
            return encode_clips(self.model, items)
        if kind == "video":
            inputs = video_inputs(self.model, items)
            [(_, _, tokens)] = self.model.encode_media(**inputs.model_inputs())
            counts = [f * n for f, n in zip(inputs.num_frames_per_video, inputs.num_soft_tokens_per_video)]
            return counts, tokens, video_expansions(self.model, inputs)
        inputs = preprocess_for(self.model, items, self.max_soft_tokens)
        [(_, _, tokens)] = self.model.encode_media(inputs.pixel_values, inputs.image_position_ids)
        return [int(n) for n in inputs.num_soft_tokens_per_image], tokens

    def expand(self, text: str) -> str:
        """Every media mark of a rendered conversation expanded to its item's placeholders."""
        if self.seen["video"].counts:
            token, texts = video_token(self.model), list(self.seen["video"].texts)
            if text.count(token) != len(texts):  # else expand_video_marks would put them in front
                raise InputError(f"{self.model.tokenizer.path}: the chat template wrote {text.count(token)} "
                                 f"video marks {token!r} for the conversation's {len(texts)} videos")
            text = expand_video_marks(text, texts, token)
        if self.seen["image"].counts:
            marks, counts = image_marks(self.model.tokenizer), list(self.seen["image"].counts)
            if text.count(marks["image"]) != len(counts):  # else expand_image_marks would put them in front
                raise InputError(f"{self.model.tokenizer.path}: the chat template wrote "
                                 f"{plural(text.count(marks['image']), 'image mark')} {marks['image']!r} for the "
                                 f"conversation's {plural(len(counts), 'image')}")
            text = expand_image_marks(text, counts, **marks)
        if self.seen["audio"].counts:
            text = expand_audio_markers(text, self.seen["audio"].counts, audio_tokens(self.model), unmarked_first=False)
        return text

    def encode(self, messages, add_generation_prompt: bool, **switches) -> list[int]:
        """The conversation's token ids: the chat template's text, media marks expanded."""
        text = self.model.tokenizer.render_chat(messages, add_generation_prompt, **switches)
        return self.model.tokenizer.encode(self.expand(text))

    def soft(self, ids, start: int, end: int) -> list:
        """Soft tokens for feeding ids[start:end]: the i-th placeholder of a kind in `ids` takes
        row i of that kind's soft tokens, all items in order."""
        ids, out = np.asarray(ids), []
        for kind in KINDS:
            media = self.seen[kind]
            if not media.counts:
                continue
            placeholder = self.model.config.tokens[f"{kind}_token_id"]
            before, inside = int(np.sum(ids[:start] == placeholder)), int(np.sum(ids[start:end] == placeholder))
            if inside:
                out.append((placeholder, kind, np.concatenate(media.tokens)[before : before + inside]))
        return out
