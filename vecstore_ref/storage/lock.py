"""One writer per store directory: ``flock`` on ``<dir>/LOCK`` plus an in-process registry.

``flock`` locks belong to the open file description, so a second open in the same process would get its own lock
on some systems and none on others; the registry (keyed by the directory's device and inode, as LevelDB's
PosixLockTable) makes a second open in the same process fail the same way as one in another process. A process that
dies, even by kill -9, drops its flock with it: no stale lock. Network file systems may emulate flock and are not
supported.
"""

from __future__ import annotations

import fcntl
import os
import threading

from ..errors import StoreLockedError
from .format import LOCK_NAME

_registry: set[tuple[int, int]] = set()
_registry_lock = threading.Lock()


class DirectoryLock:
    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    def acquire(self) -> None:
        st = os.stat(self.directory)
        key = (st.st_dev, st.st_ino)
        with _registry_lock:
            if key in _registry:
                raise StoreLockedError(f"{self.directory} is already open for writing in this process")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _flock_holder(fd)
                os.close(fd)
                raise StoreLockedError(
                    f"{self.directory} is locked by another writer" + (f" (pid {holder})" if holder else "")
                ) from None
            _registry.add(key)
            self._fd, self._key = fd, key

    def release(self) -> None:
        with _registry_lock:
            if self._fd is None:
                return
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                _registry.discard(self._key)
                self._fd = self._key = None


def _flock_holder(fd: int) -> int | None:
    """The pid holding a flock on ``fd``'s file, from /proc/locks (Linux); None elsewhere.

    The lock file itself is never written, so a refused open changes no byte in the directory.
    """
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and "->" not in parts:
                    inode = parts[5].rsplit(":", 1)[-1]
                    if inode.isdigit() and int(inode) == st.st_ino:
                        return int(parts[4])
    except (OSError, ValueError):
        return None
    return None
