"""Background maintenance: sweep expired records, then compact if the configuration says so, on an interval.

Each step is an ordinary store call, so reads and writes from other threads interleave safely with it. Besides
``maybe_compact()`` (which counts *records*: soft-deleted, expired, hard-deleted), a pass also compacts when the old
versions that upserts with new vectors leave behind (``stats().superseded``) outnumber both the visible records
and ``min_deleted_records``: a store that only ever overwrites would otherwise grow without bound. Errors are
logged and counted, never raised into the thread's void; ``stop()`` returns once the thread has ended.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from .errors import InvalidArgumentError, InvalidArgumentTypeError, StoreClosedError, VecStoreError
from .types import CompactionResult

if TYPE_CHECKING:
    from .store import VecStore

log = logging.getLogger(__name__)


class Maintenance:
    """Runs ``store.expire_ttl_records()`` then ``store.maybe_compact()`` every ``interval_s`` seconds.

    Use it as a context manager, or call [`start`][vecstore_ref.Maintenance.start] and
    [`stop`][vecstore_ref.Maintenance.stop]:

    ```python
    with vs.Maintenance(store, interval_s=60):
        serve_requests()
    ```
    """

    def __init__(self, store: VecStore, interval_s: float = 60.0) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)):
            raise InvalidArgumentTypeError(f"interval_s must be a positive number of seconds, got "
                                           f"{type(interval_s).__name__}")
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise InvalidArgumentError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        self.store = store
        self.interval_s = float(interval_s)
        self.runs = 0
        self.expired_total = 0
        self.compactions = 0
        self.errors: list[str] = []
        self.last_result: CompactionResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> CompactionResult:
        """One maintenance pass; returns the `CompactionResult`."""
        self.expired_total += self.store.expire_ttl_records()
        result = self.store.maybe_compact()
        if not result.triggered:
            st = self.store.stats()
            cfg = self.store.compaction_config()
            if cfg.enabled and st.superseded > max(cfg.min_deleted_records, st.visible):
                reason = (f"{st.superseded:,} old versions of replaced vectors outnumber the {st.visible:,} visible "
                          f"records (and min_deleted_records {cfg.min_deleted_records:,})")
                t0 = time.perf_counter()
                removed = self.store.compact()
                result = CompactionResult(True, removed, (time.perf_counter() - t0) * 1e3, reason)
        self.compactions += int(result.triggered)
        self.runs += 1
        self.last_result = result
        return result

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except StoreClosedError:
                return
            except VecStoreError as exc:
                self.errors.append(str(exc))
                log.error("maintenance of %s failed: %s", getattr(self.store, "path", "?"), exc)

    def start(self) -> Maintenance:
        """Start the background thread (if it is not running); returns ``self``."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="vecstore-maintenance", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for it to end (after the pass it is running, if any). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Maintenance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
