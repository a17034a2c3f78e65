"""Choosing the next token from the logits (mirrors what `generate` does with
`TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper`, in that order, then draws
from the softmax; or takes the argmax when greedy).

    temperature = 0      greedy: the most likely token, every time
    logits / temperature  below 1 sharpens the distribution, above 1 flattens it
    top-k                 keep the k most likely tokens (0: all)
    top-p (nucleus)       keep the fewest most likely tokens whose probability adds up to >= p
                          (1: all); the most likely token always stays

A seed makes sampling repeat exactly: every generation owns its `np.random.Generator`, so no
global random state is read or written.

Arguments left unset take the checkpoint's `generation_config.json` values (Gemma 4 ships
`do_sample`, `temperature`, `top_k`, `top_p` there); without one, decoding is greedy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..weights.config_reader import read_json_object
from ..errors import InputError
from ..text.ops import softmax

GENERATION_CONFIG = "generation_config.json"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k
    top_p: float = 1.0  # 1: no top-p
    seed: int | None = None  # None: fresh entropy on every run

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_sampling(temperature, top_k, top_p, seed, max_new_tokens, spell=lambda name: name) -> None:
    """Raise InputError naming the first bad argument. `spell` turns a Python name into the one
    the user typed (the CLI passes `--max-new-tokens` style)."""

    def bad(name, expected, found):
        raise InputError(f"{spell(name)}: expected {expected}, found {found!r}")

    def is_int(x):
        return isinstance(x, int | np.integer) and not isinstance(x, bool)

    def is_real(x):
        return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and math.isfinite(x)

    if temperature is not None and not (is_real(temperature) and temperature >= 0):
        bad("temperature", "a number >= 0 (0: greedy)", temperature)
    if top_k is not None and not (is_int(top_k) and top_k >= 0):
        bad("top_k", "an integer >= 0 (0: off)", top_k)
    if top_p is not None and not (is_real(top_p) and 0 < top_p <= 1):
        bad("top_p", "a number in (0, 1] (1: off)", top_p)
    if seed is not None and not (is_int(seed) and seed >= 0):
        bad("seed", "an integer >= 0", seed)
    if not (is_int(max_new_tokens) and max_new_tokens >= 1):
        bad("max_new_tokens", "an integer >= 1", max_new_tokens)


def resolve(temperature=None, top_k=None, top_p=None, seed=None, generation_config: dict | None = None) -> Sampling:
    """Explicit arguments win; unset ones come from generation_config.json (greedy without it)."""
    gen = generation_config or {}
    sampling_by_default = bool(gen.get("do_sample", False))
    if temperature is None:
        temperature = float(gen.get("temperature", 1.0)) if sampling_by_default else 0.0
    if top_k is None:
        top_k = int(gen.get("top_k") or 0)
    if top_p is None:
        top_p = float(gen.get("top_p") or 1.0)
    return Sampling(float(temperature), int(top_k), float(top_p), seed)


def load_generation_config(path: str | None) -> dict:
    """`generation_config.json` of a checkpoint directory, or {} when there is none."""
    file = os.path.join(path, GENERATION_CONFIG) if path else None
    return read_json_object(file) if file is not None and os.path.exists(file) else {}


def filtered_logits(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """Temperature, then top-k, then top-p: logits (vocab,) with -inf on every excluded token."""
    z = logits.astype(np.float32) / np.float32(s.temperature)
    if 0 < s.top_k < len(z):
        kth = np.partition(z, -s.top_k)[-s.top_k]
        z = np.where(z < kth, -np.inf, z)  # ties with the k-th value stay, as in the reference
    if s.top_p < 1:
        order = np.argsort(z, kind="stable")  # ascending
        cumulative = np.cumsum(softmax(z[order]))
        drop = cumulative <= 1 - s.top_p  # the unlikely tail whose mass is at most 1 - p
        drop[-1] = False  # the most likely token always stays
        z = z.copy()
        z[order[drop]] = -np.inf
    return z


def sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    """One token id from logits (vocab,)."""
    if s.greedy:
        return int(np.argmax(logits))
    probs = softmax(filtered_logits(logits, s)).astype(np.float64)
    cumulative = np.cumsum(probs)
    # inverse CDF: the first token whose cumulative probability passes a uniform draw; a token of
    # probability 0 never is (its cumulative value equals its predecessor's)
    token = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(token, int(np.flatnonzero(probs)[-1]))  # a draw rounded up to the total
