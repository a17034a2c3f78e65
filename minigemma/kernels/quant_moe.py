"""Expert dispatch on GGUF blocks: the twin of `moe.experts` when the experts are
`QuantExperts` (26B-A4B: 128 experts a layer, 8 chosen per token).

The experts of a layer are one 3-D tensor per projection, expert after expert, all of it in the
mapped file; a token reads the blocks of its k experts only, so the bytes per token are k/128 of
the experts, whatever their total size on disk.

One token (decoding): one jitted call walks the token's experts; for each, the gate and up rows
are dotted with x in place (`quant_dots.row_dot`), the activation fused in, then the down rows
with the hidden vector, parallel over rows, as `kernels/moe.py` does with float32 experts.
Many tokens (prefill): the (token, slot) pairs grouped by expert with the same counting sort,
then each active expert's two products through `quant.linear` (GEMV or dequantize-into-BLAS).
"""

from __future__ import annotations

import numpy as np

from ..weights.quants import TYPE_IDS
from ..weights.quants_matrix import QuantExperts
from .moe import ACTIVATION_CODES, _activate, group_by_expert
from .moe import experts as float_experts
from .quant import ROWS_PER_TASK, STAMP, linear, x_sums
from .quant_blocks import F16_TABLE
from .quant_dots import ACC_LANES, row_dot
from .quant_simd import LANES
from .threads import pick, serial_and_parallel


def _one_token(loop, stamp=STAMP):
    def one_token(gate_up_type, down_type, x, xs, top_k_index, top_k_weights, gate_up, down, act, f16, out):
        """x (hidden,) through its k experts: out (hidden,) += sum_s weight_s * expert_s(x)."""
        assert stamp  # binds the source stamp into the cache key (`quant.source_stamp`)
        inter = gate_up.shape[1] // 2
        hidden = np.empty(inter, np.float32)
        hidden_sums = np.empty(inter // LANES, np.float32)
        for s in range(top_k_index.shape[0]):
            e = top_k_index[s]
            for task in loop((inter + ROWS_PER_TASK - 1) // ROWS_PER_TASK):  # gate row r, up row r
                acc = np.empty(ACC_LANES, np.float32)
                for r in range(task * ROWS_PER_TASK, min(inter, (task + 1) * ROWS_PER_TASK)):
                    g = row_dot(gate_up_type, gate_up[e, r], x, xs, acc, f16)
                    u = row_dot(gate_up_type, gate_up[e, inter + r], x, xs, acc, f16)
                    hidden[r] = _activate(g, act) * u
            for i in range(inter // LANES):
                hidden_sums[i] = hidden[LANES * i : LANES * (i + 1)].sum()
            rows = out.shape[0]
            for task in loop((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
                acc = np.empty(ACC_LANES, np.float32)
                for o in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
                    out[o] += top_k_weights[s] * row_dot(down_type, down[e, o], hidden, hidden_sums, acc, f16)

    return one_token


ONE_TOKEN = serial_and_parallel(_one_token)


def as_quant_experts(stacked) -> QuantExperts:
    """Experts as GGUF blocks; a float32 array (experts, rows, cols) as the F32 "blocks" it is."""
    if isinstance(stacked, QuantExperts):
        return stacked
    values = np.ascontiguousarray(stacked, dtype=np.float32)
    return QuantExperts(values.view(np.uint8).reshape(*values.shape[:2], -1), TYPE_IDS["F32"], values.shape[2])


def experts(x: np.ndarray, top_k_index: np.ndarray, top_k_weights: np.ndarray, w, act) -> np.ndarray:
    """Same contract as `moe.experts`. Float32 experts go to `kernels/moe.py`; GGUF experts
    (`QuantExperts`, either projection; the other may be a float32 array) are read here."""
    if not isinstance(w.gate_up_proj, QuantExperts) and not isinstance(w.down_proj, QuantExperts):
        return float_experts(x, top_k_index, top_k_weights, w, act)
    gate_up, down = as_quant_experts(w.gate_up_proj), as_quant_experts(w.down_proj)
    x = np.ascontiguousarray(x, dtype=np.float32)
    top_k_index = np.ascontiguousarray(top_k_index, dtype=np.int64)
    top_k_weights = np.ascontiguousarray(top_k_weights, dtype=np.float32)
    out = np.zeros_like(x)
    if x.shape[0] == 1 and act in ACTIVATION_CODES:
        work = top_k_index.size * gate_up.shape[1] * gate_up.shape[2] * 3 // 2  # gate, up and down of k experts
        kernel = pick(ONE_TOKEN, work)
        kernel(gate_up.type_id, down.type_id, x[0], x_sums(x)[0], top_k_index[0], top_k_weights[0], gate_up.raw, down.raw, ACTIVATION_CODES[act], F16_TABLE, out[0])
        return out
    k = top_k_index.shape[1]
    pairs, starts = group_by_expert(top_k_index, gate_up.shape[0])
    for e in np.flatnonzero(np.diff(starts)):  # active experts only: the others' blocks stay on disk
        chosen = pairs[starts[e] : starts[e + 1]]
        token = chosen // k  # (n,) tokens routed to e; a token picks an expert at most once
        gate, up = np.split(linear(x[token], gate_up.raw[e], gate_up.type_id, gate_up.cols), 2, axis=-1)  # (n, inter)
        y = linear(act(gate) * up, down.raw[e], down.type_id, down.cols)  # (n, hidden)
        out[token] += y * top_k_weights.ravel()[chosen, None]
    return out
