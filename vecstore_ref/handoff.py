"""Handing the interpreter between query threads without putting them to sleep.

A single query is a graph walk, which runs without the GIL, between two short stretches of Python (checks before,
results after) that need it. With two threads querying, a walk often ends while the other thread is in one of its
stretches. CPython then puts the finished thread to sleep until the GIL is free and wakes it when the other thread
enters its walk. On a virtual machine that sleep and wake-up cost tens of microseconds of CPU and latency, as much
as a third of the walk, and two threads answered only ~1.5x the queries of one.

So each thread says when it is in a query's Python: `IN_PYTHON` has one byte per thread slot, set while the thread
holds the GIL inside `VecStore.query` and cleared when its walk starts (by the kernel, after the GIL is released)
or when the query returns. A walk that ends while another slot is set waits for it to clear, spinning without the
GIL for a bounded time (`vecstore_ref.kernels.handoff.SPIN_LIMIT`, 6-30 us), and then takes a GIL that is free,
without sleeping. The flags are a hint, never a lock: a wrong one costs at most one bounded spin, and results do
not depend on them.

Threads map to slots by their ident. Two threads that share a slot only lose the hint for each other.
"""

from __future__ import annotations

import os
import threading

import numpy as np

SLOTS = 64
SLOT_MODULUS = 61  # a prime: thread idents are aligned addresses, and a power of two would map them together

_BYTES = bytearray(SLOTS)
FLAGS: bytearray = _BYTES  # Python sets and clears a slot here (a bytearray store is the cheapest)
IN_PYTHON: np.ndarray = np.frombuffer(_BYTES, dtype=np.uint8)  # the same bytes, as the kernels read them


def current_slot() -> int:
    """This thread's slot in `IN_PYTHON`."""
    return threading.get_ident() % SLOT_MODULUS


def _clear_after_fork() -> None:
    """A child process has only the thread that forked: another thread's flag, set at the fork, would stay set."""
    _BYTES[:] = bytes(SLOTS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_clear_after_fork)
