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

(low nibbles: shift 0, mask 15; high nibbles: shift 4; no high bits: hmask 0), then either, for
the GEMV's dot products (fast math), 32 values under one scale per accumulator update:

    fma32_bytes(acc, a, row, o, shift, mask, ho, hshift, hmask, scale, x, xo)
        q = the `bytes` form at o, ho, then at o + 16, ho + 16 (a K-quant sub-block of 32)
    fma32_bytes2(acc, a, row, o, shift, mask, ho, hshift, hmask, scale0, scale1, x, xo)
        the same, each half of 16 with its own scale (two Q6_K sub-blocks)
    fma32_word(acc, a, row, o, word, scale, x, xo)
        q = the `word` form with shift 0 and first 0, then shift 4 and first 16: a Q4_x / Q5_x
        block (word = 0: Q4_0 and Q4_1's plain nibbles)
    fma32_int8(acc, a, row, o, scale, x, xo)     q = int8(row[o:o+32]), a Q8_0 block
        acc[a:a+16] += scale * (q[:16] * x[xo:xo+16] + q[16:] * x[xo+16:xo+32])

or, for dequantization (exact: the twins' roundings, nothing fused), 16 values:

    put16_bytes(out, a, row, o, shift, mask, ho, hshift, hmask, offset, scale, add)
    put16_word(out, a, row, o, shift, word, first, offset, scale, add)
    put16_int8(out, a, row, o, scale)
        out[a:a+16] = float(q - offset) * scale + add   (add -0.0 to add nothing, even to -0.0)

And for rows of plain floats, fma16_f32 / fma16_f16 / fma16_bf16(acc, a, row, o, x, xo):
acc[a:a+16] += float32(16 values at byte o) * x[xo:xo+16] (MoE experts stored in F16, say), and
put16_f16(out, a, row, o): out[a:a+16] = float32(16 float16 values at byte o); and half_at(row, o),
one float16 (a block's scale) widened by the CPU.

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

    def at(self, i, element, index_at=None, plus=0):
        """A pointer to array argument i at the index in argument `index_at` (default i + 1), + plus."""
        j = i + 1 if index_at is None else index_at
        index = self.context.cast(self.builder, self.args[j], self.signature.args[j], types.int64)
        if plus:
            index = self.builder.add(index, ir.Constant(ir.IntType(64), plus))
        return _pointer(self.context, self.builder, self.signature.args[i], self.args[i], index, element)

    def bytes(self, i, index_at=None, plus=0):
        """<16 x i32> of the 16 unsigned bytes of array argument i at the index in `index_at`, + plus."""
        return self.builder.zext(self.builder.load(self.at(i, ir.VectorType(_I8, LANES), index_at, plus), align=1), _I32V)


def _field(b, lanes, shift, mask):
    return b.and_(b.lshr(lanes, shift), mask)


def _q_bytes(a, i, plus=0):
    """q of the `bytes` form, from arguments row, o, shift, mask, ho, hshift, hmask at i .. i + 6
    (bytes o + plus and ho + plus ..)."""
    b = a.builder
    low = _field(b, a.bytes(i, plus=plus), a.int32(i + 2), a.int32(i + 3))
    high = _field(b, a.bytes(i, index_at=i + 4, plus=plus), a.int32(i + 5), a.int32(i + 6))
    return b.or_(low, b.shl(high, ir.Constant(_I32V, [4] * LANES)))


def _q_word(a, i):
    """q of the `word` form, from arguments row, o, shift, word, first at i .. i + 4."""
    b = a.builder
    low = _field(b, a.bytes(i), a.int32(i + 2), ir.Constant(_I32V, [15] * LANES))
    shifts = b.add(a.int32(i + 4), ir.Constant(_I32V, list(range(LANES))))
    high = b.and_(b.lshr(a.int32(i + 3), shifts), ir.Constant(_I32V, [1] * LANES))
    return b.or_(low, b.shl(high, ir.Constant(_I32V, [4] * LANES)))


def _q_int8(a, i, plus=0):
    """q of the `int8` form, from arguments row, o at i, i + 1 (bytes o + plus ..)."""
    return a.builder.sext(a.builder.load(a.at(i, ir.VectorType(_I8, LANES), plus=plus), align=1), _I32V)


def _q_word_pair(a, i):
    """The 32 values of a Q4_0 / Q5_0 block: low nibbles and bits 0..15 of the word, then high
    nibbles and bits 16..31; from arguments row, o, word at i .. i + 2."""
    b = a.builder
    nibbles, word = a.bytes(i), a.int32(i + 2)
    pair = []
    for shift, first in ((0, 0), (4, LANES)):
        low = _field(b, nibbles, ir.Constant(_I32V, [shift] * LANES), ir.Constant(_I32V, [15] * LANES))
        high = b.and_(b.lshr(word, ir.Constant(_I32V, list(range(first, first + LANES)))), ir.Constant(_I32V, [1] * LANES))
        pair.append(b.or_(low, b.shl(high, ir.Constant(_I32V, [4] * LANES))))
    return pair


def _fma_pair(a, q_pair, scale_at, second_scale_at=None):
    """acc[a:a+16] += scale * (q0 * x[xo:xo+16] + q1 * x[xo+16:xo+32]): a whole 32-value block,
    one update of the accumulator (with a second scale: scale0 * q0 * x0 + scale1 * q1 * x1)."""
    b, n = a.builder, len(a.args)
    x0 = b.load(a.at(n - 2, _F32V), align=4)
    x1 = b.load(a.at(n - 2, _F32V, plus=LANES), align=4)
    q0, q1 = (b.sitofp(q, _F32V) for q in q_pair)
    if second_scale_at is not None:  # each half its own scale (Q6_K's sub-blocks of 16)
        q0 = b.fmul(q0, a.float32(scale_at), flags=("fast",))
        q1 = b.fmul(q1, a.float32(second_scale_at), flags=("fast",))
    block = b.fadd(b.fmul(q0, x0, flags=("fast",)), b.fmul(q1, x1, flags=("fast",)), flags=("fast",))
    if second_scale_at is None:
        block = b.fmul(block, a.float32(scale_at), flags=("fast",))
    acc = a.at(0, _F32V)
    b.store(b.fadd(b.load(acc, align=4), block, flags=("fast",)), acc, align=4)
    return a.context.get_dummy_value()


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


@intrinsic
def fma32_int8(typingctx, acc, a, row, o, scale, x, xo):
    return _typed((acc, a, row, o, scale, x, xo), lambda v: _fma_pair(v, (_q_int8(v, 2), _q_int8(v, 2, LANES)), 4))


@intrinsic
def fma32_bytes(typingctx, acc, a, row, o, shift, mask, ho, hshift, hmask, scale, x, xo):
    return _typed((acc, a, row, o, shift, mask, ho, hshift, hmask, scale, x, xo), lambda v: _fma_pair(v, (_q_bytes(v, 2), _q_bytes(v, 2, LANES)), 9))


@intrinsic
def fma32_bytes2(typingctx, acc, a, row, o, shift, mask, ho, hshift, hmask, scale0, scale1, x, xo):
    return _typed((acc, a, row, o, shift, mask, ho, hshift, hmask, scale0, scale1, x, xo), lambda v: _fma_pair(v, (_q_bytes(v, 2), _q_bytes(v, 2, LANES)), 9, 10))


@intrinsic
def fma32_word(typingctx, acc, a, row, o, word, scale, x, xo):
    return _typed((acc, a, row, o, word, scale, x, xo), lambda v: _fma_pair(v, _q_word_pair(v, 2), 5))


@intrinsic
def put16_bytes(typingctx, out, a, row, o, shift, mask, ho, hshift, hmask, offset, scale, add):
    return _typed((out, a, row, o, shift, mask, ho, hshift, hmask, offset, scale, add), lambda v: _put(v, _q_bytes(v, 2), 9, 10, 11))


@intrinsic
def put16_word(typingctx, out, a, row, o, shift, word, first, offset, scale, add):
    return _typed((out, a, row, o, shift, word, first, offset, scale, add), lambda v: _put(v, _q_word(v, 2), 7, 8, 9))


@intrinsic
def put16_int8(typingctx, out, a, row, o, scale):
    return _typed((out, a, row, o, scale), lambda v: _put(v, _q_int8(v, 2), None, 4, None))


@intrinsic
def half_at(typingctx, row, o):
    """The little-endian float16 at byte o of a uint8 array, as float32 (the CPU's F16C)."""

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.int64)
        pointer = _pointer(context, builder, signature.args[0], args[0], index, ir.HalfType())
        return builder.fpext(builder.load(pointer, align=1), ir.FloatType())

    return types.float32(row, o), codegen


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
