"""Run a serial kernel on every core: one Python thread per share of the work.

The batch kernels (HNSW batch search, the build's neighbour planning and reverse links, the flat index's batch scan
and rescore) are serial Numba functions compiled with ``nogil=True`` that take ``(t, n_threads)`` last and do share
``t`` of the rows. `run_split` calls them on ``n_threads`` threads at once: the calling thread takes share 0,
a pool kept for the process the others, so a call starts no thread.

Why not a ``prange`` kernel: on these loops (whole queries or nodes per iteration) the speed is the same, but
Numba's parallel lowering costs seconds of compile time per kernel on a first run, and its thread pool would sit
beside BLAS's and this one.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0


def _workers(n: int) -> ThreadPoolExecutor:
    """The process's pool with at least ``n`` threads (a new one after ``fork``: the threads stay behind)."""
    global _pool, _pool_size, _pool_pid
    with _lock:
        if _pool is None or _pool_size < n or _pool_pid != os.getpid():
            old = _pool if _pool_pid == os.getpid() else None
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="vecstore-kernel")
            _pool_size, _pool_pid = n, os.getpid()
            if old is not None:
                old.shutdown(wait=False)  # its running shares finish; new calls use the bigger pool
        return _pool


def run_split(kernel, n_threads: int, *args) -> None:
    """``kernel(*args, t, n_threads)`` for every ``t < n_threads`` at once; returns when all are done.

    The kernel must release the GIL (``nogil=True``) and each share must write only its own rows. An exception
    in any share is raised here, after every share has finished.
    """
    if n_threads <= 1:
        kernel(*args, 0, 1)
        return
    pool = _workers(n_threads - 1)
    shares, here = [], [0]
    for t in range(1, n_threads):
        try:
            shares.append(pool.submit(kernel, *args, t, n_threads))  # type: ignore[call-arg]
        except RuntimeError:  # the pool was just replaced by a bigger one, or the interpreter is exiting
            here.append(t)  # this thread runs that share too: slower, never wrong
    try:
        for t in here:
            kernel(*args, t, n_threads)
    finally:
        for share in shares:
            share.exception()  # wait for every share before raising anything
    for share in shares:
        share.result()
