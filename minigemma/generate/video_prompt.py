"""Videos in a prompt (what `Gemma4Processor` does with `videos=`: the video processor's frames,
then `replace_video_token` at each video mark): shared by `media_prompt.py` and `chat_media.py`.

The mark is the tokenizer's spelling of config.json's `video_token_id` (`<|video|>` in Gemma 4's);
it becomes each sampled frame's `mm:ss` time and its placeholders (`vision/video.py`).
"""

from __future__ import annotations

from ..errors import ConfigError, InputError
from ..vision.prompt import image_marks, preprocess_for
from ..vision.video import VIDEO_SOFT_TOKENS, VideoInputs, expand_video_marks, preprocess_videos, video_text


def video_token(model) -> str:
    """The tokenizer's spelling of config.json's `video_token_id` (`<|video|>` in Gemma 4's)."""
    vid, tok = model.config.tokens.get("video_token_id"), model.tokenizer
    found = [t for t, i in tok.specials.items() if i == vid]
    if not found:
        raise ConfigError(f"{tok.path}: the tokenizer has no special token with id {vid} (config.json's video_token_id)")
    return found[0]


def video_inputs(model, videos) -> VideoInputs:
    """Videos read, frames sampled and preprocessed at the per-frame budget (70)."""
    if model.vision is None:
        raise InputError(f"videos: {model.path} has no vision tower (its config.json has no vision_config)")
    return preprocess_videos(videos, lambda frames: preprocess_for(model, frames, VIDEO_SOFT_TOKENS, video=True))


def video_expansions(model, inputs: VideoInputs) -> list[str]:
    """What each video's mark becomes: its frames' `mm:ss <|image>` + placeholders + `<image|>`, joined by spaces."""
    marks, token = image_marks(model.tokenizer), video_token(model)
    return [video_text(seconds, n, marks["boi"], token, marks["eoi"])
            for seconds, n in zip(inputs.timestamps, inputs.num_soft_tokens_per_video)]


def expand_videos(model, text: str, inputs: VideoInputs) -> str:
    """Each video mark of `text` expanded (`video_expansions`), in order; no marks: the videos in front."""
    return expand_video_marks(text, video_expansions(model, inputs), video_token(model))
