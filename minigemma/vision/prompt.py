"""Prompts with images, for `generate`, `stream` and the CLI's `--image` (what `Gemma4Processor`
does before the model runs).

    images -> preprocess (image.py) at the model's patch size, pooling and a soft-token budget
           -> each image's soft-token count n
    prompt -> each image mark `<|image|>` becomes `<|image>` + n x `<|image|>` + `<image|>`
              (a prompt without marks gets its images in front), then tokenized
    images -> the vision tower's soft tokens, which replace the `<|image|>` placeholders

A prompt may be a str (tokenized with <bos>), chat messages (the chat template writes an image
mark for each `{"type": "image"}` item), or token ids that already hold the expanded placeholders.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .image import DEFAULT_SOFT_TOKENS, preprocess
from .multimodal import expand_image_marks

MARKS = {"image": "image_token", "boi": "boi_token", "eoi": "eoi_token"}  # tokenizer_config.json names


def image_marks(tokenizer) -> dict[str, str]:
    """The tokenizer's `<|image|>`, `<|image>` and `<image|>` tokens."""
    named = {key: tokenizer.named.get(name) for key, name in MARKS.items()}
    missing = [MARKS[key] for key, token in named.items() if token is None]
    if missing:
        raise InputError(f"{tokenizer.path}: the tokenizer names no {', '.join(missing)}, so images cannot be placed in a prompt")
    return named


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
        from .generation import prompt_ids

        ids, as_text = prompt_ids(model, prompt)
    soft = model.encode_media(inputs.pixel_values, inputs.image_position_ids)
    return np.asarray(ids, dtype=np.int64), as_text, soft


def preprocess_for(model, images, max_soft_tokens: int = DEFAULT_SOFT_TOKENS):
    """The images preprocessed for this model's vision tower (`image.preprocess`)."""
    if model.vision is None:
        raise InputError("images: this checkpoint has no vision tower")
    cfg = model.vision.config
    return preprocess(images, max_soft_tokens, cfg.patch_size, cfg.pooling_kernel_size)
