"""The NumPy dequantizers (weights/quants*.py) against the `gguf` package's, bit for bit.

Blocks are built byte by byte from each format's definition: every float16 field (scales, mins)
a random *finite* float16 bit pattern, every other byte (packed values, high bits, 6-bit scales)
random. The 32-value formats are also fed through `gguf.quants.quantize` of random matrices,
the way a converter writes them. Then `QuantMatrix` (rows for embedding lookups, the product
through the twin) and the named errors for types and shapes minigemma does not read."""

import gguf
import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from minigemma import CheckpointError
from minigemma.weights.quants import GGML_TYPES, TYPE_IDS, dequantize, ggml_type, row_bytes
from minigemma.weights.quants_matrix import BLOCK_ROWS, QuantExperts, QuantMatrix, dequantize_linear

# where each format keeps its float16 fields (byte offsets inside a block)
HALF_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
               "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
QUANTIZABLE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]  # what gguf.quants.quantize writes


def finite_halves(rng, shape, exponents=(0, 31)) -> np.ndarray:
    """Random float16 bit patterns with a biased exponent in [lo, hi) (31 is inf / NaN; 15 is 2^0),
    as (..., 2) bytes."""
    bits = (rng.integers(0, 2, shape) << 15) | (rng.integers(*exponents, shape) << 10) | rng.integers(0, 1024, shape)
    return bits.astype("<u2").view(np.uint8).reshape(*shape, 2)


def random_blocks(name: str, rows: int, n_blocks: int, rng, exponents=(0, 31)) -> np.ndarray:
    """(rows, n_blocks * block_bytes) bytes of valid blocks of type `name`, built byte by byte;
    the float16 fields' exponents drawn from `exponents` (all finite ones by default)."""
    t = GGML_TYPES[TYPE_IDS[name]]
    blocks = rng.integers(0, 256, (rows, n_blocks, t.block_bytes), dtype=np.uint8)
    if name in ("F32", "F16", "BF16"):  # plain floats: finite random values of the type
        values = rng.standard_normal((rows, n_blocks * t.block_elems)).astype(np.float32) * 10
        stored = {"F32": values, "F16": values.astype("<f2"), "BF16": (values.view(np.uint32) >> 16).astype("<u2")}
        return stored[name].view(np.uint8).reshape(rows, -1)
    for o in HALF_FIELDS[name]:
        blocks[..., o : o + 2] = finite_halves(rng, (rows, n_blocks), exponents)
    return blocks.reshape(rows, -1)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@given(
    name=st.sampled_from(sorted(TYPE_IDS)),
    rows=st.integers(1, 3),
    n_blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_dequantizer_equals_gguf_bit_for_bit_on_drawn_blocks(name, rows, n_blocks, seed):
    note(f"type={name} rows={rows} blocks={n_blocks}")
    raw = random_blocks(name, rows, n_blocks, np.random.default_rng(seed))
    cols = n_blocks * GGML_TYPES[TYPE_IDS[name]].block_elems
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(rows, cols)
    assert same_bits(dequantize(raw, TYPE_IDS[name], cols), expected)


@pytest.mark.parametrize("name", sorted(TYPE_IDS))
def test_every_type_on_many_blocks(name):
    """Every supported type, one bigger draw each (so none is left to the luck of the draw)."""
    t = GGML_TYPES[TYPE_IDS[name]]
    n_blocks = 64 if t.block_elems > 1 else 512
    raw = random_blocks(name, 5, n_blocks, np.random.default_rng(TYPE_IDS[name]))
    cols = n_blocks * t.block_elems
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(5, cols)
    assert same_bits(dequantize(raw, TYPE_IDS[name], cols), expected)


@given(name=st.sampled_from(QUANTIZABLE + ["F16", "BF16"]), rows=st.integers(1, 4), n_blocks=st.integers(1, 4),
       scale=st.sampled_from([1e-3, 1.0, 30.0]), seed=st.integers(0, 2**32 - 1))
def test_quantized_by_gguf_then_dequantized_equals_gguf(name, rows, n_blocks, scale, seed):
    """Matrices as a converter writes them: gguf.quants.quantize of random values (with zeros,
    and a constant row, the edge cases of the scale search)."""
    note(f"type={name} rows={rows} blocks={n_blocks} scale={scale}")
    rng = np.random.default_rng(seed)
    cols = 32 * n_blocks
    w = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    w[0, :3] = 0.0
    if rows > 1:
        w[1] = scale
    raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType[name]).view(np.uint8).reshape(rows, -1)
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(rows, cols)
    got = dequantize(raw, TYPE_IDS[name], cols)
    assert same_bits(got, expected)
    step = np.abs(w).max(axis=1, keepdims=True) / (7 if name != "Q8_0" else 127)  # a quantization step, about
    assert np.all(np.abs(got - w) <= step + 1e-6)  # and it is a quantization of w, not just gguf's bits


