"""When a kernel goes parallel.

A parallel region wakes the other threads and waits for the slowest: microseconds on an idle
machine, but a whole scheduler time slice when the machine is busy and a thread has to wait for
a core, and the woken threads spin afterwards, taking CPU from the one doing the work. A
decoding step of a small model makes dozens of tiny kernel calls, for which that costs more than
the work (measured on the `tiny` benchmark config: several times slower decoding). So every
kernel is compiled twice, serial and parallel, and a call with less work than
`PARALLEL_MIN_WORK` takes the serial one.
"""

from __future__ import annotations

from numba import njit, prange

from . import FASTMATH

PARALLEL_MIN_WORK = 1 << 22  # multiply-adds (or values touched): ~4 M, a few hundred microseconds


def serial_and_parallel(define, fastmath=FASTMATH):
    """`define(loop)` returns a kernel whose outer loop is `for i in loop(n)`: jit it serial
    (`range`) and parallel (`prange`). Numba's on-disk cache key ignores the `parallel` flag but
    not closure variables, so the two `loop`s also keep their cache entries apart."""
    return tuple(njit(parallel=loop is prange, fastmath=fastmath, cache=True)(define(loop)) for loop in (range, prange))


def pick(kernels: tuple, work: int):
    """The serial kernel for small `work`, the parallel one for big."""
    return kernels[work >= PARALLEL_MIN_WORK]
