"""The KV cache: what makes generation one token at a time cheap (mirrors `DynamicCache` with its
`DynamicLayer` and `DynamicSlidingWindowLayer`s).

Generating token t by a full forward pass would recompute the keys and values of all t-1 earlier
tokens, in every layer, at every step. Instead each layer keeps the keys/values it has already
computed, and a step feeds only the new token(s): the prompt once (the *prefill*, possibly in
chunks), then one token per step (the *decode*).

Gemma 4 makes this cache small in three ways, one per kind of layer:

* **sliding layers** (most of them) attend only to the last `sliding_window` positions, so they
  keep a fixed-size *ring buffer*: the i-th token ever written lands in slot i % capacity,
  overwriting one that no future query can see. Memory is constant however long the text grows.
  Positions travel with the keys, so the attention mask stays exact even though the ring's slot
  order wraps around (the mask is built from positions, not from slot order).
* **global layers** keep everything: their cache grows with the text.
* **KV-shared layers** (`reuse`) keep nothing: they read the keys/values their producer layer
  (`store`) computed in this very step, cache included (`ForwardContext.shared_kv`).

A compact option, `new_cache(cfg, np.float16)`: keys and values stored in float16 (half the
bytes; a global layer's cache is what grows with the text), widened to float32 inside the
attention kernel, tile by tile. The new tokens' keys and values are rounded on the way in, so
every query sees the same, stored, values (llama.cpp's default f16 cache does the same).

A query at position q of a sliding layer sees keys q - window + 1 .. q. So a chunk of c new tokens
needs the previous window - 1 keys plus its own c, and after the chunk only the last window - 1
positions can still be seen by a future query: that is all the ring keeps (plus `lookback` more
when a drafter reads further back: `assistant/decoder.py`).

Speculative decoding feeds drafted tokens the target may then reject: `KVCache.rollback(n)` takes
the last n positions back, as if they had never been fed. A global cache just shortens; a ring
buffer remembers what its last update overwrote and puts it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..text.config import TextConfig
from ..errors import ConfigError


STORAGE = (np.float32, np.float16)  # how keys and values may be stored


def _empty(rows: int, kv_heads: int, head_dim: int, dtype=np.float32) -> np.ndarray:
    return np.zeros((rows, kv_heads, head_dim), dtype)


class SlidingKV:
    """Ring buffer of the last `window - 1 + lookback` keys/values of one sliding layer."""

    def __init__(self, window: int, kv_heads: int, head_dim: int, dtype=np.float32, lookback: int = 0):
        self.capacity = window - 1 + lookback  # what a future query (or a drafter) can still see
        self.keys = _empty(self.capacity, kv_heads, head_dim, dtype)  # (capacity, kv_heads, head_dim)
        self.values = _empty(self.capacity, kv_heads, head_dim, dtype)
        self.positions = np.zeros(self.capacity, np.int64)  # absolute position of each slot
        self.written = 0  # tokens ever written; the next one goes to slot written % capacity
        self.undo = None  # the last update: its tokens, and what their slots held before

    def update(self, k: np.ndarray, v: np.ndarray, positions: np.ndarray):
        """Keys/values of c new tokens (c, kv_heads, head_dim) -> what this step attends to:
        the ring's filled slots, oldest first, followed by the new tokens, with positions. In
        position order, the attention kernel finds a query block's keys by binary search (a
        chunk of a long prompt then reads only the window of each block, not the whole ring)."""
        k, v = k.astype(self.keys.dtype, copy=False), v.astype(self.values.dtype, copy=False)  # as stored
        k_all, v_all, pos_all = (np.concatenate([*self._oldest_first(a), new]) for a, new in
                                 ((self.keys, k), (self.values, v), (self.positions, positions)))
        keep = min(len(k), self.capacity)  # only the last window - 1 new tokens can be seen later
        slots = (self.written + np.arange(len(k) - keep, len(k))) % self.capacity if keep else np.zeros(0, np.int64)
        before = (self.keys[slots].copy(), self.values[slots].copy(), self.positions[slots].copy())
        self.undo = (k, v, positions, slots, before, self.written)
        if keep:
            self.keys[slots], self.values[slots], self.positions[slots] = k[-keep:], v[-keep:], positions[-keep:]
        self.written += len(k)
        return k_all, v_all, pos_all

    def _oldest_first(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The filled slots of `a`, oldest first, as two slices (from the oldest slot to the end,
        then from the start): `_in_order`'s order without a gather, which a decode step, feeding
        one token per layer, would pay for every layer."""
        held = min(self.written, self.capacity)
        oldest = self.written % self.capacity if self.written > self.capacity > 0 else 0
        return a[oldest:held], a[:oldest]

    def _in_order(self) -> np.ndarray:
        """The filled slots, oldest first: (held,)."""
        held = min(self.written, self.capacity)
        oldest = self.written % self.capacity if self.written > self.capacity > 0 else 0  # the slot written next
        return (oldest + np.arange(held)) % self.capacity

    def rollback(self, n: int) -> None:
        """Forget the last n tokens written, all of them from the last `update`: put back what its
        slots held, then write again the tokens that stay."""
        if self.undo is None or n > len(self.undo[0]):
            last = 0 if self.undo is None else len(self.undo[0])
            raise ValueError(f"rollback: {n} tokens asked, only the last update's {last} can be taken back")
        k, v, positions, slots, before, written = self.undo
        self.keys[slots], self.values[slots], self.positions[slots] = before
        self.written = written
        self.update(k[: len(k) - n], v[: len(k) - n], positions[: len(k) - n])

    def held(self):
        """What the ring holds now, oldest first: keys, values (length, kv_heads, head_dim), positions."""
        slots = self._in_order()
        return self.keys[slots], self.values[slots], self.positions[slots]

    @property
    def length(self) -> int:
        """Positions held right now."""
        return min(self.written, self.capacity)

    def save(self):
        return self.keys.copy(), self.values.copy(), self.positions.copy(), self.written

    def restore(self, saved) -> None:
        keys, values, positions, self.written = saved
        self.keys[:], self.values[:], self.positions[:] = keys, values, positions
        self.undo = None

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.positions.nbytes


