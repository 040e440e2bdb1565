"""Vectors written but not yet linked into the HNSW graph, and the thread that links them.

Linking a vector into the graph (a search with ``ef_construction`` plus neighbour updates) costs far more than
writing it: ~90 us against ~10 us per vector here. So a write does not wait for it. The store appends the record
to the log, puts the vector in the table and queues its slot here; the write is acknowledged, and a background
thread links the queue in chunks, oldest first. Until a slot is linked, queries scan it exactly (it is a short
list) and merge it with the graph's results, so a write is visible to the next query like any other.

:class:`LinkQueue` is the bookkeeping, safe to call from any thread; the graph itself is changed only by the
index, under its own lock (see :meth:`vecstore_ref.index.hnsw.HNSWIndex.link_queued`). It hands the index, in one
atomic step, everything the index has to apply to its arrays before it reads them:

- ``to_mark``: slots queued since the last step. A slot already in the graph (its vector changed) is marked
  deleted until it is relinked: the walk still passes through it but never returns it, since its links were made
  for the old vector; the exact scan returns it instead.
- ``to_delete``: slots the store removed since the last step (they leave the queue at once).
- ``chunk``: the oldest queued slots, to link now.
- ``waiting``: the slots still queued, which a query scans exactly.

Other index engines do the same: Qdrant and Milvus search segments that are not indexed yet by brute force while
an optimizer builds their graph.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import NamedTuple

import numpy as np

from .base import DTYPE_SLOT

log = logging.getLogger("vecstore_ref")

_EMPTY = np.zeros(0, dtype=DTYPE_SLOT)
LINK_CHUNK = 256  # slots linked per turn of the background thread (about 20 ms at ef_construction=200, 2 cores)
LINGER_S = 0.02  # how long the thread waits for a full chunk once a slot is waiting


class Taken(NamedTuple):
    """What :meth:`LinkQueue.take` hands the index (int32 slot arrays)."""

    to_mark: np.ndarray
    to_delete: np.ndarray
    chunk: np.ndarray
    waiting: np.ndarray


class LinkQueue:
    """A FIFO of slots waiting to be linked; a slot is in it at most once."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._queued = np.zeros(1024, dtype=np.uint8)  # 1 = waiting; entries of _fifo whose flag is 0 are stale
        self._fifo: list[np.ndarray] = []
        self._n = 0  # slots waiting
        self._to_mark: list[np.ndarray] = []
        self._to_delete: list[np.ndarray] = []
        self._waiting = _EMPTY  # the waiting slots in queue order, rebuilt when stale
        self._waiting_stale = False
        self.closed = False

    def __len__(self) -> int:
        return self._n

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing to apply (read without the lock: a search's fast path)."""
        return not (self._n or self._to_mark or self._to_delete)

    def _flags(self, top: int) -> np.ndarray:
        if top > self._queued.shape[0]:
            grown = np.zeros(max(top, 2 * self._queued.shape[0]), dtype=np.uint8)
            grown[: self._queued.shape[0]] = self._queued
            self._queued = grown
        return self._queued

    def push(self, slots: np.ndarray, front: bool = False) -> None:
        """Queue distinct ``slots`` (int32) whose vectors were just written; a slot already waiting keeps its place.

        ``front=True`` puts them before the others (a chunk whose linking failed goes back where it was).
        """
        if slots.size == 0:
            return
        with self._cond:
            flags = self._flags(int(slots.max()) + 1)
            new = slots[flags[slots] == 0]
            flags[new] = 1
            self._n += int(new.size)
            if front:
                self._fifo.insert(0, new)
            else:
                self._fifo.append(new)
            self._to_mark.append(slots)
            self._waiting_stale = True
            if self._n == new.size or self._n >= LINK_CHUNK:
                self._cond.notify()  # the first slot to wait, or a full chunk

    def remove(self, slots: np.ndarray) -> None:
        """Forget ``slots`` (the store deleted them): they leave the queue and are marked deleted at the next take."""
        if slots.size == 0:
            return
        with self._cond:
            flags = self._flags(int(slots.max()) + 1)
            was = np.unique(slots[flags[slots] == 1])
            flags[was] = 0
            self._n -= int(was.size)
            self._to_delete.append(slots)
            self._waiting_stale = True

    def take(self, max_chunk: int | None) -> Taken:
        """The marks and deletions to apply, up to ``max_chunk`` (None = all) oldest slots to link, and the rest."""
        with self._cond:
            to_mark = _concat(self._to_mark)
            to_delete = _concat(self._to_delete)
            self._to_mark, self._to_delete = [], []
            chunk = _EMPTY
            if self._n and (max_chunk is None or max_chunk > 0):
                waiting = self._waiting_now()
                limit = waiting.size if max_chunk is None else min(int(max_chunk), waiting.size)
                chunk, rest = waiting[:limit], waiting[limit:]
                self._queued[chunk] = 0
                self._n -= int(chunk.size)
                self._fifo = [rest] if rest.size else []
                self._waiting, self._waiting_stale = rest, False
            return Taken(to_mark, to_delete, chunk, self._waiting_now())

    def _waiting_now(self) -> np.ndarray:
        if self._waiting_stale:
            fifo = _concat(self._fifo)
            self._waiting = fifo[self._queued[fifo] == 1] if fifo.size else _EMPTY
            self._fifo = [self._waiting] if self._waiting.size else []
            self._waiting_stale = False
        return self._waiting

    def wait_for_work(self, timeout: float, linger: float = 0.0) -> bool:
        """Block until slots are waiting, the queue is closed, or ``timeout`` passes; True if there is work.

        Once a slot waits, wait up to ``linger`` seconds more for a full chunk: a chunk of one costs almost as much
        Python and thread start-up as a chunk of a hundred.
        """
        with self._cond:
            if not self._n and not self.closed:
                self._cond.wait(timeout)
            if self._n and linger > 0:
                deadline = time.monotonic() + linger
                while self._n < LINK_CHUNK and not self.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            return bool(self._n) and not self.closed

    def close(self) -> None:
        """Wake the linker thread so that it exits."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return _EMPTY
    return parts[0] if len(parts) == 1 else np.concatenate(parts)




def start_linker(index, queue: LinkQueue) -> threading.Thread:
    """Start the daemon thread that links ``queue`` into ``index`` (``index.link_queued(n)``), a chunk per turn.

    A short backlog (single writes trickling in) is linked on one core, leaving the other to the writers; a bulk
    load's backlog on all of them. The thread holds the index only by a weak reference while it waits, so a store
    dropped without ``close()`` does not keep its index alive; it exits when the queue is closed or the index is
    gone.
    """
    ref = weakref.ref(index)

    def run() -> None:
        import numba

        all_threads = numba.config.NUMBA_NUM_THREADS
        while not queue.closed:
            if not queue.wait_for_work(timeout=1.0, linger=LINGER_S):
                if ref() is None:
                    return
                continue
            idx = ref()
            if idx is None:
                return
            try:
                numba.set_num_threads(1 if len(queue) < LINK_CHUNK else all_threads)  # this thread's setting only
                idx.link_queued(LINK_CHUNK)
            except Exception:  # the queue stays: queries scan it, and a checkpoint links it (and reports the error)
                log.exception("linking queued vectors into the HNSW graph failed; the linker thread stops")
                return
            finally:
                del idx

    thread = threading.Thread(target=run, name="vecstore-hnsw-linker", daemon=True)
    thread.start()
    return thread
