"""Sixteen quantized values at once, in one SIMD step: the building blocks of the kernels in
`kernels/quant.py` (the GEMV's dot products and the prefill's dequantization).

A block's packed values sit in short runs of bytes (16 bytes of nibbles, the high bits in other
bytes or in a 32-bit word). Written as a Numba loop over 16 of them, LLVM does not vectorise it:
it cannot prove that the bytes, x and the output do not overlap, and a 16-step loop is too short
to be worth a runtime check. So these functions say it directly in LLVM IR, on 16 lanes (one
AVX-512 register, two AVX2 ones). First the 16 integers q, in one of three ways:

    bytes:  q = ((row[o:o+16] >> shift) & mask) | (((row[ho:ho+16] >> hshift) & hmask) << 4)
    word:   q = ((row[o:o+16] >> shift) & 15)   | (((word >> (first + lane)) & 1) << 4)
    int8:   q = int8(row[o:o+16])

(low nibbles: shift 0, mask 15; high nibbles: shift 4; no high bits: hmask 0), then either

    fma16_bytes(acc, a, row, o, shift, mask, ho, hshift, hmask, scale, x, xo)
    fma16_word(acc, a, row, o, shift, word, first, scale, x, xo)
    fma16_int8(acc, a, row, o, scale, x, xo)
        acc[a:a+16] += scale * q * x[xo:xo+16]          the GEMV: dot products, in fast math

    put16_bytes(out, a, row, o, shift, mask, ho, hshift, hmask, offset, scale, add)
    put16_word(out, a, row, o, shift, word, first, offset, scale, add)
    put16_int8(out, a, row, o, scale)
        out[a:a+16] = float(q - offset) * scale + add   dequantization, exact: the twins' roundings
                                                        (add -0.0 to add nothing, even to -0.0)

and for rows of plain floats, fma16_f32 / fma16_f16 / fma16_bf16(acc, a, row, o, x, xo):
acc[a:a+16] += float32(16 values at byte o) * x[xo:xo+16] (MoE experts stored in F16, say), and
put16_f16(out, a, row, o): out[a:a+16] = float32(16 float16 values at byte o).

The GEMV's accumulator is a small float32 array that stays in L1: the 16 sums per lane are added
up once per row (`acc.sum()`), not once per block, and the offsets (what a value subtracts, a
sub-block's minimum) are folded in once per block against the sums of x (`quant_dots.py`).
No bounds are checked here: the callers' offsets come from the block layout.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LANES = 16
_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
_F32V, _I32V = ir.VectorType(ir.FloatType(), LANES), ir.VectorType(_I32, LANES)


def _pointer(context, builder, array_type, array, index, element):
    """Address of array[index], as a pointer to `element` (a vector type: an unaligned load)."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), ir.PointerType(element))


def _splat(builder, scalar, vector_type):
    """A vector whose lanes all hold `scalar`."""
    v = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vector_type, ir.Undefined), ir.Constant(_I32V, [0] * LANES))


class _Args:
    """The intrinsic's arguments by position, converted to what the IR needs."""

    def __init__(self, context, builder, signature, args):
        self.context, self.builder, self.signature, self.args = context, builder, signature, args

    def int32(self, i):
        value = self.context.cast(self.builder, self.args[i], self.signature.args[i], types.int64)
        return _splat(self.builder, self.builder.trunc(value, _I32), _I32V)

    def float32(self, i):
        value = self.context.cast(self.builder, self.args[i], self.signature.args[i], types.float32)
        return _splat(self.builder, value, _F32V)

    def at(self, i, element, index_at=None):
        """A pointer to array argument i at the index in argument `index_at` (default i + 1)."""
        j = i + 1 if index_at is None else index_at
        index = self.context.cast(self.builder, self.args[j], self.signature.args[j], types.int64)
        return _pointer(self.context, self.builder, self.signature.args[i], self.args[i], index, element)

    def bytes(self, i, index_at=None):
        """<16 x i32> of the 16 unsigned bytes of array argument i at the index in `index_at`."""
        return self.builder.zext(self.builder.load(self.at(i, ir.VectorType(_I8, LANES), index_at), align=1), _I32V)


def _field(b, lanes, shift, mask):
    return b.and_(b.lshr(lanes, shift), mask)


def _q_bytes(a, i):
    """q of the `bytes` form, from arguments row, o, shift, mask, ho, hshift, hmask at i .. i + 6."""
    b = a.builder
    low = _field(b, a.bytes(i), a.int32(i + 2), a.int32(i + 3))
    high = _field(b, a.bytes(i, index_at=i + 4), a.int32(i + 5), a.int32(i + 6))
    return b.or_(low, b.shl(high, ir.Constant(_I32V, [4] * LANES)))


