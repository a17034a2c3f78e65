"""The generation loop (mirrors `GenerationMixin.generate` with a `DynamicCache`).

    cache  = model.new_cache()
    logits = prefill(prompt ids)            the whole prompt, in chunks, through the cache
    repeat:
        token  = sample(logits[-1])         greedy, or temperature / top-k / top-p with a seed
        stop if token is an end token       EOS, end of turn, ... as the checkpoint names them
        logits = model.extend([token])      one position more: cost independent of the length

Stop tokens are read from the checkpoint: `eos_token_id` of config.json and of
generation_config.json (Gemma 4 lists `<eos>`, `<turn|>` and `<|tool_response>` there), and the
tokenizer's `eos_token` and `eot_token` (end of turn).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import InputError
from .cache import storage_dtype
from .media_prompt import prompt_with_media
from .sampling import Sampling, check_sampling, load_generation_config, resolve, sample
from .speculative import lookback_for, resolve_assistant, speculative_ids
from .tokenizer import TextStream, has_tokenizer

PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds the (chunk x keys) attention scores
DEFAULT_MAX_NEW_TOKENS = 256  # the Python API's and the command line's default, one number for both


def prefill(model, ids: np.ndarray, cache, chunk: int = PREFILL_CHUNK, soft=()) -> np.ndarray:
    """Feed the prompt; returns the logits of its last token (vocab,). With soft tokens (images,
    audio) the prompt goes in one piece, so no chunk cuts through the placeholders."""
    if soft:
        return model.extend(ids, cache, soft, keep=1)[-1]
    for start in range(0, len(ids), chunk):  # only the last token's logits are wanted
        logits = model.extend(ids[start : start + chunk], cache, keep=1 if start + chunk >= len(ids) else 0)
    return logits[-1]


def stop_token_ids(model) -> frozenset[int]:
    """End tokens named by the checkpoint's config, generation config and tokenizer."""
    ids = set(model.config.text.eos_token_id)
    gen_eos = load_generation_config(model.path).get("eos_token_id")
    ids.update(gen_eos if isinstance(gen_eos, list) else [] if gen_eos is None else [gen_eos])
    gguf = getattr(model, "gguf_metadata", None) is not None  # a GGUF carries its tokenizer inside
    if gguf or model.path and has_tokenizer(model.path):  # without one, ids in, ids out still works
        ids.update(i for name in ("eos_token", "eot_token") if (i := model.tokenizer.token_id(name)) is not None)
    return frozenset(int(i) for i in ids)


def generate_ids(
    model, ids, sampling: Sampling, max_new_tokens: int, stop_ids=frozenset(), cache=None, soft=(), rng=None
) -> Iterator[int]:
    """Yield new token ids one by one; the stop token, when one comes, is the last yielded. Stops
    early when the model's context (max_position_embeddings) is full. With a `cache`, `ids` are
    the tokens that continue what it holds (a chat's next turn)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise InputError("prompt: empty, expected at least one token")
    cache = model.new_cache() if cache is None else cache
    rng = np.random.default_rng(sampling.seed) if rng is None else rng
    logits = prefill(model, ids, cache, soft=soft)
    context = model.config.text.max_position_embeddings
    for step in range(max_new_tokens):
        token = sample(logits, sampling, rng)
        yield token
        if token in stop_ids or step == max_new_tokens - 1 or cache.length >= context:
            return
        logits = model.extend(np.array([token]), cache)[-1]


def new_ids(model, ids, sampling: Sampling, max_new_tokens: int, stop_ids=frozenset(), cache=None, soft=(), rng=None,
            assistant=None, draft_tokens=None, stats=None, kv_cache_dtype=np.float32) -> Iterator[int]:
    """`generate_ids`, or speculative decoding (`speculative.speculative_ids`) with an assistant.
    Without a `cache`, a new one storing keys and values as `kv_cache_dtype` (float32 or float16)."""
    if cache is None:
        cache = model.new_cache(kv_cache_dtype, lookback_for(model, assistant) if assistant is not None else 0)
    if assistant is None:
        return generate_ids(model, ids, sampling, max_new_tokens, stop_ids, cache, soft, rng)
    return speculative_ids(model, assistant, ids, sampling, max_new_tokens, stop_ids, cache, soft, rng, draft_tokens, stats)
def room_for_new_tokens(model, prompt_tokens: int) -> int:
    """How many tokens `generate_ids` can produce after a prompt before the context is full: every
    position up to max_position_embeddings is fed, and one more token is sampled from the last."""
    return model.config.text.max_position_embeddings - prompt_tokens + 1


def check_prompt_fits(model, n: int) -> None:
    """A prompt of n tokens: at least one, and no more than the model's context."""
    context = model.config.text.max_position_embeddings
    if n == 0:
        raise InputError("prompt: empty, expected at least one token")
    if n > context:
        raise InputError(f"prompt: {n} tokens, longer than the model's context (max_position_embeddings={context})")