def test_type_table_matches_gguf():
    for type_id, t in GGML_TYPES.items():
        q = gguf.GGMLQuantizationType(type_id)
        assert q.name == t.name and gguf.GGML_QUANT_SIZES[q] == (t.block_elems, t.block_bytes)


@pytest.mark.parametrize("type_id, name", [(10, "Q2_K"), (11, "Q3_K"), (23, "IQ4_XS"), (39, "MXFP4"), (99, "unknown")])
def test_unsupported_type_is_a_named_error(type_id, name):
    with pytest.raises(CheckpointError, match=rf"GGML type {type_id} \({name}\) is not supported.*Q4_K"):
        dequantize(np.zeros((1, 84), np.uint8), type_id, 256)
    with pytest.raises(CheckpointError, match=name):
        ggml_type(type_id)


def test_shapes_that_disagree_are_named_errors():
    with pytest.raises(CheckpointError, match=r"Q4_0 rows are whole blocks of 32 values, found a row of 40"):
        row_bytes(TYPE_IDS["Q4_0"], 40)
    with pytest.raises(CheckpointError, match=r"Q4_K with 256 columns: expected rows of 144 bytes, found shape \(2, 140\)"):
        dequantize(np.zeros((2, 140), np.uint8), TYPE_IDS["Q4_K"], 256)


def test_quant_matrix_rows_and_product():
    """Rows read one token at a time equal the whole matrix's; the twin's product (a block of rows
    at a time, across a block boundary) equals x @ W.T of the dequantized matrix."""
    rng = np.random.default_rng(0)
    raw = random_blocks("Q4_K", BLOCK_ROWS + 5, 2, rng)
    m = QuantMatrix(raw, TYPE_IDS["Q4_K"], 512)
    w = m.f32()
    assert m.shape == (BLOCK_ROWS + 5, 512) and m.type_name == "Q4_K"
    ids = np.array([[3, 0, BLOCK_ROWS + 4], [7, 7, 1]])
    np.testing.assert_array_equal(m[ids], w[ids])
    np.testing.assert_array_equal(m[5], w[5])
    x = rng.standard_normal((3, 512), dtype=np.float32)
    np.testing.assert_allclose(m.apply(x), x @ w.T, rtol=1e-5, atol=1e-5 * np.abs(x @ w.T).max())
    np.testing.assert_allclose(dequantize_linear(x, raw, TYPE_IDS["Q4_K"], 512), m.apply(x), rtol=0, atol=0)


def test_quant_experts_index_one_expert():
    rng = np.random.default_rng(1)
    raw = random_blocks("Q8_0", 3 * 4, 2, rng).reshape(3, 4, -1)  # 3 experts of (4, 64)
    experts = QuantExperts(raw, TYPE_IDS["Q8_0"], 64)
    assert experts.shape == (3, 4, 64) and len(experts) == 3
    np.testing.assert_array_equal(experts[2].f32(), experts.f32()[2])
    np.testing.assert_array_equal(experts[1].f32(), dequantize(raw[1], TYPE_IDS["Q8_0"], 64))