def _q_word(a, i):
    """q of the `word` form, from arguments row, o, shift, word, first at i .. i + 4."""
    b = a.builder
    low = _field(b, a.bytes(i), a.int32(i + 2), ir.Constant(_I32V, [15] * LANES))
    shifts = b.add(a.int32(i + 4), ir.Constant(_I32V, list(range(LANES))))
    high = b.and_(b.lshr(a.int32(i + 3), shifts), ir.Constant(_I32V, [1] * LANES))
    return b.or_(low, b.shl(high, ir.Constant(_I32V, [4] * LANES)))


def _q_int8(a, i):
    """q of the `int8` form, from arguments row, o at i, i + 1."""
    return a.builder.sext(a.builder.load(a.at(i, ir.VectorType(_I8, LANES)), align=1), _I32V)


def _fma(a, values, scale_at):
    """acc[a:a+16] += values (* scale) * x[xo:xo+16]: acc, a are the first arguments, x, xo the last."""
    b, n = a.builder, len(a.args)
    if scale_at is not None:
        values = b.fmul(values, a.float32(scale_at), flags=("fast",))
    acc = a.at(0, _F32V)
    x = b.load(a.at(n - 2, _F32V), align=4)
    b.store(b.fadd(b.load(acc, align=4), b.fmul(values, x, flags=("fast",)), flags=("fast",)), acc, align=4)
    return a.context.get_dummy_value()


def _put(a, q, offset_at, scale_at, add_at):
    """out[a:a+16] = float(q - offset) * scale + add, each step rounded as in NumPy (no fusing)."""
    b = a.builder
    if offset_at is not None:
        q = b.sub(q, a.int32(offset_at))
    values = b.fmul(b.sitofp(q, _F32V), a.float32(scale_at))
    if add_at is not None:
        values = b.fadd(values, a.float32(add_at))
    b.store(values, a.at(0, _F32V), align=4)
    return a.context.get_dummy_value()


def _typed(args, body):
    """What an intrinsic's typer returns: its signature, and IR made by `body(_Args)`."""

    def codegen(context, builder, signature, values):
        return body(_Args(context, builder, signature, values))

    return types.void(*args), codegen


def _float(a, q):
    return a.builder.sitofp(q, _F32V)


@intrinsic
def fma16_bytes(typingctx, acc, a, row, o, shift, mask, ho, hshift, hmask, scale, x, xo):
    return _typed((acc, a, row, o, shift, mask, ho, hshift, hmask, scale, x, xo), lambda v: _fma(v, _float(v, _q_bytes(v, 2)), 9))


@intrinsic
def fma16_word(typingctx, acc, a, row, o, shift, word, first, scale, x, xo):
    return _typed((acc, a, row, o, shift, word, first, scale, x, xo), lambda v: _fma(v, _float(v, _q_word(v, 2)), 7))


@intrinsic
def fma16_int8(typingctx, acc, a, row, o, scale, x, xo):
    return _typed((acc, a, row, o, scale, x, xo), lambda v: _fma(v, _float(v, _q_int8(v, 2)), 4))


@intrinsic
def put16_bytes(typingctx, out, a, row, o, shift, mask, ho, hshift, hmask, offset, scale, add):
    return _typed((out, a, row, o, shift, mask, ho, hshift, hmask, offset, scale, add), lambda v: _put(v, _q_bytes(v, 2), 9, 10, 11))


@intrinsic
def put16_word(typingctx, out, a, row, o, shift, word, first, offset, scale, add):
    return _typed((out, a, row, o, shift, word, first, offset, scale, add), lambda v: _put(v, _q_word(v, 2), 7, 8, 9))


@intrinsic
def put16_int8(typingctx, out, a, row, o, scale):
    return _typed((out, a, row, o, scale), lambda v: _put(v, _q_int8(v, 2), None, 4, None))


def _widen_f16(builder, values):
    return builder.fpext(values, _F32V)  # the CPU's own float16 conversion (F16C)


def _widen_bf16(builder, values):
    return builder.bitcast(builder.shl(builder.zext(values, _I32V), ir.Constant(_I32V, [16] * LANES)), _F32V)


def _fma16_floats(stored, widen):
    """The fma16 of a float type: 16 values of LLVM type `stored`, made float32 by `widen`."""

    def body(v):
        return _fma(v, widen(v.builder, v.builder.load(v.at(2, ir.VectorType(stored, LANES)), align=1)), None)

    @intrinsic
    def fma16(typingctx, acc, a, row, o, x, xo):
        return _typed((acc, a, row, o, x, xo), body)

    return fma16


@intrinsic
def put16_f16(typingctx, out, a, row, o):
    """out[a:a+16] = the 16 float16 values at byte o, widened (exactly)."""

    def body(v):
        halves = v.builder.load(v.at(2, ir.VectorType(ir.HalfType(), LANES)), align=1)
        v.builder.store(_widen_f16(v.builder, halves), v.at(0, _F32V), align=4)
        return v.context.get_dummy_value()

    return _typed((out, a, row, o), body)


fma16_f32 = _fma16_floats(ir.FloatType(), lambda builder, values: values)
fma16_f16 = _fma16_floats(ir.HalfType(), _widen_f16)
fma16_bf16 = _fma16_floats(_I16, _widen_bf16)
