"""The Numba kernels on GGUF blocks (kernels/quant*.py) against their NumPy twins, on drawn
shapes and every type: the fused GEMV (n = 1 and a few rows, serial and parallel) and the prefill
path (dequantize a block of rows, BLAS) equal `dequantize_linear` to 1e-5 of the output's scale;
the kernels' dequantization equals `quants.dequantize` bit for bit; quantized MoE experts equal
`moe.experts` run through `QuantMatrix` for one token and for many, and never read an expert
that no token chose. Blocks come from tests/test_quants.py's byte-by-byte builder."""

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from minigemma.kernels import NUMPY, backend
from minigemma.kernels import quant, quant_moe
from minigemma.kernels.linear import GEMV_MAX_ROWS
from minigemma.text.moe import ExpertWeights, experts
from minigemma.text.ops import ACTIVATIONS
from minigemma.weights.quants import GGML_TYPES, TYPE_IDS, dequantize
from minigemma.weights.quants_matrix import QuantExperts, QuantMatrix, dequantize_linear
from test_quants import random_blocks as all_blocks
from test_quants import same_bits

TYPES = sorted(TYPE_IDS)
# scales between 1/32 and 2: every block of a row weighs in its dot product, so that an error in
# any one of them shows above the tolerance (with all finite float16 scales, one huge block would
# hide the rest); the dequantizers' bits are tested on all of them in test_quants.py
SCALE_EXPONENTS = (10, 16)


def random_blocks(name, rows, n_blocks, rng):
    return all_blocks(name, rows, n_blocks, rng, SCALE_EXPONENTS)


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    """1e-5, relative to the output's scale (a dot product's rounding grows with its largest terms)."""
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def drawn_matrix(name, rows, n_blocks, seed):
    rng = np.random.default_rng(seed)
    t = GGML_TYPES[TYPE_IDS[name]]
    n_blocks = n_blocks * (32 if t.block_elems == 1 else 1)  # floats: rows of 32 values and more
    return random_blocks(name, rows, n_blocks, rng), n_blocks * t.block_elems, rng


@given(
    name=st.sampled_from(TYPES),
    rows=st.sampled_from([1, 5, quant.ROWS_PER_TASK + 3, 70]),
    n_blocks=st.integers(1, 4),
    n=st.sampled_from([1, 1, 2, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 1, 20]),
    seed=st.integers(0, 2**32 - 1),
)
def test_quant_linear_matches_twin(name, rows, n_blocks, n, seed):
    raw, cols, rng = drawn_matrix(name, rows, n_blocks, seed)
    note(f"type={name} rows={rows} cols={cols} n={n}")
    x = rng.standard_normal((n, cols), dtype=np.float32)
    assert_close(quant.linear(x, raw, TYPE_IDS[name], cols), dequantize_linear(x, raw, TYPE_IDS[name], cols))


@pytest.mark.parametrize("name", TYPES)
def test_gemv_serial_and_parallel_match_twin(name):
    """Each type, both compiled loops, an odd row count, a few x rows; and F16 rows whose length
    is no multiple of 16 (the tail the SIMD steps leave)."""
    raw, cols, rng = drawn_matrix(name, 2 * quant.ROWS_PER_TASK + 1, 2, TYPE_IDS[name])
    x = rng.standard_normal((3, cols), dtype=np.float32)
    expected = dequantize_linear(x, raw, TYPE_IDS[name], cols)
    for kernel in quant.GEMV:
        out = np.empty_like(expected)
        kernel(TYPE_IDS[name], x, raw, out)
        assert_close(out, expected)
    if GGML_TYPES[TYPE_IDS[name]].block_elems == 1:
        short = raw[:, : 37 * GGML_TYPES[TYPE_IDS[name]].block_bytes]
        assert_close(quant.gemv(x[:, :37], short, TYPE_IDS[name]), dequantize_linear(x[:, :37], short, TYPE_IDS[name], 37))


@pytest.mark.parametrize("name", TYPES)
def test_kernel_dequantize_is_the_twin_bit_for_bit(name):
    raw, cols, _ = drawn_matrix(name, 9, 3, TYPE_IDS[name] + 100)
    expected = dequantize(raw, TYPE_IDS[name], cols)
    assert same_bits(quant.dequantize(raw, TYPE_IDS[name], cols), expected)
    if name not in ("F32", "BF16"):  # those two are plain NumPy views, no kernel
        for kernel in quant.DEQUANTIZE:
            out = np.empty_like(expected)
            kernel(TYPE_IDS[name], *quant.decode_run(TYPE_IDS[name]), raw, out)
            assert same_bits(out, expected)


