"""When a kernel goes parallel.

A parallel region wakes the other threads and waits for all of them at its end: microseconds on
an idle machine, but a scheduler time slice whenever a thread has to wait for a core. So every
kernel is compiled twice, serial and parallel, and a call takes the parallel one only when

* it has at least `PARALLEL_MIN_WORK` to do: a decoding step of a small model makes dozens of
  tiny calls, for which waking threads costs more than the work (the `tiny` benchmark config
  decoded several times slower with every call parallel);
* and the machine is not busy: on the shared 2-core machine the benchmarks ran on, with two
  other processes running, a parallel GEMV streamed 8 GB/s and a serial one 13-14, while with
  the machine quieter the parallel GEMV won (benchmarks/README.md). Busy is judged from the
  1-minute load average, read at most once a second.

Serial and parallel kernels compute every output element the same way, so the choice changes
the speed, never a bit of the result.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

from numba import njit, prange


# What the kernels let LLVM do: reassociate sums (so dot products vectorise) and fuse multiply-adds.
# No assumption that values are finite: masked attention scores are -inf on purpose.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
PARALLEL_MIN_WORK = 1 << 22  # multiply-adds (or values touched): ~4 M, a few hundred microseconds
BUSY_LOAD = 0.5  # load average (our own running thread included) above cores + this: no core to spare


def serial_and_parallel(define, fastmath=FASTMATH):
    """`define(loop)` returns a kernel whose outer loop is `for i in loop(n)`: jit it serial
    (`range`) and parallel (`prange`). Numba's on-disk cache key ignores the `parallel` flag but
    not closure variables, so the two `loop`s also keep their cache entries apart."""
    return tuple(njit(parallel=loop is prange, fastmath=fastmath, cache=True)(define(loop)) for loop in (range, prange))


def pick(kernels: tuple, work: int):
    """The parallel kernel for big `work` when a core is idle, else the serial one."""
    return kernels[work >= PARALLEL_MIN_WORK and idle_core(int(time.monotonic()))]


@lru_cache(maxsize=1)
def idle_core(second: int) -> bool:
    """Whether the other processes leave a core for a second thread, this second: the 1-minute
    load average counts this process's own running thread(s) too."""
    return os.getloadavg()[0] < (os.cpu_count() or 1) + BUSY_LOAD
