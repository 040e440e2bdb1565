"""A reader-writer lock: many readers at once, or one writer, and a waiting writer goes first.

The store's reads (queries, ``get``, ``stats``) share the lock; a write takes it alone only for the moment it
changes the in-memory state, after its log record is durable (see ``docs/concepts/concurrency.md``). So a read
waits at most for one write's in-memory apply, never for an fsync, a checkpoint or a compaction; and a read sees
either all of a write (or a batch) or none of it.

Writer preference: once a writer waits, new readers queue behind it, so a stream of overlapping reads cannot
starve writes. The lock is not reentrant for writers, and a reader must not ask for the write side.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Shared (``read``) and exclusive (``write``) locking, with writer preference.

    The common case, a reader while no writer holds or wants the lock, costs one uncontended mutex: readers and
    writers count themselves under ``_mutex``, and only a thread that must wait sleeps on ``_cond``.
    """

    __slots__ = ("_mutex", "_cond", "_readers", "_writer", "_writers_waiting")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0  # readers inside
        self._writer = False  # a writer inside
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        mutex = self._mutex
        mutex.acquire()
        if self._writer or self._writers_waiting:
            try:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
            except BaseException:
                mutex.release()
                raise
        self._readers += 1
        mutex.release()

    def release_read(self) -> None:
        mutex = self._mutex
        mutex.acquire()
        self._readers -= 1
        if self._readers == 0 and self._writers_waiting:
            self._cond.notify_all()
        mutex.release()

    def acquire_write(self) -> None:
        with self._mutex:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._mutex:
            self._writer = False
            self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()
