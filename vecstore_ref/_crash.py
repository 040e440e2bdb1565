"""Named crash points for kill -9 tests.

``crashpoint(name)`` does nothing unless the environment variable ``VECSTORE_CRASH_AT="name:n"`` is set; then the
process kills itself with SIGKILL on the n-th hit of that name, exactly like a power-cord pull as far as the process
is concerned (the kernel keeps what was written). With ``VECSTORE_CRASH_LOG=path`` every hit is appended to that
file, so a test can list which points a workload passes and how often. See ``docs/concepts/reliability.md``.
"""

from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "log.before_append",
    "log.after_write",
    "log.after_fsync",
    "segment.created",
    "snapshot.tmp_written",
    "snapshot.tmp_fsynced",
    "snapshot.renamed",
    "snapshot.dir_fsynced",
    "manifest.tmp_written",
    "manifest.tmp_fsynced",
    "manifest.renamed",
    "manifest.dir_fsynced",
    "snapshot.log_rotated",
    "batch.before_append",
    "batch.after_fsync",
    "batch.before_ack",
    "compact.state_built",
    "compact.old_files_unlinked",
    "recover.truncating_tail",
    "recover.replaying",
)

_target: str | None = None
_target_hit = 0
_log_path: str | None = None
_hits: dict[str, int] = {}


def reload_from_env() -> None:
    """Read ``VECSTORE_CRASH_AT`` and ``VECSTORE_CRASH_LOG`` again (tests that set them in-process call this)."""
    global _target, _target_hit, _log_path
    spec = os.environ.get("VECSTORE_CRASH_AT")
    _target, _target_hit = None, 0
    if spec:
        name, _, n = spec.rpartition(":")
        _target, _target_hit = name, int(n)
    _log_path = os.environ.get("VECSTORE_CRASH_LOG") or None
    _hits.clear()


def crashpoint(name: str) -> None:
    """Mark a point where a crash must be survivable; kill the process here if the environment asks for it."""
    if _target is None and _log_path is None:
        return
    count = _hits.get(name, 0) + 1
    _hits[name] = count
    if _log_path is not None:
        with open(_log_path, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if name == _target and count == _target_hit:
        os.kill(os.getpid(), signal.SIGKILL)


reload_from_env()
