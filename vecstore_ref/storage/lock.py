"""One writer per store directory: ``flock`` on ``<dir>/LOCK`` plus a process-wide registry.

Why both: on Linux a ``flock`` belongs to an open file description, so a second ``open`` of LOCK in the same
process already conflicts with the first; but where ``flock`` is emulated with ``fcntl`` record locks (which belong
to the process) it would not, and the error message should say that the holder is this very process. The registry,
keyed by the directory's ``(st_dev, st_ino)`` like LevelDB's ``PosixLockTable``, makes a second acquire in the same
process (any thread) fail at once, whatever path reached the directory. Both cases raise
:class:`~vecstore_ref.errors.StoreLockedError` naming the holder's pid.

A process that dies, even by ``kill -9``, drops its flock with its last file descriptor: there is no stale lock to
clean up. Network file systems may emulate ``flock`` and are not supported.

By default the LOCK file is never written, so that an open that fails after taking the lock (a corrupt log, a
format from the future) leaves every byte of the directory as it was; the holder's pid comes from ``/proc/locks``
(Linux). ``DirectoryLock(directory, write_pid=True)`` also writes the holder's pid into LOCK, for platforms
without ``/proc/locks``. See ``docs/concepts/storage-format.md`` and ``docs/concepts/durability.md``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading

from .._fs import open_directory, open_file
from ..errors import StorageError, StoreLockedError
from .format import LOCK_NAME

_registry: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) of a locked directory -> the LOCK fd holding it
_registry_lock = threading.Lock()
_FLAGS = os.O_RDWR | os.O_CREAT  # open_file adds O_NOFOLLOW and O_CLOEXEC


class DirectoryLock:
    """The exclusive write lock of one store directory.

    Args:
        directory: the store directory (must exist).
        write_pid: also write this process's pid into LOCK after locking (see the module docstring).
    """

    def __init__(self, directory: str, *, write_pid: bool = False):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self.write_pid = write_pid
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or fail at once.

        Raises:
            StoreLockedError: another ``DirectoryLock`` in this process, or another process, holds it.
            UnsafePathError: LOCK, or a directory on the way below a root, is a symbolic link.
            StorageError: LOCK cannot be opened (permissions, a non-regular file).
        """
        if self._fd is not None:
            raise StoreLockedError(f"{self.directory} is already locked by this DirectoryLock")
        dir_fd = open_directory(self.directory)
        try:
            st = os.fstat(dir_fd)
        finally:
            os.close(dir_fd)
        key = (st.st_dev, st.st_ino)
        with _registry_lock:
            if key in _registry:
                raise StoreLockedError(f"{self.directory} is already open for writing in this process "
                                       f"(pid {os.getpid()})")
            try:
                fd = open_file(self.path, _FLAGS, 0o644)  # never through a symbolic link (UnsafePathError)
            except StorageError:
                raise
            except OSError as exc:
                raise StorageError(f"cannot open the lock file {self.path}: {exc}") from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise StorageError(f"the lock file {self.path} is not a regular file")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise StorageError(f"cannot lock {self.path}: {exc}") from exc
                    holder = _holder_pid(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise StoreLockedError(f"{self.directory} is locked by {who}, which has it open for "
                                           "writing") from None
                if self.write_pid:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            except BaseException:
                os.close(fd)
                raise
            _registry[key] = fd
            self._fd, self._key = fd, key

    def release(self) -> None:
        """Drop the lock. Idempotent. The LOCK file stays (removing it would race with the next locker)."""
        with _registry_lock:
            if self._fd is None:
                return
            fd, key = self._fd, self._key
            self._fd = self._key = None
            if _registry.get(key) == fd:
                del _registry[key]
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def holder_pid(self) -> int | None:
        """The pid holding the lock on this directory (this process if we hold it), or None if unknown or free."""
        if self._fd is not None:
            return os.getpid()
        try:
            fd = open_file(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return _holder_pid(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder_pid(fd: int) -> int | None:
    """The pid holding a flock on ``fd``'s file: from /proc/locks (Linux), else the pid written in the file."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    by_inode: set[int] = set()
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                # "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF"; lines with "->" are blocked waiters.
                parts = line.split()
                if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts or not parts[4].isdigit():
                    continue
                if parts[5] == dev:
                    return int(parts[4])
                if parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
                    by_inode.add(int(parts[4]))  # overlay file systems may report another device number
    except OSError:
        pass
    if len(by_inode) == 1:
        return by_inode.pop()
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
