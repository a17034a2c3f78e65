"""Expert dispatch, fast: the twin of `moe.experts`.

Many tokens (prefill): group the (token, slot) pairs by expert with one counting sort, O(tokens*k)
(the NumPy version scans all pairs once per expert), then run each active expert once as a dense
GEMM on its gathered tokens and scatter-add the weighted results back. The GEMMs go to BLAS via
NumPy: on the `tiny` benchmark config's 512 tokens, BLAS on one thread took 9 ms where a jitted
loop took 21 (benchmarks/README.md), so only the bookkeeping is jitted.

One token (decoding): a single jitted call walks the token's top-k experts only, as two GEMVs
each (gate+up, then down) parallel over output rows, with the activation fused in. At decode
time the cost is Python overhead and weight bytes, not FLOPs, and this path has neither to spare.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..text.ops import GELU_TANH_CUBIC, SQRT_2_OVER_PI, gelu_tanh, relu, silu
from .threads import pick, serial_and_parallel

GELU_TANH, SILU, RELU = 0, 1, 2
ACTIVATION_CODES = {gelu_tanh: GELU_TANH, silu: SILU, relu: RELU}


@njit(cache=True, inline="always")
def _activate(x, code):
    if code == GELU_TANH:
        return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)))
    if code == SILU:
        return x / (np.float32(1.0) + np.exp(-x))
    return max(x, np.float32(0.0))


@njit(cache=True)
def group_by_expert(top_k_index, n_experts):
    """Counting sort of the (token, slot) pairs by expert: `pairs[starts[e]:starts[e+1]]` are the
    flat indices `token * k + slot` of the pairs routed to expert e, in token order."""
    flat = top_k_index.ravel()
    starts = np.zeros(n_experts + 1, np.int64)
    for e in flat:
        starts[e + 1] += 1
    for e in range(n_experts):
        starts[e + 1] += starts[e]
    fill = starts[:-1].copy()
    pairs = np.empty(flat.shape[0], np.int64)
    for p in range(flat.shape[0]):
        pairs[fill[flat[p]]] = p
        fill[flat[p]] += 1
    return pairs, starts


def _one_token(loop):
    def one_token(x, top_k_index, top_k_weights, gate_up, down, act, out):
        """x (hidden,) through its k experts: out (hidden,) += sum_s weight_s * expert_s(x)."""
        inter = down.shape[2]
        hidden = np.empty(inter, np.float32)
        for s in range(top_k_index.shape[0]):
            e = top_k_index[s]
            for r in loop(inter):  # gate row r and up row r, fused with the activation
                g = np.float32(0.0)
                u = np.float32(0.0)
                for c in range(x.shape[0]):
                    g += gate_up[e, r, c] * x[c]
                    u += gate_up[e, inter + r, c] * x[c]
                hidden[r] = _activate(g, act) * u
            for o in loop(out.shape[0]):
                y = np.float32(0.0)
                for c in range(inter):
                    y += down[e, o, c] * hidden[c]
                out[o] += top_k_weights[s] * y

    return one_token


ONE_TOKEN = serial_and_parallel(_one_token)


def experts(x: np.ndarray, top_k_index: np.ndarray, top_k_weights: np.ndarray, w, act) -> np.ndarray:
    """Same contract as `moe.experts`: x (tokens, hidden) -> (tokens, hidden)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    top_k_index = np.ascontiguousarray(top_k_index, dtype=np.int64)
    top_k_weights = np.ascontiguousarray(top_k_weights, dtype=np.float32)
    out = np.zeros_like(x)
    if x.shape[0] == 1 and act in ACTIVATION_CODES:
        work = top_k_index.size * w.gate_up_proj[0].size * 3 // 2  # gate, up and down of k experts
        kernel = pick(ONE_TOKEN, work)
        kernel(x[0], top_k_index[0], top_k_weights[0], w.gate_up_proj, w.down_proj, ACTIVATION_CODES[act], out[0])
        return out
    k = top_k_index.shape[1]
    pairs, starts = group_by_expert(top_k_index, w.gate_up_proj.shape[0])
    for e in np.flatnonzero(np.diff(starts)):  # active experts only
        chosen = pairs[starts[e] : starts[e + 1]]
        token = chosen // k  # (n,) tokens routed to e; a token picks an expert at most once
        gate, up = np.split(x[token] @ w.gate_up_proj[e].T, 2, axis=-1)  # (n, inter) each
        y = (act(gate) * up) @ w.down_proj[e].T  # (n, hidden)
        out[token] += y * top_k_weights.ravel()[chosen, None]
    return out
