"""Running one call on every in-process shard at once.

A query on N shards is N searches that should run side by side. The store kernels release the GIL, so threads
give real parallelism; what costs is handing work to a thread and being told it is done. A single query on a
shard takes about 50 us, and on a virtual machine each time a thread sleeps and is woken costs tens of
microseconds: with a queue and a lock, two shards answered a single query more slowly than one thread searching
both in turn. So ``ShardThreads`` hands work over without sleeping when it can:

- persistent workers, at most one per usable core beyond the caller's (none on one core): a part handed to a
  thread without a core of its own only waits for one. The calling thread runs the first part, and any part
  for which no worker is free, itself;
- a task is posted by writing it into the worker's slot and setting one byte (``POSTED``); the result comes back
  the same way (``DONE``);
- a thread waiting for a byte spins on it without the GIL for a bounded time (`vecstore_ref.kernels.fanout_wait`:
  about 120 us for a worker waiting for its next task, about 1 ms for a caller waiting for a result, in spin
  rounds measured on the machine), and only then sleeps on the worker's condition, announcing it with its own
  byte so that the other side wakes it;
- only one caller at a time spins: with several, every core may have a search to run and a spinner would take
  one from them. With as many callers as usable cores (four HTTP clients on two cores) nothing is handed over
  at all: each caller runs all of its parts itself;
- with Numba's JIT disabled nobody spins (a pure-Python spin would hold the GIL).

Several callers may fan out at once (HTTP clients on one sharded store): a caller that finds a worker busy with
another caller's task runs that shard's part itself, so nobody queues behind anybody.

``ExecutorFanout`` runs the same calls on any ``concurrent.futures.Executor`` the caller supplies.

Both return one outcome per item, in order: the call's value, or the exception it raised (as the value), and
return only when every call has finished, so no shard is still working when the caller sees an error.
"""

from __future__ import annotations

import _thread
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np

from ..handoff import FLAGS, IN_PYTHON, current_slot
from ..jit import usable_cores

T = TypeVar("T")

# The bytes of a worker's signal.
POSTED = 0  # a task is in the worker's slot (set by the caller, cleared by the worker when it takes it)
DONE = 1  # the outcome is in the worker's slot (cleared by the caller when it posts)
WORKER_ASLEEP = 2  # the worker sleeps on its condition: notify it after posting
CALLER_ASLEEP = 3  # the caller sleeps on the worker's condition: notify it when done

WORKER_WAIT_US = 120.0  # the next query of a loop of single queries comes well within it
CALLER_WAIT_US = 1000.0  # longer than a single query on a shard; a batch sleeps after it

_STOP = object()  # the task that ends a worker


def _outcome(fn: Callable[[T], Any], item: T) -> Any:
    try:
        return fn(item)
    except BaseException as exc:  # handed to the caller, who raises it (or reports the shard as missing)
        return exc


def _look_once(signal: np.ndarray, index: int, in_python: np.ndarray, me: int, spins: int) -> int:
    """The wait when nothing spins: 1 if the byte is already set, else 0 (then the thread sleeps)."""
    return 1 if signal[index] else 0


def _spinning_allowed() -> bool:
    """Spinning needs a second core (on one, the spinner only delays the thread it waits for) and compiled code
    (a pure-Python spin would hold the GIL)."""
    return os.environ.get("NUMBA_DISABLE_JIT") != "1" and usable_cores() >= 2


class _Worker:
    """One worker thread's slot: its signal bytes, the task or outcome, and who may post to it."""

    __slots__ = ("signal", "view", "cond", "busy", "task", "outcome", "abandoned", "thread")

    def __init__(self) -> None:
        self.signal = bytearray(4)  # Python writes here (a bytearray store is the cheapest) ...
        self.view = np.frombuffer(self.signal, dtype=np.uint8)  # ... and the wait kernel reads the same bytes
        self.cond = threading.Condition(threading.Lock())
        self.busy = _thread.allocate_lock()  # held by the caller whose task the worker has
        self.task: Any = None
        self.outcome: Any = None
        self.abandoned = False  # the caller left (interrupted) before the outcome came: the worker frees itself
        self.thread: threading.Thread | None = None


