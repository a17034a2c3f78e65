"""When a kernel goes parallel.

A parallel region wakes the other threads and waits for the slowest: microseconds on an idle
machine, but a whole scheduler time slice when the machine is busy and a thread has to wait for
a core. A decoding step of a small model makes dozens of tiny kernel calls, where that waiting
would cost more than the work (measured on the `tiny` benchmark config: several times slower
decoding). So a call with less work than `PARALLEL_MIN_WORK` runs on the calling thread alone.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba

PARALLEL_MIN_WORK = 1 << 20  # multiply-adds: ~1 M is tens of microseconds on one core


@contextmanager
def threads_for(work: int):
    """Run the enclosed kernel call on all threads for big `work`, on this one alone otherwise."""
    if work >= PARALLEL_MIN_WORK:
        yield
        return
    saved = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(saved)
