"""minigemma's own GGUF reader (`weights/gguf.py`) against the `gguf` package's `GGUFReader`, and
on broken files.

* drawn files (metadata of every value type, arrays of numbers, strings and arrays, tensors of
  several GGML types and shapes, a drawn alignment) written by `gguf.GGUFWriter` read the same:
  every key and value, every tensor's name, shape, type, offset and bytes;
* the GGML type table (block size, block bytes) is the package's;
* each malformation the issue lists is one `CheckpointError` naming the file and the tensor or key;
* mutated headers (hypothesis: bytes overwritten, counts and lengths made huge, files cut short)
  never crash the reader nor `minigemma.load`: a parse, or one of our errors.
"""

import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import minigemma
from gemma3_reference import reference_gemma3_model
from gguf_fixtures import write_gemma3_gguf
from minigemma.errors import CheckpointError, MinigemmaError
from minigemma.weights.gguf import GGML_TYPES, GGUFFile

VALUE_WRITERS = {  # GGUFWriter's method per value type, and values it can hold
    "add_uint8": st.integers(0, 255), "add_int8": st.integers(-128, 127), "add_uint16": st.integers(0, 2**16 - 1),
    "add_int16": st.integers(-(2**15), 2**15 - 1), "add_uint32": st.integers(0, 2**32 - 1),
    "add_int32": st.integers(-(2**31), 2**31 - 1), "add_uint64": st.integers(0, 2**64 - 1),
    "add_int64": st.integers(-(2**63), 2**63 - 1), "add_float32": st.floats(width=32, allow_nan=False),
    "add_float64": st.floats(allow_nan=False), "add_bool": st.booleans(), "add_string": st.text(max_size=20),
}
ARRAYS = st.one_of(
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6), st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=1, max_size=6), st.lists(st.text(max_size=8), min_size=1, max_size=6),
    st.lists(st.lists(st.integers(0, 100), min_size=1, max_size=3), min_size=1, max_size=3),
)
TENSOR_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q5_1]


@st.composite
def gguf_files(draw):
    """(path -> write the file) for drawn metadata and tensors."""
    kv = draw(st.lists(st.tuples(st.sampled_from(sorted(VALUE_WRITERS)), st.integers(0, 10**6)), max_size=8, unique_by=lambda x: x[1]))
    kv = [(method, f"test.key_{i}", draw(VALUE_WRITERS[method])) for method, i in kv]
    arrays = [(f"test.array_{i}", draw(ARRAYS)) for i in range(draw(st.integers(0, 3)))]
    tensors = []
    for i in range(draw(st.integers(0, 4))):
        qtype = draw(st.sampled_from(TENSOR_TYPES))
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        shape = (draw(st.integers(1, 3)), block * draw(st.integers(1, 2)))
        if draw(st.booleans()):
            shape = (draw(st.integers(1, 2)),) + shape
        values = np.random.default_rng(i).standard_normal(shape).astype(np.float32)
        tensors.append((f"t.{i}", qtype, values))
    alignment = draw(st.sampled_from([None, 8, 32, 64]))
    return kv, arrays, tensors, alignment


def write(path, kv=(), arrays=(), tensors=(), alignment=None, arch="test"):
    w = gguf.GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for method, key, value in kv:
        getattr(w, method)(key, value)
    for key, value in arrays:
        w.add_array(key, value)
    for name, qtype, values in tensors:
        if qtype == Q.F32:
            w.add_tensor(name, values)
        else:
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else [plain(v) for v in value] if isinstance(value, list) else value


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=gguf_files())
def test_reader_matches_the_gguf_package(tmp_path, drawn):
    path = write(tmp_path / "drawn.gguf", *drawn)
    ours, theirs = GGUFFile(path), gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    kv, arrays, _, _ = drawn
    fields.update({key: value for key, value in arrays if value and isinstance(value[0], list)})  # GGUFReader flattens these
    assert {k: plain(v) for k, v in ours.metadata.items()} == fields
    assert ours.version == theirs.fields["GGUF.version"].contents()
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        note(f"tensor {t.name}: {mine}")
        assert (mine.shape, mine.type.id, mine.start) == (tuple(reversed(t.shape.tolist())), t.tensor_type.value, t.data_offset)
        assert np.asarray(ours.raw(mine)).tobytes() == np.asarray(t.data).tobytes()


def test_ggml_type_table_matches_the_gguf_package():
    theirs = {t.value: (t.name, block, size) for t, (block, size) in gguf.GGML_QUANT_SIZES.items()}
    assert {i: (t.name, t.block, t.block_bytes) for i, t in GGML_TYPES.items()} == theirs


# ------------------------------------------------------------------------------------------ broken files


@pytest.fixture
def small(tmp_path):
    """A valid file: a few keys, an array, two tensors (F32 and Q8_0)."""
    values = np.arange(64, dtype=np.float32).reshape(2, 32)
    return write(tmp_path / "small.gguf", [("add_uint32", "test.count", 7)], [("test.list", ["a", "b"])],
                 [("first", Q.F32, values), ("second", Q.Q8_0, values)])


def header_end(path) -> int:
    """Byte where the tensor data starts."""
    return GGUFFile(path).data_start


