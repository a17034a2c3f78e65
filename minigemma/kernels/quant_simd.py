"""Sixteen quantized values times sixteen of x, in one SIMD step: the building block of the GEMVs
in `kernels/quant.py`.

A block's packed values sit in a short run of bytes (16 bytes of nibbles, a 32-bit word of high
bits...). Written as a Numba loop over 16 of them, LLVM does not vectorise it: it cannot prove that
the bytes, x and the accumulator do not overlap, and a 16-step loop is too short to be worth a
runtime check. So these three functions say it directly in LLVM IR, each one line of arithmetic
on 16 lanes (one AVX-512 register, two AVX2 ones):

    fma16_bytes(acc, a, row, o, shift, mask, scale, x, xo)
        acc[a:a+16] += scale * ((row[o:o+16] >> shift) & mask) * x[xo:xo+16]   unsigned bytes
    fma16_int8(acc, a, row, o, scale, x, xo)
        acc[a:a+16] += scale * int8(row[o:o+16]) * x[xo:xo+16]                 Q8_0's signed bytes
    fma16_bits(acc, a, word, first, scale, x, xo)
        acc[a:a+16] += scale * ((word >> (first + lane)) & 1) * x[xo:xo+16]     bits of a uint32
    fma16_f32 / fma16_f16 / fma16_bf16(acc, a, row, o, x, xo)
        acc[a:a+16] += float32(row[o:o+16 values]) * x[xo:xo+16]             unblocked floats

(so the unblocked float types run through the same row loop: MoE experts stored in F16, say).
The accumulator is a small float32 array that stays in L1: the 16 sums per lane are added up once
per row (`acc.sum()`), not once per block, and the offsets (what a value subtracts, a
sub-block's minimum) are folded in once per block against the sums of x (see `quant.py`).
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


def _as(context, builder, signature, args, i, to):
    """Argument i converted to Numba type `to` (literal ints, float64 scales...)."""
    return context.cast(builder, args[i], signature.args[i], to)


def _accumulate(context, builder, signature, args, q, scale):
    """acc[a:a+16] += scale * q * x[xo:xo+16], for the argument layout (acc, a, ..., scale?, x, xo)."""
    x_at = len(args) - 2
    x = builder.load(_pointer(context, builder, signature.args[x_at], args[x_at], _as(context, builder, signature, args, x_at + 1, types.int64), _F32V), align=4)
    if scale is not None:
        q = builder.fmul(q, _splat(builder, scale, _F32V), flags=("fast",))
    acc = _pointer(context, builder, signature.args[0], args[0], _as(context, builder, signature, args, 1, types.int64), _F32V)
    total = builder.fadd(builder.load(acc, align=4), builder.fmul(q, x, flags=("fast",)), flags=("fast",))
    builder.store(total, acc, align=4)
    return context.get_dummy_value()


def _bytes(context, builder, signature, args, at):
    """The 16 bytes row[o:o+16] (arguments `at`, `at + 1`) as an <16 x i8> vector."""
    o = _as(context, builder, signature, args, at + 1, types.int64)
    return builder.load(_pointer(context, builder, signature.args[at], args[at], o, ir.VectorType(_I8, LANES)), align=1)


@intrinsic
def fma16_bytes(typingctx, acc, a, row, o, shift, mask, scale, x, xo):
    sig = types.void(acc, a, row, o, shift, mask, scale, x, xo)

    def codegen(context, builder, signature, args):
        lanes = builder.zext(_bytes(context, builder, signature, args, 2), _I32V)
        shift_by = builder.trunc(_as(context, builder, signature, args, 4, types.int64), _I32)
        keep = builder.trunc(_as(context, builder, signature, args, 5, types.int64), _I32)
        lanes = builder.and_(builder.lshr(lanes, _splat(builder, shift_by, _I32V)), _splat(builder, keep, _I32V))
        q = builder.sitofp(lanes, _F32V)
        return _accumulate(context, builder, signature, args, q, _as(context, builder, signature, args, 6, types.float32))

    return sig, codegen


@intrinsic
def fma16_int8(typingctx, acc, a, row, o, scale, x, xo):
    sig = types.void(acc, a, row, o, scale, x, xo)

    def codegen(context, builder, signature, args):
        q = builder.sitofp(builder.sext(_bytes(context, builder, signature, args, 2), _I32V), _F32V)
        return _accumulate(context, builder, signature, args, q, _as(context, builder, signature, args, 4, types.float32))

    return sig, codegen


@intrinsic
def fma16_bits(typingctx, acc, a, word, first, scale, x, xo):
    sig = types.void(acc, a, word, first, scale, x, xo)

    def codegen(context, builder, signature, args):
        word32 = builder.trunc(_as(context, builder, signature, args, 2, types.uint64), _I32)
        first32 = builder.trunc(_as(context, builder, signature, args, 3, types.int64), _I32)
        shifts = builder.add(_splat(builder, first32, _I32V), ir.Constant(_I32V, list(range(LANES))))
        lanes = builder.and_(builder.lshr(_splat(builder, word32, _I32V), shifts), ir.Constant(_I32V, [1] * LANES))
        q = builder.sitofp(lanes, _F32V)
        return _accumulate(context, builder, signature, args, q, _as(context, builder, signature, args, 4, types.float32))

    return sig, codegen


def _widen_f16(builder, values):
    return builder.fpext(values, _F32V)  # the CPU's own float16 conversion (F16C)


def _widen_bf16(builder, values):
    return builder.bitcast(builder.shl(builder.zext(values, _I32V), ir.Constant(_I32V, [16] * LANES)), _F32V)


def _fma16_floats(stored, widen):
    """The fma16 of a float type: 16 values of LLVM type `stored`, made float32 by `widen`."""

    @intrinsic
    def fma16(typingctx, acc, a, row, o, x, xo):
        sig = types.void(acc, a, row, o, x, xo)

        def codegen(context, builder, signature, args):
            o = _as(context, builder, signature, args, 3, types.int64)
            pointer = _pointer(context, builder, signature.args[2], args[2], o, ir.VectorType(stored, LANES))
            return _accumulate(context, builder, signature, args, widen(builder, builder.load(pointer, align=1)), None)

        return sig, codegen

    return fma16


fma16_f32 = _fma16_floats(ir.FloatType(), lambda builder, values: values)
fma16_f16 = _fma16_floats(ir.HalfType(), _widen_f16)
fma16_bf16 = _fma16_floats(_I16, _widen_bf16)