class GlobalKV:
    """Every key/value of one global layer, in a buffer that doubles when full (amortised O(1)
    appends instead of copying the whole past at every step)."""

    def __init__(self, kv_heads: int, head_dim: int, dtype=np.float32):
        self.keys = _empty(0, kv_heads, head_dim, dtype)  # (capacity, kv_heads, head_dim); rows [:length] used
        self.values = _empty(0, kv_heads, head_dim, dtype)
        self.positions = np.zeros(0, np.int64)
        self.length = 0

    def update(self, k: np.ndarray, v: np.ndarray, positions: np.ndarray):
        end = self.length + len(k)
        if end > len(self.keys):
            self._grow(max(end, 2 * len(self.keys)))
        self.keys[self.length : end], self.values[self.length : end] = k, v
        self.positions[self.length : end] = positions
        self.length = end
        # views: later appends write past `end`, and growing copies, so these stay valid
        return self.keys[:end], self.values[:end], self.positions[:end]

    def save(self) -> int:
        return self.length

    def restore(self, length: int) -> None:
        self.length = length  # forget the tail; later appends overwrite it

    def rollback(self, n: int) -> None:
        """Forget the last n positions (later appends overwrite them)."""
        self.length -= n

    def held(self):
        return self.keys[: self.length], self.values[: self.length], self.positions[: self.length]

    def _grow(self, capacity: int) -> None:
        def grown(a):
            out = np.zeros((capacity, *a.shape[1:]), a.dtype)
            out[: self.length] = a[: self.length]
            return out

        self.keys, self.values, self.positions = grown(self.keys), grown(self.values), grown(self.positions)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.positions.nbytes


@dataclass
class KVCache:
    """Per-layer caches of one sequence, plus how many positions it has consumed.

    layers[i]: SlidingKV, GlobalKV, or None for a KV-shared layer (it reads its producer's)."""

    layers: list
    length: int = 0  # the next token's position

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.layers if c is not None)

    def save(self) -> tuple:
        """A state to come back to later. A ring buffer cannot be rewound (what it overwrote is
        gone), so its contents are copied: window - 1 positions per sliding layer, a constant.
        A global cache just remembers its length."""
        return self.length, [c.save() if c is not None else None for c in self.layers]

    def restore(self, saved: tuple) -> None:
        """Go back to a state `save` returned (of this same cache, at a point it has passed)."""
        self.length, states = saved
        for c, state in zip(self.layers, states):
            if c is not None:
                c.restore(state)

    def rollback(self, n: int) -> None:
        """Forget the last n positions fed, all from the last `extend` (drafts the target rejected):
        afterwards the cache is what it would be had they never been fed."""
        if not 0 <= n <= self.length:
            raise ValueError(f"rollback: expected 0..{self.length} positions, found {n}")
        if n:
            for c in self.layers:
                if c is not None:
                    c.rollback(n)
            self.length -= n


def storage_dtype(dtype) -> np.dtype:
    """How keys and values are stored: float32 or float16, as a NumPy dtype or by name ("float16";
    names are read as names, not as NumPy's codes, where "f16" would mean float128). No bfloat16:
    Gemma 4's keys are RMS-normed and its values too (scale-free), so float16's range holds them,
    and in the same two bytes its 10-bit mantissa keeps 8 times finer steps than bfloat16's 7."""
    names = {np.dtype(t).name: np.dtype(t) for t in STORAGE}
    found = names.get(dtype) if isinstance(dtype, str) else np.dtype(dtype) if np.dtype(dtype) in STORAGE else None
    if found is None:
        shown = repr(dtype) if isinstance(dtype, str) else np.dtype(dtype).name
        raise ConfigError(f"KV cache dtype: expected one of {list(names)}, found {shown}")
    return found


def new_cache(cfg: TextConfig, dtype=np.float32, lookback: int = 0) -> KVCache:
    """An empty cache for a model, keys and values stored as `dtype` (float32, or float16: half
    the memory). Only causal models decode token by token: with bidirectional attention every
    token would also depend on the ones after it. `lookback`: positions the sliding rings keep
    beyond the window's own, for a drafter that reads further back (speculative decoding)."""
    dtype = storage_dtype(dtype)
    if not cfg.is_causal:
        raise ConfigError(
            f"use_bidirectional_attention: expected a causal model (null or 'vision') to generate with, "
            f"found {cfg.use_bidirectional_attention!r}"
        )
    layers = []
    for spec in cfg.layers:
        if spec.reuses_kv:
            layers.append(None)
        elif spec.is_sliding:
            layers.append(SlidingKV(cfg.attention_window, spec.num_kv_heads, spec.head_dim, dtype, lookback))
        else:
            layers.append(GlobalKV(spec.num_kv_heads, spec.head_dim, dtype))
    return KVCache(layers)
