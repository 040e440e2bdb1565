"""Checkpoints: a snapshot of the state written while the store keeps serving reads and writes.

A checkpoint (``snapshot()``, the automatic one of `CheckpointConfig`, the one ``close()`` writes, and the one
that commits a compaction) runs in four steps; ``docs/concepts/durability.md`` tells the same story as numbered
states, with what a crash leaves at each.

1. **List** (no store lock): create a new, empty log segment and list it in the manifest next to the old ones,
   so that a crash from here on replays it too (nothing yet).
2. **Switch** (under the write lock, a moment; no disk write but the log's own sync): send the writes to come to
   the new segment; then, with readers kept out for the time of a few array copies, *capture* the state at the
   current sequence number ``S`` (`vecstore_ref.state.StoreState.capture`) and pause the graph's linker, so the
   graph arrays stay as captured.
3. **Write** (no store lock): the snapshot file ``snap-S.vss`` is written from the capture, checksummed and
   fsynced while writes go to the new segment and queries run; paced while writes arrive (`_WritePacer`), so
   their fsyncs do not queue behind it. The linker resumes once the file is written.
4. **Commit** (no store lock: writers never read the manifest): the manifest now names ``snap-S.vss`` and only
   the segments after ``S``; the old snapshot and segments are deleted.

The manifest's writers (steps 1 and 4, the option setters) take ``_manifest_lock``, one at a time.
Until step 4 the old snapshot and every old segment stay valid and listed, so a crash at any point opens to the
same state. The graph is saved as far as it is linked at step 2; the vectors not linked yet are queued again when
the snapshot is opened. One checkpoint runs at a time (``_ckpt_lock``).

Mixed into `vecstore_ref.store.VecStore`, like `vecstore_ref.opening` and `vecstore_ref.query`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from . import _crash
from .errors import StorageError
from .storage import layout
from .storage.format import LOG_HEADER_SIZE, RECORD_BATCH
from .storage.log import LogWriter, create_segment
from .storage.records import encode_batch
from .storage.snapshot import write_snapshot

if TYPE_CHECKING:
    from ._fs import OSFileSystem
    from .config import CheckpointConfig
    from .rwlock import ReadWriteLock
    from .state import StoreState
    from .storage.manifest import Manifest
    from .store import VecStore

log = logging.getLogger("vecstore_ref.store")

CLOSE_CHECKPOINT_LOG_BYTES = 2**20  # close() checkpoints after this much log even when nothing new was linked
# While writes arrive, a checkpoint writes its snapshot at most this fast (bytes per second), so that their fsyncs
# do not queue behind it at the disk: measured on a 1.2 GB/s virtual disk, a big file written flat out raised a
# concurrent fsynced upsert's p99 from 5.7 ms to 50 ms, in 1 MiB spans at 300 MB/s to 7.1 ms. With no writes
# arriving (close(), a snapshot() on an idle store) it writes at full speed.
PACED_WRITE_BYTES_PER_S = 256 * 2**20
RETRY_AFTER_FAILURE_S = 30.0  # an automatic checkpoint that failed is not tried again for this long
# The graph is derived data, so it is not logged: what the linker added since the last checkpoint is linked again
# after a crash. flush_index() saves the graph it linked at once; for the background linker, the checkpoint thread
# saves the graph once the linker is idle and has linked at least this share of the graph's nodes (and
# `GRAPH_CHECKPOINT_MIN_NODES`) since the last checkpoint, which bounds what a crash costs to relinking about an
# eighth of the graph (or 16k vectors, a second or so) while writing the snapshot at most once per eighth of new
# nodes. A store that is not being written to keeps its files as they are.
GRAPH_CHECKPOINT_FRACTION = 0.125
GRAPH_CHECKPOINT_MIN_NODES = 16_384  # (below it, relinking costs about as much as writing a small store's snapshot)
# A store that has gone quiet (no write for this long) saves a smaller linked share too, as soon as relinking it
# after a crash would take longer than writing the snapshot now: about 100 us per vector to link against about
# 2 ns per byte to write, so a quiet 8,000-vector store saves its graph, a quiet 1M x 128 store (a 0.5 GB
# snapshot) only once about 10k vectors wait to be saved.
GRAPH_CHECKPOINT_QUIET_S = 10.0
LINK_SECONDS_PER_NODE = 100e-6
WRITE_SECONDS_PER_BYTE = 2e-9


class CheckpointMethods:
    """Mixed into `VecStore`: writing checkpoints, and the thread that writes them when the log grows."""

    if TYPE_CHECKING:  # the store's fields these methods use (set by VecStore.__init__ or when it opens)
        path: str
        _fs: OSFileSystem
        _lock: threading.RLock
        _rw: ReadWriteLock
        _ckpt_lock: threading.Lock
        _manifest_lock: threading.Lock
        _closed: bool
        _read_only: bool
        _poisoned: str | None
        _dirty: bool
        _state: StoreState
        _manifest: Manifest
        _writer: LogWriter | None
        _checkpoint_config: CheckpointConfig
        _last_seq: int
        _seq_seen: int  # the sequence number the checkpoint thread last saw, and when (monotonic seconds)
        _seq_seen_at: float
        _snapshot_bytes: int
        _older_log_bytes: int
        _linked_at_checkpoint: int
        _last_checkpoint_at: float | None
        _ckpt_thread: threading.Thread | None
        _ckpt_wake: threading.Event
        _ckpt_stop: threading.Event
        _ckpt_retry_at: float

        def _write_manifest(self, snapshot: str | None, snapshot_seq: int, logs: list[str]) -> None: ...

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def log_bytes_since_checkpoint(self) -> int:
        """Bytes of log records written since the last checkpoint (what an open would replay)."""
        writer = self._writer
        current = max(0, writer.size - LOG_HEADER_SIZE) if writer is not None else 0
        return self._older_log_bytes + current

    def _linked_since_checkpoint(self) -> int:
        return int(getattr(self._state.index, "linked_count", 0)) - self._linked_at_checkpoint

    def _graph_checkpoint_due(self) -> bool:
        """Whether the background linker, now idle, has linked enough since the last checkpoint for the
        checkpoint thread to save the graph (see `GRAPH_CHECKPOINT_FRACTION`), or the store has gone quiet with
        more linked than the snapshot costs to write (`GRAPH_CHECKPOINT_QUIET_S`)."""
        index = self._state.index
        if (not self._checkpoint_config.enabled or time.monotonic() < self._ckpt_retry_at
                or getattr(index, "n_unlinked", 1) != 0):
            return False
        linked = self._linked_since_checkpoint()
        if linked >= max(GRAPH_CHECKPOINT_MIN_NODES, GRAPH_CHECKPOINT_FRACTION * int(index.n_nodes)):
            return True
        now = time.monotonic()
        seq = self._last_seq
        if seq != self._seq_seen:  # a write since the last look (or the first look): not quiet yet
            self._seq_seen, self._seq_seen_at = seq, now
            return False
        quiet = now - self._seq_seen_at >= GRAPH_CHECKPOINT_QUIET_S
        return (quiet and linked > 0
                and linked * LINK_SECONDS_PER_NODE >= self._snapshot_bytes * WRITE_SECONDS_PER_BYTE)

    def _save_linked_graph(self) -> None:
        """After ``flush_index()``: checkpoint if anything was linked since the last checkpoint, so that an open
        after a crash finds those vectors linked. A read-only store, or one whose log refuses writes, keeps its
        graph in memory only; a failed checkpoint is logged and retried like an automatic one (every
        acknowledged write is in the log either way)."""
        with self._ckpt_lock:
            if (self._closed or self._read_only or self._poisoned is not None or self._writer is None
                    or self._writer.poisoned or self._linked_since_checkpoint() <= 0):
                return
            try:
                self._checkpoint()
            except Exception as exc:
                self._ckpt_retry_at = time.monotonic() + RETRY_AFTER_FAILURE_S
                log.warning("store %s: saving the linked graph failed (%s); a crash before the next checkpoint "
                            "links those vectors again at the next open", self.path, exc)

    def _maybe_request_checkpoint(self) -> None:
        """After a commit: wake the checkpoint thread if the log passed both thresholds."""
        if self._ckpt_thread is None or time.monotonic() < self._ckpt_retry_at:
            return
        if self._checkpoint_config.due(self.log_bytes_since_checkpoint(), self._snapshot_bytes):
            self._ckpt_wake.set()

    def _start_checkpoint_thread(self) -> None:
        self._ckpt_thread = threading.Thread(target=_checkpoint_loop, args=(weakref.ref(self), self._ckpt_wake,
                                                                            self._ckpt_stop),
                                             name="vecstore-checkpoint", daemon=True)
        self._ckpt_thread.start()

    def _stop_checkpoint_thread(self) -> None:
        self._ckpt_stop.set()
        self._ckpt_wake.set()
        thread, self._ckpt_thread = self._ckpt_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # --- the checkpoint ---------------------------------------------------------------------------------------

    def _switch_and_capture(self, fs, new_seg: str, target: StoreState) -> tuple:
        """Step 2 of `_checkpoint`, under the write lock with the linker paused: sync the log, send the writes to
        come to the new segment (already listed in the manifest), and capture ``target`` at the current sequence
        number. No disk write here but the log's own sync (nothing to flush under the default durability)."""
        if self._writer is not None:
            self._writer.sync()
        seq = self._last_seq
        name = layout.snapshot_name(seq)
        if name == self._manifest.snapshot:
            # A second snapshot at the same seq (e.g. compaction right after a checkpoint): advance seq with an
            # empty record so that file names never repeat.
            seq = self._writer.append(RECORD_BATCH, encode_batch(None, [], None),  # type: ignore[union-attr]
                                      sync=True)  # (a checkpoint runs on a writable store: it has a writer)
            self._last_seq = seq
            name = layout.snapshot_name(seq)
        old_snapshot = self._manifest.snapshot
        try:
            new_writer = LogWriter(fs, new_seg, seq + 1)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"opening the log segment {new_seg} failed: {exc}") from exc
        _crash.crashpoint("snapshot.log_rotated")
        old_writer, self._writer = self._writer, new_writer
        self._older_log_bytes += max(0, old_writer.size - LOG_HEADER_SIZE)  # type: ignore[union-attr]
        old_writer.close()  # type: ignore[union-attr]
        with self._rw.write():
            header, arrays = target.capture()
        linked_mark = int(getattr(target.index, "linked_count", 0))
        return header, arrays, seq, name, old_snapshot, linked_mark

    def _checkpoint(self, state: StoreState | None = None, compacting: bool = False) -> None:
        """Write a snapshot of ``state`` (default: the live state) at the current sequence number; see the module
        docstring for the steps. The caller holds ``_ckpt_lock``; a compaction also holds the write lock
        throughout (its state is not live yet) and makes it live afterwards.
        """
        fs = self._fs
        # Step 1: list. The new segment is made before the write lock is taken (only checkpoints add segments, one
        # at a time), so that writers wait for no fsync of it.
        try:
            next_number = layout.parse_segment_name(self._manifest.logs[-1]) + 1
            new_seg = create_segment(fs, self.path, next_number)
        except OSError as exc:  # nothing referenced changed: the store goes on with its old files
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"starting a log segment in {self.path} failed: {exc}") from exc
        # The new segment is listed in the manifest before writers are held up: from here on a crash replays it
        # too (empty, or holding the writes that follow the switch). Writers never touch the manifest; the other
        # writers of the manifest (the option setters) take the manifest lock too.
        with self._manifest_lock:
            old_logs = list(self._manifest.logs)
            self._write_manifest(self._manifest.snapshot, self._manifest.snapshot_seq,
                                 old_logs + [os.path.basename(new_seg)])
        # The linker is paused under the write lock: a writer holding that lock may be linking a backlog itself
        # (`HNSWIndex.link_backlog`), which waits while the linker is paused.
        target = self._state if state is None else state
        index = target.index
        paused = False
        try:
            with self._lock:  # step 2: switch
                target = self._state if state is None else state
                index = target.index
                if getattr(index, "pause_linking", None) is not None:
                    index.pause_linking()  # waits for the chunk being linked; readers go on meanwhile
                    paused = True
                header, arrays, seq, name, old_snapshot, linked_mark = self._switch_and_capture(fs, new_seg, target)
        except BaseException:
            if paused:
                index.resume_linking()
            raise
        header["seq"] = seq
        header["created_at"] = time.time()
        try:  # step 3: write (writes and queries go on meanwhile)
            size = write_snapshot(fs, self.path, name, header, arrays, pace=_WritePacer(self))
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"writing a snapshot of {self.path} failed: {exc}") from exc
        finally:
            del arrays
            if paused:
                index.resume_linking()
        if compacting:
            _crash.crashpoint("compact.snapshot_written")
        with self._manifest_lock:  # step 4: commit (writers go on: they do not read the manifest)
            logs_now = [n for n in self._manifest.logs if n not in old_logs]
            self._write_manifest(name, seq, logs_now)
        _crash.crashpoint("compact.manifest_swapped" if compacting else "snapshot.manifest_swapped")
        older = sum(fs.size(os.path.join(self.path, n)) - LOG_HEADER_SIZE for n in logs_now[:-1])
        with self._lock:
            self._older_log_bytes = older
            self._snapshot_bytes = size
            self._last_checkpoint_at = header["created_at"]
            self._linked_at_checkpoint = linked_mark if state is None else 0
            self._dirty = False
        try:  # the old files are no longer named by the manifest: removed without holding up writers
            for old in old_logs + ([old_snapshot] if old_snapshot else []):
                try:
                    fs.unlink(os.path.join(self.path, old))
                except FileNotFoundError:
                    pass
            fs.fsync_dir(self.path)
        except OSError as exc:  # the new state is committed; leftovers are removed at the next open
            log.warning("store %s: could not remove old files after a checkpoint: %s", self.path, exc)
        _crash.crashpoint("compact.old_files_unlinked" if compacting else "snapshot.old_files_unlinked")

    def _run_auto_checkpoint(self) -> None:
        """The checkpoint thread's turn: checkpoint if still due (and the store still open and writable)."""
        with self._ckpt_lock:
            if self._closed or self._read_only or self._poisoned is not None:
                return
            if not (self._checkpoint_config.due(self.log_bytes_since_checkpoint(), self._snapshot_bytes)
                    or self._graph_checkpoint_due()):
                return
            try:
                self._checkpoint()
            except Exception as exc:  # the store goes on with its old files; writes are not affected
                self._ckpt_retry_at = time.monotonic() + RETRY_AFTER_FAILURE_S
                log.warning("store %s: an automatic checkpoint failed (%s); retrying in %.0f s", self.path, exc,
                            RETRY_AFTER_FAILURE_S)
            else:
                log.info("store %s: checkpoint written at seq %d (%.1f MB)", self.path, self._manifest.snapshot_seq,
                         self._snapshot_bytes / 1e6)

    def _close_checkpoint_due(self) -> bool:
        """Whether ``close()`` writes a checkpoint: something was linked into the graph since the last one (so the
        next open relinks nothing), or the log holds enough to make replaying it cost more than writing it."""
        if self._read_only or self._poisoned is not None or self._writer is None or self._writer.poisoned:
            return False
        # Linking goes on after a checkpoint with no new write (a snapshot() right after a bulk load, say): the
        # graph linked since then is saved even when the log holds nothing new.
        return (self._linked_since_checkpoint() > 0
                or self.log_bytes_since_checkpoint() >= CLOSE_CHECKPOINT_LOG_BYTES)


