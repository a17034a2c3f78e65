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


from ..errors import InputError
from .image import DEFAULT_SOFT_TOKENS, preprocess

MARKS = {"image": "image_token", "boi": "boi_token", "eoi": "eoi_token"}  # tokenizer_config.json names


def image_marks(tokenizer) -> dict[str, str]:
    """The tokenizer's `<|image|>`, `<|image>` and `<image|>` tokens."""
    named = {key: tokenizer.named.get(name) for key, name in MARKS.items()}
    missing = [MARKS[key] for key, token in named.items() if token is None]
    if missing:
        raise InputError(f"{tokenizer.path}: the tokenizer names no {', '.join(missing)}, so images cannot be placed in a prompt")
    return named


def preprocess_for(model, images, max_soft_tokens: int = DEFAULT_SOFT_TOKENS, video: bool = False):
    """The images (or a video's frames) preprocessed for this model's vision tower (`image.preprocess`)."""
    if model.vision is None:
        raise InputError("images: this checkpoint has no vision tower")
    if hasattr(model.vision, "preprocess"):  # the unified model: merged patches (`unified/image.py`)
        return model.vision.preprocess(images, max_soft_tokens, video)
    cfg = model.vision.config
    return preprocess(images, max_soft_tokens, cfg.patch_size, cfg.pooling_kernel_size)
