"""Attention at BLAS speed: the twin of `attention.attend_positions`, FlashAttention's blocking
with a BLAS GEMM inside every tile.

The NumPy twin builds the whole (heads, q_len, k_len) score matrix and a (q_len, k_len) mask:
O(seq^2) memory (16k tokens: gigabytes). Here the queries go in blocks, the keys each block may
see in tiles, and no array is ever larger than one tile of scores (`SCORE_TILE`):

    for each query block, for each KV head:
        Q = the block's queries of the heads that share this KV head    (rows = queries x group, d)
        for each key tile:
            S = Q @ K_tile.T                                          BLAS GEMM, float32
            S = -inf where the mask (from positions) says no            only on the tiles it cuts
            m' = max(m, rowmax S);  P = exp(S - m')                    the online softmax, vectorised
            l = l * exp(m - m') + rowsum P
            acc = acc * exp(m - m') + P @ V_tile                       BLAS GEMM
        out = acc / l

* Accuracy: inside a tile everything is float32, as in the twin (BLAS dot products of length d,
  sums of one tile's probabilities); across tiles `l` and `acc` are float64, so a long context
  adds no float32 rounding per tile. Measured on 2k tokens, head dim 512: kernel and twin differ
  by 5e-6, each 1e-5 from a float64 evaluation (the float32 scores themselves set that floor).
  A query block whose keys fit one tile (most of them: sliding layers, short prompts) is the
  twin's computation in another order.
* GQA: the `group` query heads of one KV head are stacked as rows of one GEMM against that KV
  head's keys: K and V are never repeated, and the GEMM is `group` times taller.
* Masks come from positions (`q_pos`, `k_pos`), the rule of `attention.attention_mask`, so the
  same code serves prefill, chunked prefill and ring-buffer caches whose slots are not in
  position order. Tiles the mask leaves whole skip it; tiles it leaves empty are skipped.
* Sliding windows: with keys in position order (a prompt, a growing cache) a binary search gives
  the keys a query block may see, so a sliding layer costs O(seq x window), not O(seq^2); and a
  sliding layer's query block is at most a quarter window, so few scores are wasted.
* Image blocks (`blocks`, bidirectional attention inside an image): the tokens of one image see
  each other both ways; a query's reach extends to the end of its image, and the tiles that
  cross an image get the mask with that rule. Same fast path.
* A compact cache (float16 keys and values) is widened a tile at a time (and in registers by the
  decode kernel): the cache is never copied whole to float32.
* Decoding (a few queries, one KV head's group each): GEMMs a few rows tall run far below BLAS'
  peak, so those go to the split-key Numba kernel of `decode_attention.py`, chosen by shape.

Every choice here depends on the shapes (and positions) alone, never on the machine's load, so
the same call always computes the same bits.
"""

from __future__ import annotations

import numpy as np

from .decode_attention import decode_attend

QUERY_ROWS = 512  # query rows (queries x heads of one group) per GEMM: tall enough for BLAS' peak
SCORE_TILE = 1 << 19  # score elements per tile (2 MB of float32): rows x keys
SLIDING_SHARE = 4  # a sliding layer's query block is at most window / 4 queries: <= 20% scores wasted
MIN_QUERY_BLOCK = 16
DECODE_MAX_QUERIES = 4  # up to this many queries (a decode step, a short draft): the Numba kernel
STORED = (np.float32, np.float16)  # key/value dtypes taken as they are (a compact cache: float16)


