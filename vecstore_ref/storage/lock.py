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
                holder = ""
                try:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                finally:
                    os.close(fd)
                raise StoreLockedError(
                    f"{self.directory} is locked by another writer" + (f" (pid {holder})" if holder else "")
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
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
