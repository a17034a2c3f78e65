"""A prompt as token ids: text gets `<bos>` in front, chat messages go through the chat template,
and token ids are taken as they are (and then new ids come back as ids, not text).

The media-free base of `media_prompt.py`, which adds images and audio clips.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..text.model import check_token_ids


def is_messages(prompt) -> bool:
    return isinstance(prompt, list | tuple) and bool(prompt) and all(isinstance(m, dict) for m in prompt)


def prompt_ids(model, prompt) -> tuple[np.ndarray, bool]:
    """(ids, as_text): a str gets <bos> in front; a list of messages goes through the chat
    template; anything else is taken as token ids (and new ids are returned as ids)."""
    if isinstance(prompt, str):
        return np.array(model.tokenizer.encode(prompt, add_special_tokens=True), dtype=np.int64), True
    if isinstance(prompt, list | tuple) and prompt and all(isinstance(m, dict) for m in prompt):
        return np.array(model.tokenizer.encode_chat(list(prompt)), dtype=np.int64), True
    ids = check_token_ids(prompt, model.config.text.vocab_size, name="prompt")
    if ids.ndim != 1:
        raise InputError(f"prompt: expected one sequence of token ids (seq,), found shape {ids.shape}")
    return ids, False
