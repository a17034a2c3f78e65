"""A multi-turn conversation with a chat checkpoint, and its thinking channel.

Every turn renders the whole history with the checkpoint's chat template, but only the tokens
the KV cache has not seen are prefilled. Templates do not simply append, though: Gemma 4's
generation prompt may open and close an empty thinking channel that the history, rendered next
turn, does not contain, and reasoning is dropped from past turns. So the cache state is saved
where the conversation so far ends (before the generation prompt: the point the next turn's
prompt repeats token for token) and restored next turn; failing both that and a plain
continuation, the cache starts over.

Gemma 4 thinks in a channel before it answers:

    <|channel>thought\\n  ...reasoning...  <channel|>  answer  <turn|>

`Channels` splits the streamed tokens at those two special tokens (by id, never by matching
text), so the reasoning can be shown apart from the answer. A channel's first line is its name
("thought") and is not shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .cache import storage_dtype
from .chat_media import ChatMedia
from .loop import check_prompt_fits, new_ids, prefill, stop_token_ids
from ..vision.image import DEFAULT_SOFT_TOKENS
from .sampling import Sampling
from .speculative import SpeculationStats, lookback_for, resolve_assistant
from .tokenizer import TextStream

THOUGHT, ANSWER = "thought", "answer"


class Channels:
    """Token ids -> (channel, text piece) pairs, channel being THOUGHT or ANSWER."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.open_id = tokenizer.token_id("soc_token")  # <|channel>
        self.close_id = tokenizer.token_id("eoc_token")  # <channel|>
        self.channel = ANSWER
        self.text = TextStream(tokenizer)
        self.name = None  # while reading a channel's name: what was read of it so far

    def push(self, token: int) -> list[tuple[str, str]]:
        if token in (self.open_id, self.close_id) and token is not None:
            out = self.finish()
            self.channel = THOUGHT if token == self.open_id else ANSWER
            self.name = "" if token == self.open_id else None
            return out
        return self._emit(self.text.push(token))

    def finish(self) -> list[tuple[str, str]]:
        out = self._emit(self.text.flush())
        self.text = TextStream(self.tokenizer)
        return out

    def _emit(self, piece: str) -> list[tuple[str, str]]:
        if self.name is not None and piece:  # still inside the channel's name line
            self.name += piece
            if "\n" not in self.name:
                return []
            piece, self.name = self.name.split("\n", 1)[1], None
        return [(self.channel, piece)] if piece else []


@dataclass
class TurnStats:
    prompt_tokens: int  # the whole rendered conversation
    prefilled: int  # of those, the ones not already in the cache
    new_tokens: int
    prefill_seconds: float
    decode_seconds: float  # after the first new token


class Conversation:
    """History, template switches and one KV cache, turn after turn."""

    def __init__(self, model, sampling: Sampling, max_new_tokens: int, system: str | None = None, thinking: bool = False,
                 max_soft_tokens: int = DEFAULT_SOFT_TOKENS, assistant=None, draft_tokens: int | None = None,
                 kv_cache_dtype=np.float32):
        self.model = model
        self.kv_cache_dtype = storage_dtype(kv_cache_dtype)  # how every cache of this chat stores keys and values
        # speculative decoding: the drafter, and the extra positions it reads from the cache's rings
        self.assistant = resolve_assistant(model, assistant) if assistant is not None else None
        self.draft_tokens, self.speculation = draft_tokens, SpeculationStats()
        self.lookback = lookback_for(model, self.assistant) if self.assistant is not None else 0
        self.tokenizer = model.tokenizer
        self.sampling, self.max_new_tokens = sampling, max_new_tokens
        self.template_switches = {"enable_thinking": True} if thinking else {}
        self.messages = [{"role": "system", "content": system}] if system else []
        self.stops = stop_token_ids(model)
        self.rng = np.random.default_rng(sampling.seed)  # one stream of draws for the whole chat
        self.cache, self.cached = None, []  # the cache, and the token ids it holds
        self.saved, self.saved_ids = None, []  # its state after the history, before the generation prompt
        self.media = ChatMedia(model, max_soft_tokens)  # images and clips so far, to render and feed the history with
        self.last: TurnStats | None = None

    def reply(self, content) -> Iterator[tuple[str, str]]:
        """Add a user turn (a str, or content items as the template reads them); yield the model's
        reply as (channel, piece); the answer joins the history."""
        messages = [*self.messages, {"role": "user", "content": content}]
        media = self.media.add(content)
        ids = media.encode(messages, add_generation_prompt=True, **self.template_switches)
        check_prompt_fits(self.model, len(ids))
        history = media.encode(messages, add_generation_prompt=False, **self.template_switches)
        if ids[: len(history)] != history or len(history) == len(ids):
            history = []  # no generation prompt, or one that rewrites the end: nothing to save
        cache, self.cache = self.cache, None  # a turn cut short (Ctrl-C) leaves no half-fed cache behind
        if cache is not None and ids[: len(self.cached)] == self.cached and len(ids) > len(self.cached):
            pass  # the prompt continues what the cache holds
        elif cache is not None and self.saved_ids and ids[: len(self.saved_ids)] == self.saved_ids:
            cache.restore(self.saved)
            self.cached = self.saved_ids
        else:
            cache, self.cached = self.model.new_cache(self.kv_cache_dtype, self.lookback), []
            self.saved, self.saved_ids = None, []  # a state of the old cache
        reused = len(self.cached)
        start = first = time.perf_counter()
        if len(history) > len(self.cached):  # feed the history, then save the state there
            prefill(self.model, np.array(history[len(self.cached) :]), cache, soft=media.soft(history, len(self.cached), len(history)))
            self.saved, self.saved_ids, self.cached = cache.save(), history, history
        todo = ids[len(self.cached) :]
        channels, answer, new = Channels(self.tokenizer), [], []
        soft = media.soft(ids, len(self.cached), len(ids))
        for token in new_ids(self.model, todo, self.sampling, self.max_new_tokens, self.stops, cache, soft, self.rng,
                             self.assistant, self.draft_tokens, self.speculation):
            if not new:
                first = time.perf_counter()
            new.append(token)
            if token in self.stops:
                break
            for channel, piece in channels.push(token):
                answer += [piece] if channel == ANSWER else []
                yield channel, piece
        for channel, piece in channels.finish():
            answer += [piece] if channel == ANSWER else []
            yield channel, piece
        self.cache, self.cached = cache, ids + new[:-1]  # the last token was sampled, never fed
        self.messages = [*messages, {"role": "assistant", "content": "".join(answer)}]
        self.media = media
        self.last = TurnStats(len(ids), len(ids) - reused, len(new), first - start, time.perf_counter() - first)
