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
OpenMP threads *spin briefly, then sleep* (`OMP_WAIT_POLICY=ACTIVE` with `GOMP_SPINCOUNT=10000`,
about 0.1 ms of spinning). A decoding step is a hundred or more GEMVs a few tens of microseconds
apart: a sleeping thread must be woken for each (tens of microseconds on these virtual machines),
a spinning one is already there. Measured on the real Gemma 3 270M (Q4_K_M, 2 threads, idle
machine, benchmarks/README.md): decode 37-39 tokens/s sleeping, 48-50 spinning 0.1 ms, prefill
unchanged (360-390 tokens/s both). Spinning without a bound (`ACTIVE` alone) cost prefill 3-60x:
the spinning OpenMP threads hold the cores OpenBLAS's GEMMs need. And on a machine whose cores are
busy with other work, any spinning steals the core the working thread needs (measured at load 6:
12 tokens/s sleeping, 4 spinning): there, set `OMP_WAIT_POLICY=PASSIVE` (llama.cpp, whose threads
spin too, slows down the same way).
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


def pick(kernels: tuple, work: int, minimum: int | None = None):
    """The parallel kernel for `work` of at least `minimum` (default `PARALLEL_MIN_WORK`), else the
    serial one: by shape alone."""
    return kernels[work >= (PARALLEL_MIN_WORK if minimum is None else minimum)]
