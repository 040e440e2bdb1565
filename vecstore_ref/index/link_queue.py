"""Vectors written but not yet linked into the HNSW graph, and the thread that links them.

Linking a vector into the graph (a search with ``ef_construction`` plus neighbour updates) costs far more than
writing it: ~90 us against ~10 us per vector here. So a write does not wait for it. The store appends the record
to the log, puts the vector in the table and queues its slot here; the write is acknowledged, and a background
thread links the queue in chunks, oldest first. Until a slot is linked, queries scan it exactly (it is a short
list) and merge it with the graph's results, so a write is visible to the next query like any other.

:class:`LinkQueue` is the bookkeeping, safe to call from any thread; the graph itself is changed only by the
index, under its own lock (see `vecstore_ref.index.hnsw.HNSWIndex.link_queued`). A slot is in one of three
places:

- *waiting*: queued, in write order;
- *in flight*: taken by the linker, being linked right now (the graph may already hold some of its links);
- neither: linked, or removed by the store before it was linked.

Queries scan the waiting and in-flight slots exactly (`LinkQueue.for_search`), and the walk skips them (it marks
them visited first), so a slot being linked is found exactly once. A slot the store removes while it is in flight
is reported by `LinkQueue.done`, so the index can mark it deleted once its chunk is linked.

Other index engines do the same: Qdrant and Milvus search segments that are not indexed yet by brute force while
an optimizer builds their graph.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

import numpy as np

from .base import DTYPE_SLOT

log = logging.getLogger("vecstore_ref")

_EMPTY = np.zeros(0, dtype=DTYPE_SLOT)
LINK_CHUNK = 256  # slots linked per turn of the background thread (about 20 ms at ef_construction=200, 2 cores)
LINGER_S = 0.02  # how long the thread waits for a full chunk once a slot is waiting


class LinkQueue:
    """A FIFO of slots waiting to be linked; a slot is in it at most once."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._queued = np.zeros(1024, dtype=np.uint8)  # 1 = waiting; entries of _fifo whose flag is 0 are stale
        self._fifo: list[np.ndarray] = []
        self._n = 0  # slots waiting
        self._in_flight = _EMPTY
        self._removed_in_flight: list[np.ndarray] = []
        self._waiting = _EMPTY  # the waiting slots in queue order, rebuilt when stale
        self._waiting_stale = False
        self._for_search = _EMPTY  # waiting + in flight, rebuilt when stale
        self._search_stale = False
        self.closed = False

    def __len__(self) -> int:
        """Slots waiting (not counting the chunk in flight)."""
        return self._n

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in flight (read without the lock: a search's fast path)."""
        return not self._n and not self._in_flight.size

    @property
    def n_unlinked(self) -> int:
        return self._n + int(self._in_flight.size)

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
            self._waiting_stale = self._search_stale = True
            if self._n == new.size or self._n >= LINK_CHUNK:
                self._cond.notify()  # the first slot to wait, or a full chunk

    def remove(self, slots: np.ndarray) -> None:
        """Forget ``slots`` (the store deleted them): they leave the queue, or are reported by :meth:`done` if they
        are in flight."""
        if slots.size == 0:
            return
        with self._cond:
            flags = self._flags(int(slots.max()) + 1)
            was = np.unique(slots[flags[slots] == 1])
            flags[was] = 0
            self._n -= int(was.size)
            if self._in_flight.size:
                hit = slots[np.isin(slots, self._in_flight)]
                if hit.size:
                    self._removed_in_flight.append(hit)
            self._waiting_stale = self._search_stale = True

    def take(self, max_chunk: int | None) -> np.ndarray:
        """Up to ``max_chunk`` (None = all) of the oldest waiting slots, now in flight until :meth:`done`."""
        with self._cond:
            if not self._n or (max_chunk is not None and max_chunk <= 0):
                return _EMPTY
            waiting = self._waiting_now()
            limit = waiting.size if max_chunk is None else min(int(max_chunk), waiting.size)
            chunk, rest = waiting[:limit], waiting[limit:]
            # In flight before it leaves the count: `idle` is read without the lock, and must never see a moment
            # where the chunk is in neither place.
            self._in_flight = chunk
            self._search_stale = True
            self._queued[chunk] = 0
            self._n -= int(chunk.size)
            self._fifo = [rest] if rest.size else []
            self._waiting, self._waiting_stale = rest, False
            return chunk

    def done(self, failed: bool = False) -> np.ndarray:
        """The chunk in flight is linked (or, with ``failed``, goes back to the front of the queue); returns the
        slots of it that were removed meanwhile."""
        with self._cond:
            chunk, self._in_flight = self._in_flight, _EMPTY
            removed = np.concatenate(self._removed_in_flight) if self._removed_in_flight else _EMPTY
            self._removed_in_flight = []
            self._search_stale = True
        if failed:
            keep = chunk[~np.isin(chunk, removed)] if removed.size else chunk
            self.push(keep, front=True)
        return removed

    def waiting(self) -> np.ndarray:
        with self._cond:
            return self._waiting_now()

    def for_search(self) -> np.ndarray:
        """The slots a query scans exactly: waiting and in flight (int32, a consistent copy)."""
        if self.idle:
            return _EMPTY
        with self._cond:
            if self._search_stale:
                waiting = self._waiting_now()
                self._for_search = (np.concatenate([self._in_flight, waiting]) if self._in_flight.size
                                    else waiting)
                self._search_stale = False
            return self._for_search

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
        from ..jit import load

        load("hnsw_build")  # the build kernels, through the library's loader: numba is imported there, under its
        import numba  # lock (importing it from two threads at once can leave one with a half-initialized module)

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
                limit = idx.link_threads or all_threads
                numba.set_num_threads(1 if len(queue) < LINK_CHUNK else min(limit, all_threads))  # this thread only
                idx.link_queued(LINK_CHUNK, from_linker=True)
            except Exception:  # the queue stays: queries scan it, flush_index() links it (and reports the error)
                log.exception("linking queued vectors into the HNSW graph failed; the linker thread stops")
                return
            finally:
                del idx

    thread = threading.Thread(target=run, name="vecstore-hnsw-linker", daemon=True)
    thread.start()
    return thread
