"""Running one call on every in-process shard at once.

A query on N shards is N searches that should run side by side. The store kernels release the GIL, so threads
give real parallelism; what costs is handing work to a thread and being told it is done. ``ShardThreads``
keeps that small: one persistent worker per shard but the first, fed through a C-level queue and answered through a
plain lock, while the calling thread runs the first shard's part itself instead of sleeping. (A
``concurrent.futures`` pool builds a future, a condition and a waiter lock per task, and leaves the caller idle.)

``ExecutorFanout`` runs the same calls on any ``concurrent.futures.Executor`` the caller supplies.

Both return one outcome per item, in order: the call's value, or the exception it raised (as the value), and
return only when every call has finished, so no shard is still working when the caller sees an error.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from queue import SimpleQueue


def _outcome(fn: Callable, item):
    try:
        return fn(item)
    except BaseException as exc:  # handed to the caller, who raises it (or reports the shard as missing)
        return exc


class ShardThreads:
    """``run(fn, items)``: ``fn(items[0])`` in the calling thread, ``fn(items[j])`` on worker ``j - 1``."""

    def __init__(self, n_workers: int, name: str = "vecstore-shard"):
        self._queues: list[SimpleQueue] = [SimpleQueue() for _ in range(n_workers)]
        self._threads = [threading.Thread(target=self._work, args=(q,), name=f"{name}-{i + 1}", daemon=True)
                         for i, q in enumerate(self._queues)]
        self._closed = False
        for t in self._threads:
            t.start()

    @staticmethod
    def _work(queue: SimpleQueue) -> None:
        while True:
            task = queue.get()
            if task is None:
                return
            fn, item, box, done = task
            box.append(_outcome(fn, item))
            done.release()

    def run(self, fn: Callable, items: Sequence) -> list:
        if self._closed:
            raise RuntimeError("the shard threads are closed")
        pending = []
        n = len(self._queues)
        for j in range(1, len(items)):
            box: list = []
            done = _thread.allocate_lock()
            done.acquire()
            self._queues[(j - 1) % n].put((fn, items[j], box, done))
            pending.append((box, done))
        out = [_outcome(fn, items[0])] if items else []
        for box, done in pending:
            done.acquire()
            out.append(box[0])
        return out

    def close(self) -> None:
        """Stop the workers once they finish what they hold. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()


class ExecutorFanout:
    """The same contract on a caller's ``concurrent.futures.Executor`` (which the caller also shuts down)."""

    def __init__(self, executor: Executor):
        self._executor = executor

    def run(self, fn: Callable, items: Sequence) -> list:
        futures = [self._executor.submit(_outcome, fn, item) for item in items]
        return [f.result() for f in futures]

    def close(self) -> None:
        pass
