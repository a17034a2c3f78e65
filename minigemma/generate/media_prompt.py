"""A prompt with images and audio together, for `generate` / `stream` and the CLI (what
`Gemma4Processor` does before the model runs, for both modalities at once).

    prompt text (a str, or chat messages rendered by the chat template)
      -> each `<|image|>` mark expanded (vision_prompt.py), images encoded
      -> each `<|audio|>` mark expanded (audio_prompt.py), clips encoded
      -> token ids, and the soft tokens of both towers to merge at their placeholders

A str prompt takes its clips from `audio`; chat messages carry theirs in their content's
{"type": "audio", "path": ...} items. Without audio this is `prompt_with_images`
(or, without images either, the plain prompt). Videos (`videos`, a str prompt's `<|video|>`
marks) are expanded first, each frame its timestamp and its placeholders (`vision/video.py`).
"""

from __future__ import annotations

import numpy as np

from ..audio.prompt import audio_tokens, clip_features, expand_audio_markers
from .chat_media import ChatMedia
from ..errors import InputError
from ..vision.image import DEFAULT_SOFT_TOKENS
from ..text.multimodal import expand_image_marks
from ..vision.prompt import image_marks, preprocess_for
from .prompt import is_messages, prompt_ids
from .video_prompt import expand_videos, video_inputs


def given(media) -> bool:
    return media is not None and not (isinstance(media, list | tuple) and len(media) == 0)


def prompt_with_media(model, prompt, images=None, max_soft_tokens=None, audio=None, videos=None) -> tuple[np.ndarray, bool, list]:
    """(token ids, as_text, soft tokens) of a prompt with its images, audio clips and videos. The
    towers run last, once the marks are known to match the inputs."""
    if given(videos):
        if not isinstance(prompt, str):
            raise InputError(f"prompt: videos need a text prompt, found {type(prompt).__name__}")
        inputs = video_inputs(model, videos)
        ids, as_text, soft = prompt_with_media(model, expand_videos(model, prompt, inputs), images, max_soft_tokens, audio)
        return ids, as_text, soft + model.encode_media(**inputs.model_inputs())
    max_soft_tokens = max_soft_tokens or DEFAULT_SOFT_TOKENS
    if is_messages(prompt):
        if audio is not None:
            raise InputError("audio: with chat messages, give each clip in its message as {'type': 'audio', 'path': PATH}")
        heard = ChatMedia(model)  # the messages' clips; their images come in `images`, as a processor takes them
        for message in prompt:
            heard = heard.add(message.get("content"), kinds=("audio",))
        counts, encode_audio = list(heard.seen["audio"].counts), lambda: np.concatenate(heard.seen["audio"].tokens)
        text = model.tokenizer.render_chat(list(prompt))  # <bos> included; the template writes a mark per item
    elif audio is not None and not (isinstance(audio, list | tuple) and len(audio) == 0):
        if not isinstance(prompt, str):
            raise InputError(f"prompt: audio needs a text prompt or chat messages, found {type(prompt).__name__}")
        ids, media = processor_inputs(model, prompt, images, max_soft_tokens, audio)
        return ids, True, model.encode_media(**media)  # the towers run once the marks matched
    else:
        counts = []
    if not counts:  # no audio: images only, or a plain prompt
        if images is None:
            return *prompt_ids(model, prompt), []
        return prompt_with_images(model, prompt, images, max_soft_tokens)
    if images is not None:
        inputs = preprocess_for(model, images, max_soft_tokens)
        text = expand_image_marks(text, inputs.num_soft_tokens_per_image, **image_marks(model.tokenizer))
    text = expand_audio_markers(text, counts, audio_tokens(model), unmarked_first=False)
    ids = np.array(model.tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    soft = [(model.config.tokens["audio_token_id"], "audio", encode_audio())]
    if images is not None:
        soft += model.encode_media(inputs.pixel_values, inputs.image_position_ids)
    return ids, True, soft


def processor_inputs(model, text: str, images=None, max_soft_tokens: int = DEFAULT_SOFT_TOKENS, audio=None, videos=None):
    """What `Gemma4Processor` hands the model for a text prompt with images, clips and videos: (token
    ids with <bos> and every mark expanded, {pixel_values, image_position_ids, input_features,
    input_features_mask, pixel_values_videos, video_position_ids, num_frames_per_video} for the media
    given). Marks as in `prompt_with_media`; nothing is encoded."""
    media = {}
    if given(videos):
        inputs = video_inputs(model, videos)
        text = expand_videos(model, text, inputs)
        media.update(inputs.model_inputs())
    if images is not None:
        inputs = preprocess_for(model, images, max_soft_tokens)
        text = expand_image_marks(text, inputs.num_soft_tokens_per_image, **image_marks(model.tokenizer))
        media.update(pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids)
    if audio is not None and not (isinstance(audio, list | tuple) and len(audio) == 0):
        features, mask, counts = clip_features(model, audio)
        text = expand_audio_markers(text, counts, audio_tokens(model), unmarked_first=True)
        media.update(input_features=features, input_features_mask=mask)
    return np.array(model.tokenizer.encode(text, add_special_tokens=True), dtype=np.int64), media


def prompt_with_images(model, prompt, images, max_soft_tokens: int = DEFAULT_SOFT_TOKENS):
    """(token ids, as_text, soft tokens) of a prompt and its images; `soft` as `Model.embed` takes it."""
    inputs = preprocess_for(model, images, max_soft_tokens)
    counts = inputs.num_soft_tokens_per_image
    if isinstance(prompt, str):
        text = expand_image_marks(prompt, counts, **image_marks(model.tokenizer))
        ids, as_text = model.tokenizer.encode(text, add_special_tokens=True), True
    elif isinstance(prompt, list | tuple) and prompt and all(isinstance(m, dict) for m in prompt):
        text = expand_image_marks(model.tokenizer.render_chat(list(prompt)), counts, **image_marks(model.tokenizer))
        ids, as_text = model.tokenizer.encode(text), True
    else:  # token ids: the placeholders are the caller's
        ids, as_text = prompt_ids(model, prompt)
    soft = model.encode_media(inputs.pixel_values, inputs.image_position_ids)
    return np.asarray(ids, dtype=np.int64), as_text, soft