class _WritePacer:
    """Slows a checkpoint's snapshot write to `PACED_WRITE_BYTES_PER_S` for as long as writes keep arriving (the
    store's sequence number moves between two calls); idle, it lets the write run at the disk's speed."""

    def __init__(self, store: CheckpointMethods, rate: float = PACED_WRITE_BYTES_PER_S):
        self._store = store
        self._rate = rate
        self._seq = store._last_seq
        self._at = time.monotonic()
        self._written = 0

    def __call__(self, written: int) -> None:
        now = time.monotonic()
        seq = self._store._last_seq
        if seq != self._seq:  # writes arrived during this span: give the disk the time the rate allows for it
            wait = (written - self._written) / self._rate - (now - self._at)
            if wait > 0:
                time.sleep(wait)
                now = time.monotonic()
        self._seq, self._at, self._written = seq, now, written


def _checkpoint_loop(ref: weakref.ref[VecStore], wake: threading.Event, stop: threading.Event) -> None:
    """The checkpoint thread: wait for a wake-up, then let the store checkpoint if it is due. Holds the store only
    by a weak reference while waiting, so a store dropped without ``close()`` can still be collected."""
    while not stop.is_set():
        wake.wait(timeout=5.0)
        wake.clear()
        if stop.is_set():
            return
        store = ref()
        if store is None:
            return
        try:
            store._run_auto_checkpoint()
        finally:
            del store
