"""Named crash points for kill -9 tests.

``crashpoint(name)`` marks a place where the process may die and the store must still open afterwards with every
acknowledged write in it. In normal use it costs one global check and returns. Two environment variables, read at
import (and again by :func:`reload_from_env`), turn it on:

- ``VECSTORE_CRASH_AT="name:n"``: on the n-th hit of ``name`` the process sends itself SIGKILL. The kernel keeps
  what was written (page cache), exactly as after a real ``kill -9``; to test what an fsync protects against, use
  ``FaultFS.drop_unsynced`` instead (``vecstore_ref/_fs.py``). ``"name"`` alone means ``"name:1"``.
- ``VECSTORE_CRASH_LOG=path``: every hit appends ``name`` as one line to ``path``, so a parent process can list
  which points a workload passes and how often (and pick ``n`` for the next run).

:data:`CRASH_POINTS` names every crash point in the library; tests iterate over it. See
``docs/concepts/durability.md`` for what must hold at each one, and ``docs/concepts/storage-format.md`` for the
files involved.
"""

from __future__ import annotations

import os
import signal

CRASH_POINTS: tuple[str, ...] = (
    # storage/log.py
    "segment.created",  # a new segment holds its header, fsynced, directory fsynced
    "log.before_append",  # the record is framed, nothing written
    "log.after_write",  # the whole record is in the page cache, not fsynced
    "log.after_fsync",  # the record is durable (or, with sync=False, written), not yet acknowledged
    # _fs.write_atomic with crash_prefix="snapshot" (storage/snapshot.py)
    "snapshot.tmp_written",
    "snapshot.tmp_fsynced",
    "snapshot.renamed",
    "snapshot.dir_fsynced",
    # _fs.write_atomic with crash_prefix="manifest" (storage/manifest.py)
    "manifest.tmp_written",
    "manifest.tmp_fsynced",
    "manifest.renamed",
    "manifest.dir_fsynced",
    # recovery (storage/log.py, store.py)
    "recover.truncating_tail",  # a torn tail was found; about to cut it off
    "recover.replaying",  # about to apply one replayed record
    # the store (store.py)
    "batch.before_append",
    "batch.after_fsync",
    "batch.before_ack",
    "snapshot.log_rotated",  # checkpoint step 1: a new segment is listed beside the old files (checkpoint.py)
    "snapshot.manifest_swapped",  # checkpoint step 3: the manifest names the new snapshot; old files still there
    "snapshot.old_files_unlinked",  # checkpoint step 3 done: the old snapshot and segments are gone
    "compact.state_built",
    "compact.snapshot_written",
    "compact.manifest_swapped",
    "compact.old_files_unlinked",
    # namespaces (namespaces.py)
    "backup.files_written",  # the backup's files and BACKUP.json are in its temporary directory
    "restore.staged",  # the backup is copied and verified in a staging directory
    "restore.generation_renamed",  # the staging directory is the next generation; NAMESPACE.json names the old
    "restore.switched",  # NAMESPACE.json names the new generation; the old one is not removed yet
)

ENV_CRASH_AT = "VECSTORE_CRASH_AT"
ENV_CRASH_LOG = "VECSTORE_CRASH_LOG"

_active = False  # the only thing the fast path reads: True when either variable is set
_target: str | None = None
_target_hit = 0
_log_path: str | None = None
_hits: dict[str, int] = {}


def reload_from_env() -> None:
    """Read ``VECSTORE_CRASH_AT`` and ``VECSTORE_CRASH_LOG`` again and reset the hit counters.

    Raises:
        ValueError: ``VECSTORE_CRASH_AT`` is not ``name`` or ``name:n`` with n >= 1. A malformed value must not
            silently disable the crash a test asked for.
    """
    global _active, _target, _target_hit, _log_path
    spec = os.environ.get(ENV_CRASH_AT, "")
    target, hit = None, 0
    if spec:
        name, sep, count = spec.rpartition(":")
        if not sep:
            name, count = spec, "1"
        if not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV_CRASH_AT} must be 'name:n' with n >= 1; got {spec!r}")
        target, hit = name, int(count)
    _target, _target_hit = target, hit
    _log_path = os.environ.get(ENV_CRASH_LOG) or None
    _hits.clear()
    _active = _target is not None or _log_path is not None


def crashpoint(name: str) -> None:
    """Mark a point where a crash must be survivable; die here (SIGKILL) if the environment asks for it."""
    if not _active:
        return
    count = _hits.get(name, 0) + 1
    _hits[name] = count
    if _log_path is not None:
        # O_APPEND: lines from several threads or processes never interleave within a line.
        fd = os.open(_log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (name + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    if name == _target and count == _target_hit:
        os.kill(os.getpid(), signal.SIGKILL)


def hit_counts() -> dict[str, int]:
    """How often each crash point was passed since the last :func:`reload_from_env` (only counted while active)."""
    return dict(_hits)


reload_from_env()
