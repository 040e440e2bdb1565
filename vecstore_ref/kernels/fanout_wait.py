"""The wait of `vecstore_ref.scale.fanout`: a thread waiting for a shard's task, or for its result, spins on one
byte without the GIL for a bounded time before it goes to sleep, so that it sees the byte change within a
microsecond instead of being woken (tens of microseconds on a virtual machine). Only sharded stores load it.

A spin round's length depends on the CPU (``pause`` takes 11 ns on one Xeon, about 60 ns on others), so waits
asked for in microseconds are turned into rounds with `rounds_for`, from a round's length measured once per
process, the first time it is asked for.
"""

import time

import numpy as np
from numba import config, njit

from .handoff import leave_python, load_flag, spin_pause, wait_for_python
from .signatures import CACHE, FLAGS, INT, NO_REFCOUNT


@njit(INT(FLAGS, INT, FLAGS, INT, INT), nogil=True, cache=CACHE, **NO_REFCOUNT)
def await_flag(signal, index, in_python, me, spins):
    """Spin without the GIL until ``signal[index]`` is not 0, at most ``spins`` rounds: 1 if it was seen, else 0
    (the caller then sleeps the usual way). Slot ``me`` of ``in_python`` (-1: none) is cleared first, and once
    the byte is seen the thread waits (bounded) for another thread's query Python, like a walk that ends."""
    leave_python(in_python, me)
    for _ in range(spins):
        if load_flag(signal, index) != 0:
            wait_for_python(in_python, me)
            return 1
        spin_pause()
    return 0


def _measure_round_ns(rounds: int = 4096, tries: int = 5) -> float:
    """How long one spin round takes on this machine: the fastest of a few timed spins on a byte never set."""
    never = np.zeros(1, dtype=np.uint8)
    no_slots = np.zeros(1, dtype=np.uint8)
    await_flag(never, 0, no_slots, -1, 1)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter_ns()
        await_flag(never, 0, no_slots, -1, rounds)
        best = min(best, time.perf_counter_ns() - t0)
    return best / rounds


if config.DISABLE_JIT:  # plain Python (NUMBA_DISABLE_JIT=1)

    def await_flag(signal, index, in_python, me, spins):  # noqa: F811 - the pure-Python stand-in
        """Stand-in: look once, never spin (a spin would hold the GIL the other thread needs)."""
        if me >= 0:
            in_python[me] = 0
        return 1 if signal[index] != 0 else 0


_round_ns: float | None = None  # one spin round in this process, measured on first use


def rounds_for(us: float) -> int:
    """The spin rounds that last about ``us`` microseconds here (at least 1)."""
    global _round_ns
    if _round_ns is None:
        _round_ns = 60.0 if config.DISABLE_JIT else _measure_round_ns()
    return max(1, int(us * 1000.0 / _round_ns))