def _setup(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, images=None, max_soft_tokens=None,
           audio=None, videos=None, kv_cache_dtype=np.float32):
    check_sampling(temperature, top_k, top_p, seed, max_new_tokens)
    storage_dtype(kv_cache_dtype)  # a bad dtype fails now, not at the first piece
    ids, as_text, soft = prompt_with_media(model, prompt, images, max_soft_tokens, audio, videos)
    check_prompt_fits(model, len(ids))
    sampling = resolve(temperature, top_k, top_p, seed, load_generation_config(model.path))
    return ids, as_text, sampling, stop_token_ids(model), soft


def generate(model, prompt, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, temperature=None, top_k=None, top_p=None, seed=None, images=None,
             max_soft_tokens=None, audio=None, assistant=None, draft_tokens=None, videos=None, kv_cache_dtype=np.float32):
    """`Model.generate`: str / messages -> str; token ids -> np.ndarray of the new ids. With an
    `assistant` (a directory or an `Assistant`): speculative decoding (`speculative.py`)."""
    ids, as_text, sampling, stops, soft = _setup(
        model, prompt, max_new_tokens, temperature, top_k, top_p, seed, images, max_soft_tokens, audio, videos, kv_cache_dtype
    )
    assistant = resolve_assistant(model, assistant) if assistant is not None else None
    tokens = new_ids(model, ids, sampling, max_new_tokens, stops, soft=soft, assistant=assistant, draft_tokens=draft_tokens,
                     kv_cache_dtype=kv_cache_dtype)
    new = np.array(list(tokens), dtype=np.int64)
    if not as_text:
        return new
    return model.tokenizer.decode(new[:-1] if len(new) and new[-1] in stops else new)


def stream(model, prompt, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, temperature=None, top_k=None, top_p=None, seed=None, images=None,
           max_soft_tokens=None, audio=None, assistant=None, draft_tokens=None, videos=None, kv_cache_dtype=np.float32) -> Iterator[str]:
    """`Model.stream`: the text of `generate`, piece by piece. Arguments are checked now, not at
    the first piece."""
    ids, _, sampling, stops, soft = _setup(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, images,
                                           max_soft_tokens, audio, videos, kv_cache_dtype)
    assistant = resolve_assistant(model, assistant) if assistant is not None else None
    tokens = new_ids(model, ids, sampling, max_new_tokens, stops, soft=soft, assistant=assistant, draft_tokens=draft_tokens,
                     kv_cache_dtype=kv_cache_dtype)
    return text_pieces(model.tokenizer, tokens, stops)


def text_pieces(tokenizer, tokens, stops) -> Iterator[str]:
    """Token ids -> text pieces, complete characters only; the stop token is not shown."""
    text = TextStream(tokenizer)
    for token in tokens:
        if token in stops:
            break
        if piece := text.push(token):
            yield piece
    if rest := text.flush():
        yield rest