def patched(path, offset: int, data: bytes, out=None):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    out = out or path.with_name("patched.gguf")
    out.write_bytes(bytes(raw))
    return out


def tensor_info_offset(path, name: str) -> int:
    """Byte where tensor `name`'s index entry (its name's length) starts."""
    raw = path.read_bytes()
    return raw.index(name.encode()) - 8


@pytest.mark.parametrize(
    "cut, message",
    [(3, "truncated header: the magic number"), (10, "truncated header: the tensor count"),
     (40, "truncated header"), (-40, "truncated tensor data: tensor 'second'")],
)
def test_truncated_file_is_named(small, cut, message):
    raw = small.read_bytes()
    short = small.with_name("short.gguf")
    short.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match=message) as e:
        GGUFFile(short)
    assert str(short) in str(e.value)


def test_wrong_magic_and_version_are_named(small):
    with pytest.raises(CheckpointError, match=r"not a GGUF file \(magic b'GGML', expected b'GGUF'\)"):
        GGUFFile(patched(small, 0, b"GGML"))
    with pytest.raises(CheckpointError, match=r"GGUF version 7, minigemma reads versions \[2, 3\]"):
        GGUFFile(patched(small, 4, struct.pack("<I", 7)))


def test_unknown_ggml_type_names_type_and_tensor(small):
    at = tensor_info_offset(small, "second") + 8 + len("second") + 4 + 2 * 8  # name, n_dims, dims -> type
    with pytest.raises(CheckpointError, match=r"tensor 'second' has ggml type 99, which no version of ggml defines"):
        GGUFFile(patched(small, at, struct.pack("<I", 99)))


def test_tensor_offset_disagreeing_with_the_file_is_named(small):
    at = tensor_info_offset(small, "second") + 8 + len("second") + 4 + 2 * 8 + 4  # -> offset
    with pytest.raises(CheckpointError, match="tensor 'second' starts at data offset 3, not a multiple of the alignment 32"):
        GGUFFile(patched(small, at, struct.pack("<Q", 3)))
    with pytest.raises(CheckpointError, match="truncated tensor data: tensor 'second'"):
        GGUFFile(patched(small, at, struct.pack("<Q", 2**40)))
    with pytest.raises(CheckpointError, match="tensors '(first|second)' and '(first|second)' overlap"):
        GGUFFile(patched(small, at, struct.pack("<Q", 0)))


def test_tensor_shape_disagreeing_with_its_type_is_named(small):
    at = tensor_info_offset(small, "second") + 8 + len("second") + 4  # -> dims[0], a row's length
    with pytest.raises(CheckpointError, match=r"tensor 'second' of shape \[2, 33\] is Q8_0, whose rows must hold whole blocks of 32"):
        GGUFFile(patched(small, at, struct.pack("<Q", 33)))


def test_metadata_of_an_unknown_value_type_is_named(small):
    at = small.read_bytes().index(b"test.count") + len("test.count")
    with pytest.raises(CheckpointError, match=r"metadata 'test.count' has value type 13"):
        GGUFFile(patched(small, at, struct.pack("<I", 13)))


def test_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot open"):
        GGUFFile(tmp_path / "missing.gguf")


@pytest.fixture(scope="module")
def gemma3_gguf(tmp_path_factory):
    """A tiny random Gemma 3 as llama.cpp writes it (F32, one Q8_0 matrix)."""
    kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, sliding_window=4, query_pre_attn_scalar=16)
    path = tmp_path_factory.mktemp("gguf") / "gemma3.gguf"
    write_gemma3_gguf(str(path), reference_gemma3_model(kwargs), lambda name, values: Q.Q8_0 if "ffn_up" in name else Q.F32)
    return path


MUTATIONS = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("u64"), st.integers(0, 10**6), st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1])),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
)


def mutated(path, mutations, out):
    """`path` with its header mutated: ("byte", at, value), ("u64", at, value) or ("cut", at, _)."""
    raw = bytearray(path.read_bytes())
    end = header_end(path)
    for kind, at, value in mutations:
        if not raw:
            break
        at %= min(end, len(raw))
        if kind == "byte":
            raw[at] = value
        elif kind == "u64":
            raw[at : at + 8] = struct.pack("<Q", value)
        else:
            raw = raw[:at]
    out.write_bytes(bytes(raw))
    return out


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_mutated_headers_never_crash_the_reader(small, mutations):
    """Bytes of the header (and counts, lengths, dims, offsets as huge u64s) overwritten, or the file
    cut: either it still parses, or the error is ours. Never a NumPy / struct / Unicode traceback."""
    note(f"mutations {mutations}")
    path = mutated(small, mutations, small.with_name("mutated.gguf"))
    try:
        f = GGUFFile(path)
        for t in f.tensors.values():
            f.raw(t)
    except CheckpointError:
        pass


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=2))
def test_mutated_model_headers_never_crash_load(gemma3_gguf, tmp_path, mutations):
    """The same on a whole (tiny) model through `minigemma.load`: config, tensors and all."""
    note(f"mutations {mutations}")
    path = mutated(gemma3_gguf, mutations, tmp_path / "mutated.gguf")
    try:
        minigemma.load(path, kernels=False).forward(np.array([2, 5, 7]))
    except MinigemmaError:
        pass
