"""Writing text: the KV cache, sampling, the generation loop, tokenizer, chat and media prompts.

Read in the order a reply is made:

    tokenizer.py       SentencePiece or tokenizer.json, special tokens, streaming decode
    chat_template.py   the checkpoint's Jinja chat template, rendered as apply_chat_template does
    prompt.py          a prompt as token ids (text, chat messages or ids)
    video_prompt.py    ... with videos: each mark becomes its frames' timestamps and placeholders
    media_prompt.py    ... with images, audio clips and videos: marks expanded, towers run
    cache.py           the KV cache: ring buffers (sliding), growing (global), shared layers keep nothing
    sampling.py        greedy, temperature, top-k, top-p, seed
    loop.py            prefill, then one token at a time until a stop token (Model.generate / stream)
    chat_media.py      images, clips and videos that stay in a conversation
    chat.py            a conversation: turns, history in the cache, the thinking channel
"""

from .chat import Conversation
from .sampling import Sampling

__all__ = ["Conversation", "Sampling"]
