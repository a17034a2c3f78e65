"""When a kernel goes parallel, and how its threads wait.

A parallel region wakes the other threads and waits for all of them at its end: microseconds on
an idle machine, more than the work itself for the dozens of tiny calls a small model's decoding
step makes (the `tiny` benchmark config decoded several times slower with every call parallel).
So every kernel is compiled twice, serial and parallel, and a call takes the parallel one when it
has at least `PARALLEL_MIN_WORK` to do. That is decided by the call's shapes alone: never by the
machine's load (an earlier version read the load average, so the same call took different paths
on a busy and an idle machine), so a given call always runs the same code.

Serial and parallel kernels compute every output element the same way, so the choice changes
the speed, never a bit of the result.

How threads wait (the policy `kernels/__init__.py` sets, unless the user set their own): Numba's
OpenMP threads *sleep* between parallel regions (`OMP_WAIT_POLICY=PASSIVE`). Spinning
(`ACTIVE`) measured decode 10-30% faster but prefill 55% slower (benchmarks/README.md): spinning
OpenMP threads hold the cores OpenBLAS's threads need for the prefill's GEMMs, and on a shared
machine they steal the core the working thread needs. Sleeping costs ~10 us a region, which the
`PARALLEL_MIN_WORK` threshold keeps small next to the work.
"""

from __future__ import annotations

from numba import njit, prange


# What the kernels let LLVM do: reassociate sums (so dot products vectorise) and fuse multiply-adds.
# No assumption that values are finite: masked attention scores are -inf on purpose.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
PARALLEL_MIN_WORK = 1 << 22  # multiply-adds (or values touched): ~4 M, a few hundred microseconds


def serial_and_parallel(define, fastmath=FASTMATH):
    """`define(loop)` returns a kernel whose outer loop is `for i in loop(n)`: jit it serial
    (`range`) and parallel (`prange`). Numba's on-disk cache key ignores the `parallel` flag but
    not closure variables, so the two `loop`s also keep their cache entries apart."""
    return tuple(njit(parallel=loop is prange, fastmath=fastmath, cache=True)(define(loop)) for loop in (range, prange))


def pick(kernels: tuple, work: int):
    """The parallel kernel for `work` of at least `PARALLEL_MIN_WORK`, else the serial one: by shape alone."""
    return kernels[work >= PARALLEL_MIN_WORK]