class ShardThreads:
    """``run(fn, items)``: ``fn(items[0])`` in the calling thread, the others on free workers, and the rest (no
    worker free, or as many callers as cores) in the calling thread, in turn. ``n_workers`` is the most that
    are useful (the shard count minus one); fewer are started on a machine with fewer cores."""

    def __init__(self, n_workers: int, name: str = "vecstore-shard") -> None:
        # At most one worker per core beyond the caller's: a part handed to a thread that has no core of its own
        # only waits for one (4 shards on 2 cores answered faster searched in turn than handed to 3 workers).
        # Then every spinning thread has a core.
        n_workers = min(n_workers, usable_cores() - 1)
        self._spin = _spinning_allowed() and n_workers > 0
        self._await: Callable[..., int] = _look_once  # replaced by the spinning kernel below
        self._worker_spins = self._caller_spins = 0
        if self._spin:
            from ..jit import load

            wait = load("fanout_wait")
            self._await = wait.await_flag
            rounds_for = wait.rounds_for
            self._worker_spins, self._caller_spins = rounds_for(WORKER_WAIT_US), rounds_for(CALLER_WAIT_US)
        self._workers = [_Worker() for _ in range(n_workers)]
        self._closed = False
        self._cores = usable_cores()
        self._callers = 0  # threads inside `run` now (under ``_callers_lock``)
        self._callers_lock = _thread.allocate_lock()
        for i, w in enumerate(self._workers):
            w.thread = threading.Thread(target=self._work, args=(w,), name=f"{name}-{i + 1}", daemon=True)
            w.thread.start()

    def _work(self, w: _Worker) -> None:
        slot = current_slot()
        signal, view, wait = w.signal, w.view, self._await
        while True:
            spin = self._spin and self._callers <= 1  # a hint: read without the lock
            if not signal[POSTED] and (not spin or not wait(view, POSTED, IN_PYTHON, slot, self._worker_spins)):
                FLAGS[slot] = 0  # not in Python while it sleeps (the kernel clears it only when it spins)
                with w.cond:
                    signal[WORKER_ASLEEP] = 1
                    while not signal[POSTED]:
                        w.cond.wait()
                    signal[WORKER_ASLEEP] = 0
            signal[POSTED] = 0
            task, w.task = w.task, None
            if task is _STOP:
                FLAGS[slot] = 0
                return
            fn, item = task
            outcome = _outcome(fn, item)
            if self._spin:
                FLAGS[slot] = 1  # in Python until the wait kernel starts (see vecstore_ref.handoff)
            with w.cond:
                if w.abandoned:
                    w.abandoned = False
                    w.busy.release()
                else:
                    w.outcome = outcome
                    signal[DONE] = 1
                    if signal[CALLER_ASLEEP]:
                        w.cond.notify_all()

    def _post(self, w: _Worker, task: Any) -> None:
        signal = w.signal
        signal[DONE] = 0
        w.task = task
        signal[POSTED] = 1
        if signal[WORKER_ASLEEP]:
            with w.cond:
                w.cond.notify_all()

    def _collect(self, w: _Worker, slot: int, spin: bool) -> Any:
        signal = w.signal
        if not signal[DONE] and (not spin or not self._await(w.view, DONE, IN_PYTHON, slot, self._caller_spins)):
            with w.cond:
                signal[CALLER_ASLEEP] = 1
                try:
                    while not signal[DONE]:
                        w.cond.wait()
                finally:
                    signal[CALLER_ASLEEP] = 0
        out, w.outcome = w.outcome, None
        w.busy.release()
        return out

    def run(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        if self._closed:
            raise RuntimeError("the shard threads are closed")
        n = len(items)
        if n == 1:  # nothing to hand over
            return [_outcome(fn, items[0])]
        out: list[Any] = [None] * n
        slot = current_slot()
        posted: list[tuple[int, _Worker]] = []
        inline = list(range(min(n, 1)))
        free = iter(self._workers)
        with self._callers_lock:
            self._callers += 1
            spin = self._spin and self._callers == 1
            spread = self._callers < self._cores  # a core is free for a worker
        if spin:
            FLAGS[slot] = 1  # in Python until this thread's own search starts (see vecstore_ref.handoff)
        try:
            for j in range(1, n):
                w = next((w for w in free if w.busy.acquire(False)), None) if spread else None
                if w is None:
                    inline.append(j)
                    continue
                self._post(w, (fn, items[j]))
                posted.append((j, w))
            for j in inline:
                out[j] = _outcome(fn, items[j])
            while posted:
                j, w = posted[0]
                out[j] = self._collect(w, slot, spin)
                posted.pop(0)
        except BaseException:
            for _, w in posted:  # interrupted: each worker frees itself when its call ends
                with w.cond:
                    if w.signal[DONE]:
                        w.outcome = None
                        w.busy.release()
                    else:
                        w.abandoned = True
            raise
        finally:
            if spin:
                FLAGS[slot] = 0
            with self._callers_lock:
                self._callers -= 1
        return out

    def close(self) -> None:
        """Stop the workers once they finish what they hold. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            w.busy.acquire()  # after any caller's task
            self._post(w, _STOP)
        for w in self._workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join()


class ExecutorFanout:
    """The same contract on a caller's ``concurrent.futures.Executor`` (which the caller also shuts down)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def run(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        futures = [self._executor.submit(_outcome, fn, item) for item in items]
        return [f.result() for f in futures]

    def close(self) -> None:
        pass