def test_any_leading_shape_of_x():
    """x (batch, seq, cols) and (cols,) as well as (n, cols), in both products."""
    raw, cols, rng = drawn_matrix("Q5_K", 3, 1, 6)
    for shape in [(2, 5, cols), (cols,), (1, 1, cols)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        twin = dequantize_linear(x, raw, TYPE_IDS["Q5_K"], cols)
        assert twin.shape == (*shape[:-1], 3)
        assert_close(quant.linear(x, raw, TYPE_IDS["Q5_K"], cols), twin)


def test_read_only_mapped_blocks():
    """Blocks as the model holds them: a read-only view of a buffer (the mapped file)."""
    raw, cols, rng = drawn_matrix("Q4_K", 6, 2, 7)
    mapped = np.frombuffer(raw.tobytes(), np.uint8).reshape(raw.shape)
    assert not mapped.flags.writeable
    x = rng.standard_normal((1, cols), dtype=np.float32)
    assert_close(quant.linear(x, mapped, TYPE_IDS["Q4_K"], cols), dequantize_linear(x, raw, TYPE_IDS["Q4_K"], cols))


def quant_experts(name, n_experts, rows, cols, rng) -> QuantExperts:
    raw = random_blocks(name, n_experts * rows, cols // GGML_TYPES[TYPE_IDS[name]].block_elems, rng)
    return QuantExperts(raw.reshape(n_experts, rows, -1), TYPE_IDS[name], cols)


@given(
    gate_up=st.sampled_from(TYPES),
    down=st.sampled_from(["Q8_0", "Q5_0", "Q4_K", "Q6_K", "F16", "F32"]),
    tokens=st.sampled_from([1, 1, 3, 12]),
    k=st.integers(1, 3),
    act=st.sampled_from(sorted(ACTIVATIONS)),
    seed=st.integers(0, 2**32 - 1),
)
def test_quant_moe_matches_twin(gate_up, down, tokens, k, act, seed):
    """GGUF experts (gate_up and down of different types, as llama-quantize mixes them) through
    the kernel and through `moe.experts`, whose products are `QuantMatrix.apply` (the twin)."""
    note(f"gate_up={gate_up} down={down} tokens={tokens} k={k} act={act}")
    rng = np.random.default_rng(seed)
    n_experts, hidden, inter = 5, 256, 256
    w = ExpertWeights(quant_experts(gate_up, n_experts, 2 * inter, hidden, rng), quant_experts(down, n_experts, hidden, inter, rng))
    x = rng.standard_normal((tokens, hidden), dtype=np.float32) * np.float32(0.1)  # activations in range
    index = np.stack([rng.choice(n_experts, k, replace=False) for _ in range(tokens)])
    weights = rng.random((tokens, k), dtype=np.float32)
    with np.errstate(over="ignore"):  # silu's exp(-x) of a large negative gate: inf, and the value 0
        assert_close(quant_moe.experts(x, index, weights, w, ACTIVATIONS[act]), experts(x, index, weights, w, ACTIVATIONS[act]))


def test_quant_moe_reads_only_the_chosen_experts():
    """Poison every expert no token chose with NaN scales: the answer is still the twin's on the
    clean weights, for one token (the fused kernel) and for several (grouped by expert)."""
    rng = np.random.default_rng(3)
    n_experts, hidden, inter = 6, 64, 64
    clean = ExpertWeights(quant_experts("Q4_0", n_experts, 2 * inter, hidden, rng), quant_experts("Q8_0", n_experts, hidden, inter, rng))
    x = rng.standard_normal((3, hidden), dtype=np.float32)
    index, weights = np.array([[1, 4], [4, 1], [1, 4]]), rng.random((3, 2), dtype=np.float32)
    poisoned = []
    for stacked in (clean.gate_up_proj, clean.down_proj):
        raw = stacked.raw.copy()
        blocks = raw.reshape(n_experts, raw.shape[1], -1, GGML_TYPES[stacked.type_id].block_bytes)
        blocks[[0, 2, 3, 5], ..., 0:2] = np.array([0x00, 0x7E], np.uint8)  # float16 NaN scales
        poisoned.append(QuantExperts(raw, stacked.type_id, stacked.cols))
    w = ExpertWeights(*poisoned)
    for t in (slice(0, 1), slice(0, 3)):
        got = quant_moe.experts(x[t], index[t], weights[t], w, ACTIVATIONS["gelu_pytorch_tanh"])
        assert np.isfinite(got).all()
        assert_close(got, experts(x[t], index[t], weights[t], clean, ACTIVATIONS["gelu_pytorch_tanh"]))


def test_float_experts_still_go_to_the_float_kernel():
    rng = np.random.default_rng(4)
    w = ExpertWeights(rng.standard_normal((3, 16, 8), dtype=np.float32), rng.standard_normal((3, 8, 8), dtype=np.float32))
    x, index, weights = rng.standard_normal((2, 8), dtype=np.float32), np.array([[0, 2], [1, 0]]), np.ones((2, 2), np.float32)
    act = ACTIVATIONS["silu"]
    assert_close(quant_moe.experts(x, index, weights, w, act), experts(x, index, weights, w, act))


def test_backends_multiply_quant_matrices():
    """The switch: the NumPy backend's `quant_linear` is the twin, the kernels' the fused GEMV."""
    assert NUMPY.quant_linear is dequantize_linear and backend(True).quant_linear is quant.linear
    raw, cols, rng = drawn_matrix("Q6_K", 4, 1, 5)
    x = rng.standard_normal((2, cols), dtype=np.float32)
    twin = QuantMatrix(raw, TYPE_IDS["Q6_K"], cols, NUMPY.quant_linear)
    fused = QuantMatrix(raw, TYPE_IDS["Q6_K"], cols, backend(True).quant_linear)
    assert_close(fused.apply(x), twin.apply(x))