def attend(q, k, v, q_pos, k_pos, window: int | None, causal: bool = True, blocks=None) -> np.ndarray:
    """Masked grouped-query attention from positions, scaling 1.0; equals `attention.attend_positions`.

    q: (q_len, heads, d); k, v: (k_len, kv_heads, d); q_pos (q_len,), k_pos (k_len,): absolute
    positions; window: sliding window or None; blocks: (q_blocks (q_len,), k_blocks (k_len,)),
    the image each token belongs to (-1: text) for bidirectional attention inside images, or
    None -> (q_len, heads, d) float32."""
    q = np.ascontiguousarray(q, dtype=np.float32)
    k, v = (np.ascontiguousarray(a, dtype=a.dtype if a.dtype in STORED else np.float32) for a in (k, v))
    q_pos, k_pos = np.asarray(q_pos, np.int64), np.asarray(k_pos, np.int64)
    if blocks is not None and not (np.asarray(blocks[0]) >= 0).any():
        blocks = None  # no query inside an image (text after one, decoding): the causal rule alone
    keys_sorted = len(k_pos) < 2 or bool(np.all(k_pos[1:] > k_pos[:-1]))
    reach = _reach(q_pos, k_pos, blocks) if causal else q_pos  # last key position each query may see
    if len(q_pos) <= DECODE_MAX_QUERIES and blocks is None:
        start, stop = _key_span(k_pos, keys_sorted, *_visible(q_pos.min(), q_pos.max(), window, causal))
        return decode_attend(q, k[start:stop], v[start:stop], q_pos, k_pos[start:stop], window, causal)

    q_len, heads, d = q.shape
    n_kv = k.shape[1]
    group = heads // n_kv
    block = max(1, QUERY_ROWS // group)
    if window is not None:
        block = min(block, max(MIN_QUERY_BLOCK, window // SLIDING_SHARE))
    out = np.empty_like(q)  # (q_len, heads, d)
    for i0 in range(0, q_len, block):
        i1 = min(q_len, i0 + block)
        qp = q_pos[i0:i1]
        start, stop = _key_span(k_pos, keys_sorted, *_visible(qp.min(), reach[i0:i1].max(), window, causal))
        q_blocks = None if blocks is None else blocks[0][i0:i1]
        tiles = _tiles(qp, k_pos, start, stop, (i1 - i0) * group, window, causal, q_blocks, blocks)
        for h in range(n_kv):
            heads_of_h = slice(h * group, (h + 1) * group)
            rows = q[i0:i1, heads_of_h].reshape(-1, d)  # (queries x group, d): query-major rows
            out[i0:i1, heads_of_h] = _attend_tiles(rows, k[:, h], v[:, h], tiles, group).reshape(i1 - i0, group, d)
    return out


def _reach(q_pos, k_pos, blocks):
    """The last key position each query may see when causal: itself, or the last key of its image."""
    if blocks is None:
        return q_pos
    q_blocks, k_blocks = (np.asarray(b, np.int64) for b in blocks)
    in_image = k_blocks >= 0
    if not in_image.any() or not (q_blocks >= 0).any():
        return q_pos
    last = np.full(max(k_blocks.max(), q_blocks.max()) + 1, -1, np.int64)  # last key position of each image
    np.maximum.at(last, k_blocks[in_image], k_pos[in_image])
    return np.where(q_blocks >= 0, np.maximum(q_pos, last[np.maximum(q_blocks, 0)]), q_pos)


def _visible(lo, hi, window, causal):
    """Key positions [first, last] some query between positions lo and hi (its reach) may see."""
    if causal:
        return (-np.inf if window is None else lo - window + 1), hi
    if window is None:
        return -np.inf, np.inf
    return lo - window, hi + window


def _key_span(k_pos, keys_sorted, first, last):
    """[start, stop) of the keys between positions first and last: exact for position-ordered
    keys, all of them otherwise (a ring buffer holds only a window's keys anyway)."""
    if not keys_sorted:
        return 0, len(k_pos)
    start = int(np.searchsorted(k_pos, first, "left")) if first != -np.inf else 0
    stop = int(np.searchsorted(k_pos, last, "right")) if last != np.inf else len(k_pos)
    return start, max(start, stop)


def _tiles(qp, k_pos, start, stop, rows, window, causal, q_blocks, blocks):
    """The key tiles of one query block: (j0, j1, mask (queries, keys) or None when all visible);
    equal sizes, each at most `SCORE_TILE` scores; tiles with nothing visible left out."""
    n_tiles = max(1, -(-(stop - start) * rows // SCORE_TILE))
    edges = np.linspace(start, stop, n_tiles + 1).astype(np.int64)
    tiles = []
    for j0, j1 in zip(edges[:-1], edges[1:]):
        kp = k_pos[j0:j1]
        if j1 <= j0:
            continue
        if _all_visible(qp, kp, window, causal):
            tiles.append((j0, j1, None))
            continue
        mask = _mask(qp, kp, window, causal, q_blocks, None if blocks is None else blocks[1][j0:j1])
        if mask.any():
            tiles.append((j0, j1, mask))
    return tiles


def _all_visible(qp, kp, window, causal) -> bool:
    """Whether every query of the block sees every key of the tile (then no mask is needed)."""
    q_lo, q_hi, k_lo, k_hi = qp.min(), qp.max(), kp.min(), kp.max()
    if causal:
        return k_hi <= q_lo and (window is None or q_hi - k_lo < window)
    return window is None or (q_hi - k_lo <= window and k_hi - q_lo <= window)


def _mask(qp, kp, window, causal, q_blocks, k_blocks):
    """`attention.attention_mask` of one tile, the image rule included: (queries, keys) bool."""
    dist = qp[:, None] - kp[None, :]
    if not causal:
        return np.ones(dist.shape, bool) if window is None else np.abs(dist) <= window
    visible = dist >= 0
    if q_blocks is not None:
        visible |= (q_blocks[:, None] == k_blocks[None, :]) & (q_blocks[:, None] >= 0)
    return visible & (dist < window) if window is not None else visible


def _probabilities(rows, k, mask, group):
    """One tile's scores, masked, as exp(score - rowmax): (P (rows, keys), rowmax, rowsum)."""
    s = rows @ k.T.astype(np.float32, copy=False)  # (rows, keys); scaling 1.0; float16 keys widened here
    if mask is not None:  # rows are query-major: each query's `group` rows share its mask row
        np.copyto(s.reshape(len(mask), group, -1), -np.inf, where=~mask[:, None, :])
    m = s.max(axis=1)  # (rows,)
    np.subtract(s, np.where(m == -np.inf, np.float32(0), m)[:, None], out=s)  # a row with nothing visible stays -inf
    np.exp(s, out=s)
    return s, m, s.sum(axis=1)


def _attend_tiles(rows, k, v, tiles, group):
    """Attention of query rows (rows, d) over the key tiles of k, v (k_len, d) -> (rows, d)."""
    if len(tiles) == 1:  # the whole softmax in one tile: float32 throughout, like the twin
        j0, j1, mask = tiles[0]
        p, _, l = _probabilities(rows, k[j0:j1], mask, group)
        out = p @ v[j0:j1].astype(np.float32, copy=False)
        out /= l[:, None]  # 0/0 = NaN where nothing was visible, as in the twin
        return out
    m = np.full(len(rows), -np.inf, np.float32)  # running max score per row
    l = np.zeros(len(rows), np.float64)  # running sum of exp(score - m)
    acc = np.zeros(rows.shape, np.float64)  # running sum of exp(score - m) * value
    for j0, j1, mask in tiles:
        p, tile_max, tile_sum = _probabilities(rows, k[j0:j1], mask, group)
        m_new = np.maximum(m, tile_max)
        finite = np.where(m_new == -np.inf, 0, m_new)  # -inf - finite = -inf, whose exp is 0: no NaN
        old = np.exp((m - finite).astype(np.float64))  # rescales the past terms to the new max
        new = np.exp((tile_max - finite).astype(np.float64))  # and this tile's
        l = l * old + tile_sum * new
        acc *= old[:, None]
        acc += (p @ v[j0:j1].astype(np.float32, copy=False)) * new[:, None]
        m = m_new
    return (acc / l[:, None]).astype(np.float32)
