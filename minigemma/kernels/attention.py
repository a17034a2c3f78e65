"""Numba kernel for attention: the fused twin of `attention.attend` + `attention.attention_mask`.

The NumPy version builds the whole (heads, q_len, k_len) score matrix and a (q_len, k_len) mask,
which is O(seq^2) in time *and* memory: 16k tokens would need gigabytes of scores. This kernel
never builds either. For each block of queries of one head it walks the visible keys in blocks,
and keeps a running ("online") softmax, FlashAttention style:

    m = running max of the scores seen so far, l = running sum of exp(score - m),
    acc = running sum of exp(score - m) * value;
    a new key block with max m' > m rescales l and acc by exp(m - m') and adds its own terms;
    at the end, out = acc / l.

* GQA: query head `h` indexes KV head `h // group` directly; K and V are never repeated.
* Masks come from positions (`q_pos`, `k_pos`), exactly the rule of `attention.attention_mask`,
  so the same kernel serves prefill (keys = the prompt, in order) and decoding (keys = a cache,
  possibly a ring buffer whose slots are not in position order).
* Sliding windows: when the keys are in position order, a binary search finds the few keys
  inside the window of a query block, so a sliding layer costs O(seq * window), not O(seq^2).
  Unordered (ring-buffer) keys are scanned whole, but a ring buffer holds only ~window keys.
* Parallel over (query block, head) tasks with `prange` (`threads.py`); float32 in and out (the
  running sums in float64); `cache=True`, so
  the compilation is paid once per machine and then read from `__pycache__`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..text.attention import attend_positions
from .threads import pick, serial_and_parallel

NO_WINDOW = 0  # window argument meaning "no sliding window" (real windows are >= 1)
QUERY_BLOCK = 16  # queries of one head that share a pass over their keys
KEY_BLOCK = 64  # keys scored before each online-softmax rescale


@njit(cache=True, inline="always")
def _visible(dist, window, causal):
    """`attention.attention_mask` for one (query, key) pair; dist = q_pos - k_pos."""
    if causal:
        return dist >= 0 and (window == NO_WINDOW or dist < window)
    return window == NO_WINDOW or abs(dist) <= window


@njit(cache=True)
def _key_range(q_lo, q_hi, k_pos, keys_sorted, window, causal):
    """[start, stop) of the keys that queries at positions q_lo..q_hi may see. Exact bounds
    only for position-ordered keys; otherwise all keys (the mask still checks each)."""
    n = k_pos.shape[0]
    if not keys_sorted:
        return 0, n
    first, last = -(2**62), 2**62  # visible key positions, before the window narrows them
    if causal:
        last = q_hi
        if window != NO_WINDOW:
            first = q_lo - window + 1
    elif window != NO_WINDOW:
        first, last = q_lo - window, q_hi + window
    return np.searchsorted(k_pos, first, side="left"), np.searchsorted(k_pos, last, side="right")


@njit(cache=True, inline="always")
def _scores(q, k, q_pos, k_pos, i, h, kv, j0, nk, window, causal, s):
    """Scores of query i, head h against keys j0 .. j0+nk into s (-inf where masked); their max."""
    block_max = np.float32(-np.inf)
    for jj in range(nk):
        j = j0 + jj
        s[jj] = -np.inf
        if _visible(q_pos[i] - k_pos[j], window, causal):
            dot = np.float32(0.0)
            for c in range(q.shape[2]):
                dot += q[i, h, c] * k[j, kv, c]
            s[jj] = dot  # scaling 1.0: the q/k norms already did the job
            block_max = max(block_max, dot)
    return block_max


@njit(cache=True, inline="always")
def _absorb(s, block_max, v, j0, nk, kv, m, l, acc):
    """Online softmax: fold one key block's scores s (max block_max) into one query's running
    max m[0], sum l[0] and weighted values acc (d,)."""
    m_new = max(m[0], block_max)
    rescale = np.exp(m[0] - m_new)  # the old terms were relative to the old max
    l[0] *= rescale
    for c in range(acc.shape[0]):
        acc[c] *= rescale
    m[0] = m_new
    for jj in range(nk):
        p = np.exp(s[jj] - m_new)
        if p > 0:
            l[0] += p
            for c in range(acc.shape[0]):
                acc[c] += p * v[j0 + jj, kv, c]


def _attend(loop):
    def attend(q, k, v, q_pos, k_pos, window, causal, out):
        q_len, n_heads, d = q.shape
        group = n_heads // k.shape[1]
        keys_sorted = True
        for j in range(1, k_pos.shape[0]):
            keys_sorted = keys_sorted and k_pos[j] > k_pos[j - 1]
        n_blocks = (q_len + QUERY_BLOCK - 1) // QUERY_BLOCK
        for task in loop(n_blocks * n_heads):  # one task: a block of queries of one head
            h = task % n_heads
            kv = h // group  # GQA: the KV head this query head reads
            i0 = (task // n_heads) * QUERY_BLOCK
            nq = min(QUERY_BLOCK, q_len - i0)
            q_lo, q_hi = q_pos[i0], q_pos[i0]
            for i in range(i0, i0 + nq):
                q_lo, q_hi = min(q_lo, q_pos[i]), max(q_hi, q_pos[i])
            start, stop = _key_range(q_lo, q_hi, k_pos, keys_sorted, window, causal)

            # running sums in float64: a long sum of float32 terms, in key order, drifts further
            # from the twin's blocked BLAS sums than a whole model's 1e-4 allows
            m = np.full((nq, 1), -np.inf, np.float32)  # running max score per query
            l = np.zeros((nq, 1), np.float64)  # running sum of exp(score - m)
            acc = np.zeros((nq, d), np.float64)  # running sum of exp(score - m) * value
            s = np.empty(KEY_BLOCK, np.float32)  # one query's scores against one key block
            for j0 in range(start, stop, KEY_BLOCK):  # the block's keys stay in cache across its queries
                nk = min(KEY_BLOCK, stop - j0)
                for qi in range(nq):
                    block_max = _scores(q, k, q_pos, k_pos, i0 + qi, h, kv, j0, nk, window, causal, s)
                    if block_max > -np.inf:  # else nothing here is visible to this query
                        _absorb(s, block_max, v, j0, nk, kv, m[qi], l[qi], acc[qi])
            for qi in range(nq):
                for c in range(d):
                    out[i0 + qi, h, c] = np.float32(acc[qi, c] / l[qi, 0])  # 0/0 = NaN if no key was visible, as in NumPy

    return attend


ATTEND = serial_and_parallel(_attend)


def attend(q, k, v, q_pos, k_pos, window: int | None, causal: bool = True, both_ways=None) -> np.ndarray:
    """Masked grouped-query attention from positions, scaling 1.0.

    q: (q_len, heads, d); k, v: (k_len, kv_heads, d); q_pos (q_len,), k_pos (k_len,): absolute
    positions; window: sliding window or None -> (q_len, heads, d) float32. Equals
    `attention.attend_positions(...)`. With `both_ways` (the tokens of one image seeing each other
    both ways, a (q_len, k_len) mask) it *is* that NumPy twin: a prompt's images are rare and short."""
    if both_ways is not None:
        return attend_positions(q, k, v, q_pos, k_pos, window, causal, both_ways)
    q, k, v = (np.ascontiguousarray(a, dtype=np.float32) for a in (q, k, v))
    out = np.empty_like(q)
    q_pos = np.ascontiguousarray(q_pos, dtype=np.int64)
    k_pos = np.ascontiguousarray(k_pos, dtype=np.int64)
    window = NO_WINDOW if window is None else int(window)
    keys_seen = k.shape[0] if window == NO_WINDOW else min(k.shape[0], window + QUERY_BLOCK)  # per query, about
    kernel = pick(ATTEND, q.shape[0] * q.shape[1] * keys_seen * q.shape[2])
    kernel(q, k, v, q_pos, k_pos, window, bool(causal), out)
    return out
