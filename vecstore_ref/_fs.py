"""The file-system layer: every byte the store reads or writes goes through one of these objects.

`OSFileSystem` is the real thing, with the fsync discipline of ``docs/concepts/durability.md`` built in:
`OSFileSystem.write_atomic` writes a temp file in the same directory, fsyncs it, renames it over the target
and fsyncs the directory, so that a crash leaves the old file or the new one, never a mix.

`FaultFS` is the same with faults injected for tests, after LevelDB's ``fault_injection_test``: it fails
the n-th operation of a kind (ENOSPC, EIO, short writes) and simulates a power cut by dropping every byte and
every directory change that was not yet made durable (see its docstring for exactly what it models).

No symbolic link is followed below a root: a path is opened one directory at a time, each relative to the one
before with O_NOFOLLOW, and the operation acts on the last directory's descriptor (see `add_root` for what
counts as a root and which part of a path is trusted). A link in the way raises ``UnsafePathError`` before
anything is read, written or deleted.

The store takes an explicit ``fs`` or uses the process-wide default (`get_fs`, `set_fs`,
`use_fs`). The file formats are in ``docs/concepts/storage-format.md``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _crash
from .errors import UnsafePathError

if TYPE_CHECKING:
    import io

TMP_SUFFIX = ".tmp"  # same as storage.format.TMP_SUFFIX (kept here so that _fs imports nothing from storage)

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC


# --- roots: below them no symbolic link is followed -------------------------------------------------------------
#
# A path the library reaches under a root is opened one component at a time, each relative to the directory
# opened before it (``openat``) with O_NOFOLLOW, and every operation then acts on the last directory's descriptor
# (``unlinkat``, ``renameat``, ``mkdirat``). So no component below the root can be a link, not even one planted
# between two calls: a link anywhere raises UnsafePathError before anything is read, written or deleted.
#
# Which part of a path is trusted (followed as the caller named it):
# - under a registered root (a NamespaceManager registers its root): the root itself, nothing below it;
# - elsewhere: the directory holding the file, and a directory a directory operation names. So a store opened
#   at a path that is a link to a directory works (the user named that path), but no file inside a store
#   directory is ever a link.

_roots: dict[str, int] = {}  # absolute path -> how many holders registered it
_root_ids: dict[str, tuple[int, int]] = {}  # absolute path -> (device, inode) of the directory registered
_roots_lock = threading.Lock()


def add_root(path: str) -> str:
    """Register ``path`` as a root: from now on nothing below it is reached through a symbolic link, and the
    root itself is the directory it is now (one swapped in later, or a link put in its place, is refused).

    Registrations are counted; each needs its `remove_root`. Returns the absolute path registered.
    """
    path = os.path.abspath(path)
    with _roots_lock:
        _roots[path] = _roots.get(path, 0) + 1
        if path not in _root_ids:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                pass  # not created yet: the first open below it records it
            else:
                if stat.S_ISDIR(st.st_mode):
                    _root_ids[path] = (st.st_dev, st.st_ino)
    return path


def remove_root(path: str) -> None:
    """Undo one `add_root` of ``path`` (a path never added is ignored)."""
    path = os.path.abspath(path)
    with _roots_lock:
        n = _roots.get(path, 0) - 1
        if n > 0:
            _roots[path] = n
        else:
            _roots.pop(path, None)
            _root_ids.pop(path, None)


def root_of(path: str) -> str | None:
    """The outermost registered root that is ``path`` or holds it, or None."""
    best = None
    with _roots_lock:
        for root in _roots:
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                if best is None or len(root) < len(best):
                    best = root
    return best


def is_inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it, links resolved (for refusing a caller's path that would
    land inside a store or a root, before anything is written)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def _refuse(path: str, parent_fd: int, name: str, exc: OSError) -> BaseException:
    """The error for a failed ``openat(parent_fd, name)`` on the way to ``path``: UnsafePathError if ``name`` is a
    symbolic link (O_NOFOLLOW says ELOOP, ENOTDIR with O_DIRECTORY, EEXIST with O_EXCL), else ``exc`` itself."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK, errno.EEXIST):
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link:
            return _unsafe(path, name)
    return exc


def _unsafe(path: str, name: str) -> UnsafePathError:
    return UnsafePathError(f"{path}: {name!r} is a symbolic link, and nothing below a store's directory or a "
                           "namespace manager's root is reached through one; refused")


def _open_root(root: str, path: str) -> int:
    """A descriptor of the registered root ``root``: never a link, and the directory that was registered."""
    try:
        fd = os.open(root, _DIR_FLAGS | _O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(root):
            raise UnsafePathError(f"{path}: the root {root} was replaced by a symbolic link; refused") from None
        raise
    st = os.fstat(fd)
    with _roots_lock:
        known = _root_ids.setdefault(root, (st.st_dev, st.st_ino)) if root in _roots else None
    if known is not None and known != (st.st_dev, st.st_ino):
        os.close(fd)
        raise UnsafePathError(f"{path}: the root {root} is not the directory it was when it was opened (moved or "
                              "replaced); refused")
    return fd


def _open_dir_below(top: str, parts: list[str], path: str) -> int:
    """A descriptor of ``top/parts[0]/parts[1]/...``, ``top`` (a registered root) opened as `_open_root` opens
    it, every part opened without following a link."""
    fd = _open_root(top, path)
    try:
        for part in parts:
            try:
                nfd = os.open(part, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _refuse(path, fd, part, exc) from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parts(path: str, top: str) -> list[str]:
    rel = path[len(top):].strip(os.sep)
    return [p for p in rel.split(os.sep) if p] if rel else []


def open_directory(path: str) -> int:
    """A descriptor (O_RDONLY | O_DIRECTORY) of the directory ``path``, reached without following a link below its
    root (see the notes above `add_root`). The caller closes it."""
    path = os.path.abspath(path)
    root = root_of(path)
    if root is None:
        return os.open(path, _DIR_FLAGS)  # a directory named by the caller: followed as named
    return _open_dir_below(root, _parts(path, root), path)


def open_parent(path: str) -> tuple[int, str]:
    """``(descriptor of the directory holding path, the last component)``, that directory reached as
    `open_directory` reaches one; the last component is for the caller to open without following it."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "no last component", path)
    return open_directory(parent), name


class NotRegularFileError(UnsafePathError):
    """`open_file` found a FIFO, a device or a socket where a regular file should be."""


def open_file(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags | O_NOFOLLOW)`` relative to `open_parent`: no component below the root, and never
    the file itself, may be a symbolic link (UnsafePathError); and what is opened must be a regular file.

    A FIFO, a device or a socket planted where a file is expected is refused (UnsafePathError) instead of being
    read: opening a FIFO for reading blocks until a writer comes, so the file is opened non-blocking and checked
    on its descriptor before anything reads it. A directory there is an IsADirectoryError naming the path. A file
    with other hard links is refused for writing (what is written would change the other name's file too).
    """
    dfd, name = open_parent(path)
    try:
        fd = os.open(name, flags | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, mode, dir_fd=dfd)
    except OSError as exc:
        raise _refuse(path, dfd, name, exc) from None
    finally:
        os.close(dfd)
    return _regular_or_refused(fd, path, writing=bool(flags & (os.O_WRONLY | os.O_RDWR)))


def _regular_or_refused(fd: int, path: str, writing: bool) -> int:
    """``fd`` (opened non-blocking), made blocking, if it is a regular file (without other hard links when it is
    for ``writing``); else closed, with the error that says what is there."""
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory where a file is expected", path)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{path} is not a regular file (a FIFO, a device or a socket): refused")
        if writing and st.st_nlink > 1:
            # a hard link planted in a file's place: writing would change the file it shares with another
            # directory (truncate a "torn" segment, append to it), outside the root
            raise UnsafePathError(f"{path} has other hard links: refused for writing")
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_file(path: str) -> int:
    """Open a file the caller named, outside every root (an archive to import, a .npy to load), for reading: links
    are followed as the caller's path is, but what is opened must be a regular file. A FIFO is refused
    (`NotRegularFileError`) at once instead of blocking until a writer comes (it is opened non-blocking and
    checked on its descriptor); a directory is an IsADirectoryError."""
    return _regular_or_refused(os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NONBLOCK), path, writing=False)


def _lstat_in(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove_tree_in(dfd: int, name: str) -> None:
    """Remove the directory ``name`` of ``dfd`` and everything in it, by descriptors: a link inside is removed,
    never followed."""
    fd = os.open(name, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=dfd)
    try:
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_tree_in(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def _as_bytes_view(data) -> memoryview:
    """A flat byte view of ``data`` (bytes, bytearray, memoryview or a C-contiguous numpy array), without a copy."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


WRITEBACK_SPAN = 1 << 20  # bytes of a big file (a snapshot) written between two writeback requests


def _libc_sync_file_range():
    """``sync_file_range(2)`` from the C library (Python's ``os`` has no binding), or None where there is none."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range: object = None  # resolved on first use: False when the call does not exist
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4  # <fcntl.h>


class AppendFile:
    """A file opened for appending, whose logical end (``size``) the writer tracks.

    Writes go to ``size`` with ``pwrite`` (not ``O_APPEND``), so that after a failed write the caller can
    ``truncate(size_before)`` and the next write lands exactly there. The file is opened with `open_file`:
    never through a symbolic link.
    """

    def __init__(self, fs: OSFileSystem, path: str, create: bool = False):
        flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fs = fs
        self.path = path
        self.fd = open_file(path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size  # bytes; the logical end, where the next write goes

    def write(self, data) -> None:
        """Write all of ``data`` at `size`; loops over short writes. Raises OSError on failure.

        After a failure `size` counts the bytes that did reach the file, so ``truncate`` can cut them off.
        """
        self._fs._write_fd(self, data)

    def fsync(self) -> None:
        self._fs._fsync_fd(self)

    def write_back(self, start: int, length: int, wait: bool) -> None:
        """Have the kernel write bytes ``[start, start + length)`` to the disk now (``sync_file_range``): start it,
        or with ``wait`` also wait until it is done. Not an fsync: it promises nothing about durability, it only
        keeps a big file's dirty pages few, so that a small fsync elsewhere (the log's) does not wait behind them
        (ext4 flushes a file's data with the journal commit another file's fsync starts). A no-op where the call
        does not exist."""
        global _sync_file_range
        if _sync_file_range is None:
            _sync_file_range = _libc_sync_file_range() or False
        if not _sync_file_range or self.fd < 0 or length <= 0:
            return
        flags = SYNC_FILE_RANGE_WRITE
        if wait:
            flags |= SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER
        _sync_file_range(self.fd, start, length, flags)  # type: ignore[operator]  # advisory: errors are ignored

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (``ftruncate``) and move the logical end there. Not fsynced."""
        self._fs._ftruncate(self, size)
        self.size = size

    def close(self) -> None:
        """Close the descriptor. Idempotent; does not fsync."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OSFileSystem:
    """Plain POSIX I/O with the durability rules of the store (Linux semantics: fsync a directory to make the
    creation, rename or removal of its entries durable), and no symbolic link followed below a root (see
    `add_root`): each method opens the directories on the way relative to each other and acts on the last
    one's descriptor."""

    # --- primitives FaultFS intercepts ---------------------------------------------------------------------------

    def _write_fd(self, f: AppendFile, data) -> None:
        view = _as_bytes_view(data)
        while view:
            n = os.pwrite(f.fd, view, f.size)
            if n <= 0:
                raise OSError(errno.EIO, "write returned 0 bytes", f.path)
            f.size += n
            view = view[n:]

    def _fsync_fd(self, f: AppendFile) -> None:
        os.fsync(f.fd)

    def _ftruncate(self, f: AppendFile, size: int) -> None:
        os.ftruncate(f.fd, size)

    def _discard_tmp(self, path: str) -> None:
        """Remove a temp file after a failed ``write_atomic`` (best effort, never raises)."""
        with contextlib.suppress(OSError):
            OSFileSystem.unlink(self, path)

    # --- the API the store uses ----------------------------------------------------------------------------------

    def open_append(self, path: str, create: bool = False) -> AppendFile:
        """Open ``path`` for appending at its current end; ``create=True`` creates it and fails if it exists."""
        return AppendFile(self, path, create)

    def read_bytes(self, path: str) -> bytes:
        with os.fdopen(open_file(path, os.O_RDONLY), "rb") as f:
            return f.read()

    def open_read(self, path: str) -> io.BufferedReader:
        """A binary file object for reading (``readinto``, ``seek``, ``fileno``)."""
        return os.fdopen(open_file(path, os.O_RDONLY), "rb")

    def write_atomic(self, path: str, chunks, crash_prefix: str | None = None,
                     pace: Callable[[int], None] | None = None) -> int:
        """Replace ``path`` with the concatenation of ``chunks`` so that a crash leaves the old file or the new one.

        Steps: write ``path + ".tmp"`` in the same directory, fsync it, ``os.replace`` it over ``path``, fsync the
        directory. With ``crash_prefix`` the crash points ``<prefix>.tmp_written``, ``.tmp_fsynced``, ``.renamed``
        and ``.dir_fsynced`` are passed after each step. On any error the temp file is removed and the error
        re-raised; if the error comes after the rename (the directory fsync), the new file is in place but not
        known to be durable, which the caller must treat as a failed fsync.

        Args:
            path: the final file name.
            chunks: one bytes-like object or an iterable of them (numpy arrays must be C-contiguous).
            crash_prefix: name prefix of the crash points, or None for none.
            pace: called with the bytes written so far after each `WRITEBACK_SPAN` (a checkpoint slows itself
                down there while writes arrive; see `vecstore_ref.checkpoint`).

        Returns:
            The number of bytes written.
        """
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [chunks]
        tmp = path + TMP_SUFFIX
        written = 0
        f = None
        try:
            with contextlib.suppress(FileNotFoundError):
                self.unlink(tmp)  # a leftover of an earlier crash
            f = self.open_append(tmp, create=True)
            started = waited = 0  # written back up to: started, and known written
            for chunk in chunks:
                whole = _as_bytes_view(chunk)
                for at in range(0, whole.nbytes, WRITEBACK_SPAN):  # a big chunk in spans: at most two dirty
                    view = whole[at : at + WRITEBACK_SPAN]
                    f.write(view)
                    written += view.nbytes
                    if written - started >= WRITEBACK_SPAN:
                        f.write_back(waited, started - waited, wait=True)
                        waited = started
                        f.write_back(started, written - started, wait=False)
                        started = written
                        if pace is not None:
                            pace(written)
            if crash_prefix:
                _crash.crashpoint(f"{crash_prefix}.tmp_written")
            f.fsync()
            if crash_prefix:
                _crash.crashpoint(f"{crash_prefix}.tmp_fsynced")
            f.close()
            self.replace(tmp, path)
            if crash_prefix:
                _crash.crashpoint(f"{crash_prefix}.renamed")
            self.fsync_dir(os.path.dirname(path) or ".")
            if crash_prefix:
                _crash.crashpoint(f"{crash_prefix}.dir_fsynced")
        except BaseException:
            if f is not None:
                f.close()
            self._discard_tmp(tmp)  # (never a link: unlink refuses one)
            raise
        return written

    def replace(self, src: str, dst: str) -> None:
        """``os.replace(src, dst)`` by descriptors; refuses if either name is a symbolic link."""
        sfd, sname = open_parent(src)
        try:
            dfd, dname = open_parent(dst)
            try:
                for fd, name, full in ((sfd, sname, src), (dfd, dname, dst)):
                    st = _lstat_in(fd, name)
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        raise _unsafe(full, name)
                os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def unlink(self, path: str) -> None:
        """Remove the file ``path``; a symbolic link there is refused, not removed (UnsafePathError)."""
        dfd, name = open_parent(path)
        try:
            st = _lstat_in(dfd, name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise _unsafe(path, name)
            os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def fsync_dir(self, path: str) -> None:
        """fsync a directory: makes the creations, renames and removals of its entries durable."""
        fd = open_directory(path)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        fd = open_directory(path)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def _lstat(self, path: str) -> os.stat_result | None:
        """``lstat`` of ``path`` reached without following a link below its root; None if it (or a directory on
        the way) is missing. A link on the way raises UnsafePathError."""
        path = os.path.abspath(path)
        if root_of(path) == path:  # a root is followed as named
            try:
                return os.stat(path)
            except FileNotFoundError:
                return None
        try:
            dfd, name = open_parent(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return _lstat_in(dfd, name)
        finally:
            os.close(dfd)

    def exists(self, path: str) -> bool:
        """Something is at ``path`` (a symbolic link counts: it is not followed)."""
        return self._lstat(path) is not None

    def isdir(self, path: str) -> bool:
        """A directory: a root, or a directory the caller named outside every root, is followed as named; below a
        root a symbolic link to a directory is not one."""
        path = os.path.abspath(path)
        if root_of(path) is None:
            return os.path.isdir(path)
        st = self._lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def isfile(self, path: str) -> bool:
        """A regular file (symlinks not followed)."""
        st = self._lstat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def makedirs(self, path: str) -> None:
        """``os.makedirs(exist_ok=True)``, then fsync the parent of every directory it created.

        Below a root each missing directory is made relative to its parent's descriptor, and an existing
        component that is a symbolic link is refused; above (or without) a root, the path is the caller's.
        """
        path = os.path.abspath(path)
        root = root_of(path)
        top = root if root is not None else path
        missing = []
        p = top
        while not os.path.isdir(p):
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        os.makedirs(top, exist_ok=True)
        for created in reversed(missing):
            self.fsync_dir(os.path.dirname(created))
        if root is None:
            return
        fd = os.open(top, _DIR_FLAGS)
        done = top
        try:
            for part in _parts(path, top):
                made = False
                try:
                    nfd = os.open(part, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                    nfd = os.open(part, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    raise _refuse(path, fd, part, exc) from None
                os.close(fd)
                fd = nfd
                if made:
                    self.fsync_dir(done)
                done = os.path.join(done, part)
        finally:
            os.close(fd)

    def size(self, path: str) -> int:
        st = self._lstat(path)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if stat.S_ISLNK(st.st_mode):
            raise _unsafe(path, os.path.basename(path))
        return st.st_size

    def truncate(self, path: str, size: int) -> None:
        """Cut ``path`` to ``size`` bytes and fsync it."""
        f = self.open_append(path)
        try:
            f.truncate(size)
            f.fsync()
        finally:
            f.close()

    def rmtree(self, path: str) -> None:
        """Remove the directory ``path`` and everything in it, by descriptors: a symbolic link inside is removed,
        never followed, and ``path`` itself (or a directory on the way) being one is refused."""
        dfd, name = open_parent(path)
        try:
            st = _lstat_in(dfd, name)
            if st is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            if stat.S_ISLNK(st.st_mode):
                raise _unsafe(path, name)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            _remove_tree_in(dfd, name)
        finally:
            os.close(dfd)


_default_fs: OSFileSystem = OSFileSystem()


def get_fs() -> OSFileSystem:
    """The process-wide default file system (an `OSFileSystem` unless a test replaced it)."""
    return _default_fs


def set_fs(fs: OSFileSystem) -> None:
    global _default_fs
    _default_fs = fs


@contextlib.contextmanager
def use_fs(fs: OSFileSystem) -> Iterator[OSFileSystem]:
    """Make ``fs`` the process-wide default for the duration of a ``with`` block."""
    old = get_fs()
    set_fs(fs)
    try:
        yield fs
    finally:
        set_fs(old)


# --- fault injection -------------------------------------------------------------------------------------------

FAULT_OPS = ("write", "fsync", "replace", "open", "truncate", "fsync_dir", "unlink", "read", "any")
DROP_MODES = ("truncate", "zeros", "garbage", "random_prefix")


@dataclass
class _Fault:
    op: str
    at: int  # fires when the count of `op` (or of all ops, for "any") reaches this value
    err: int
    forever: bool
    short: bool


@dataclass
class _Entry:
    """One directory change not yet made durable by an fsync of its directory (undone by a power cut)."""

    kind: str  # "create" | "rename" | "unlink"
    path: str  # created / renamed-to / unlinked path
    src: str | None = None  # rename: the old name
    old: bytes | None = None  # rename: durable content of the file it replaced; unlink: durable content
    old_synced: int | None = None  # rename: durable length of the renamed file under its old name

    def dirs(self) -> set[str]:
        out = {os.path.dirname(self.path)}
        if self.src is not None:
            out.add(os.path.dirname(self.src))
        return out


class FaultFS(OSFileSystem):
    """An `OSFileSystem` that fails on request and can simulate a power cut. For tests only.

    **Failures.** ``fail("write", nth=3, err=errno.ENOSPC)`` makes the 3rd write *from now* raise ``OSError(err)``
    (once; with ``forever=True`` that one and every later one). ``short=True`` on "write" first writes part of the
    data (half, at least one byte), then raises: a real short write followed by an error, as a full disk does.
    Kinds: ``write``, ``fsync`` (file fsync), ``fsync_dir``, ``replace``, ``unlink``, ``truncate`` (ftruncate),
    ``open`` (open for append or create), ``read`` (``read_bytes``/``open_read``), and ``any`` (the n-th operation
    of any kind). ``ops_count`` counts operations per kind (and ``"any"``); ``injected`` counts fired faults.

    **Power loss.** For every file it touched, the object tracks the *synced length* (bytes made durable by an
    fsync of the file), and a journal of directory changes not yet made durable by an fsync of their directory:
    files created, renames (with the durable content of a file the rename replaced) and unlinks (with the durable
    content of the file removed). `drop_unsynced` then rewrites the real files to what a power cut would
    leave, in this order:

    1. the journal is undone newest first: renames are reversed (the replaced file comes back with its durable
       content), unlinked files come back with their durable content, created files are deleted;
    2. every tracked file is cut to its synced length, then, depending on ``mode``, gets back part of the bytes
       written since: ``"truncate"`` none; ``"random_prefix"`` a random prefix of them as written;
       ``"zeros"`` / ``"garbage"`` a random-length prefix (at least one byte) filled with zeros / random bytes,
       as a file system does whose size update reached the disk before the data did.

    What it does **not** model: reordering of writes *within* the synced part (an fsync is trusted); a failed
    fsync losing bytes that were written before it (the synced length simply does not advance); truncations
    (treated as durable at once, which matches how the log uses them: it only cuts bytes that were never
    acknowledged); directories created by ``makedirs`` (it fsyncs their parents); renames across directories are
    made durable by an fsync of either directory; files it never opened, created or renamed are left alone.
    Call `drop_unsynced` only after abandoning every open handle (as a crash would), then reopen with any
    file system.
    """

    def __init__(self, track_unlinks: bool = True):
        self.ops_count: dict[str, int] = {}
        self.injected = 0
        self.track_unlinks = track_unlinks
        self.synced: dict[str, int] = {}  # absolute path -> bytes known durable
        self.journal: list[_Entry] = []  # directory changes not yet fsynced, oldest first
        self._faults: list[_Fault] = []
        self._mu = threading.RLock()

    # --- configuration ---------------------------------------------------------------------------------------

    def fail(self, op: str, nth: int = 1, err: int = errno.ENOSPC, forever: bool = False,
             short: bool = False) -> FaultFS:
        """Fail the ``nth`` operation of kind ``op`` from now (1 = the next one); see the class docstring."""
        if op not in FAULT_OPS:
            raise ValueError(f"op must be one of {FAULT_OPS}; got {op!r}")
        if isinstance(nth, bool) or not isinstance(nth, int) or nth < 1:
            raise ValueError(f"nth must be an int >= 1; got {nth!r}")
        if short and op not in ("write", "any"):
            raise ValueError("short=True applies to writes only")
        with self._mu:
            self._faults.append(_Fault(op, self.ops_count.get(op, 0) + nth, err, forever, short))
        return self

    def clear_faults(self) -> None:
        with self._mu:
            self._faults.clear()

    @property
    def new_files(self) -> set[str]:
        """Paths created (or renamed into place) since their directory was last fsynced."""
        with self._mu:
            return {e.path for e in self.journal if e.kind in ("create", "rename")}

    # --- counting and firing -----------------------------------------------------------------------------------

    def _tick(self, op: str, path: str) -> _Fault | None:
        """Count one operation; raise its fault if one fires (except a short write, which the caller handles)."""
        self.ops_count[op] = n_op = self.ops_count.get(op, 0) + 1
        self.ops_count["any"] = n_any = self.ops_count.get("any", 0) + 1
        for fault in self._faults:
            if fault.op == op:
                n = n_op
            elif fault.op == "any":
                n = n_any
            else:
                continue
            if n == fault.at or (fault.forever and n > fault.at):
                self.injected += 1
                if fault.short and op == "write":
                    return fault
                raise OSError(fault.err, os.strerror(fault.err), path)
        return None

    # --- intercepted primitives --------------------------------------------------------------------------------

    def _write_fd(self, f: AppendFile, data) -> None:
        with self._mu:
            view = _as_bytes_view(data)
            fault = self._tick("write", f.path)
            if fault is not None:
                if view.nbytes > 0:
                    super()._write_fd(f, view[: max(1, view.nbytes // 2)])
                raise OSError(fault.err, os.strerror(fault.err), f.path)
            super()._write_fd(f, view)

    def _fsync_fd(self, f: AppendFile) -> None:
        with self._mu:
            self._tick("fsync", f.path)
            super()._fsync_fd(f)
            self.synced[os.path.abspath(f.path)] = os.fstat(f.fd).st_size

    def _ftruncate(self, f: AppendFile, size: int) -> None:
        with self._mu:
            self._tick("truncate", f.path)
            super()._ftruncate(f, size)
            key = os.path.abspath(f.path)
            if self.synced.get(key, 0) > size:
                self.synced[key] = size

    def _discard_tmp(self, path: str) -> None:
        with self._mu:
            super()._discard_tmp(path)
            key = os.path.abspath(path)
            self.synced.pop(key, None)
            self.journal = [e for e in self.journal if not (e.kind == "create" and e.path == key)]

    def open_append(self, path: str, create: bool = False) -> AppendFile:
        with self._mu:
            self._tick("open", path)
            f = super().open_append(path, create)
            key = os.path.abspath(path)
            if create:
                self.journal.append(_Entry("create", key))
                self.synced[key] = 0
            else:
                self.synced.setdefault(key, f.size)  # existed before we watched it: taken as durable
            return f

    def read_bytes(self, path: str) -> bytes:
        with self._mu:
            self._tick("read", path)
        return super().read_bytes(path)

    def open_read(self, path: str) -> io.BufferedReader:
        with self._mu:
            self._tick("read", path)
        return super().open_read(path)

    def _durable_content(self, key: str) -> bytes:
        with open(key, "rb") as fh:
            data = fh.read()
        return data[: self.synced.get(key, len(data))]

    def replace(self, src: str, dst: str) -> None:
        with self._mu:
            self._tick("replace", dst)
            s, d = os.path.abspath(src), os.path.abspath(dst)
            old = self._durable_content(d) if self.isfile(d) else None
            src_synced = self.synced.get(s)
            super().replace(src, dst)
            self.journal.append(_Entry("rename", d, src=s, old=old, old_synced=src_synced))
            self.synced[d] = src_synced if src_synced is not None else os.path.getsize(d)
            self.synced.pop(s, None)

    def unlink(self, path: str) -> None:
        with self._mu:
            self._tick("unlink", path)
            key = os.path.abspath(path)
            content = self._durable_content(key) if self.track_unlinks and self.isfile(key) else None
            super().unlink(path)
            self.synced.pop(key, None)
            if content is not None:
                self.journal.append(_Entry("unlink", key, old=content))

    def fsync_dir(self, path: str) -> None:
        with self._mu:
            self._tick("fsync_dir", path)
            super().fsync_dir(path)
            here = os.path.abspath(path)
            self.journal = [e for e in self.journal if here not in e.dirs()]

    def rmtree(self, path: str) -> None:
        with self._mu:
            self._tick("unlink", path)
            super().rmtree(path)
            root = os.path.abspath(path) + os.sep
            self.synced = {k: v for k, v in self.synced.items() if not k.startswith(root)}
            self.journal = [e for e in self.journal if not e.path.startswith(root)]

    # --- power loss --------------------------------------------------------------------------------------------

    def drop_unsynced(self, mode: str = "truncate", rng: random.Random | int | None = None) -> None:
        """Rewrite the real files to what a power cut would leave (see the class docstring), then start afresh:
        afterwards everything on disk counts as durable and the journal is empty.

        Args:
            mode: ``"truncate"``, ``"random_prefix"``, ``"zeros"`` or ``"garbage"``.
            rng: a ``random.Random``, a seed, or None (seed 0): which prefix lengths and garbage bytes.
        """
        if mode not in DROP_MODES:
            raise ValueError(f"mode must be one of {DROP_MODES}; got {mode!r}")
        if not isinstance(rng, random.Random):
            rng = random.Random(0 if rng is None else rng)
        with self._mu:
            for entry in reversed(self.journal):
                self._undo(entry)
            self.journal = []
            for key, durable in sorted(self.synced.items()):
                if not os.path.isfile(key):
                    continue
                size = os.path.getsize(key)
                if size <= durable:
                    continue
                unsynced = size - durable
                with open(key, "r+b") as fh:
                    if mode == "truncate":
                        fh.truncate(durable)
                    elif mode == "random_prefix":
                        fh.truncate(durable + rng.randint(0, unsynced))
                    else:
                        keep = rng.randint(1, unsynced)
                        fh.truncate(durable + keep)
                        fh.seek(durable)
                        fh.write(b"\0" * keep if mode == "zeros" else rng.randbytes(keep))
            self.synced = {k: os.path.getsize(k) for k in self.synced if os.path.isfile(k)}

    def _undo(self, e: _Entry) -> None:
        if e.kind == "create":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
            self.synced.pop(e.path, None)
        elif e.kind == "unlink":
            if not os.path.exists(e.path):
                with open(e.path, "wb") as fh:
                    fh.write(e.old or b"")
                self.synced[e.path] = len(e.old or b"")
        elif e.kind == "rename":
            if os.path.exists(e.path):
                os.replace(e.path, e.src)  # type: ignore[arg-type]  # the renamed file goes back to its old name
                if e.old_synced is not None:
                    self.synced[e.src] = e.old_synced  # type: ignore[index]  # a rename has a src
                else:
                    self.synced.pop(e.src, None)  # type: ignore[arg-type]
            self.synced.pop(e.path, None)
            if e.old is not None:  # the file the rename replaced was durable: it comes back
                with open(e.path, "wb") as fh:
                    fh.write(e.old)
                self.synced[e.path] = len(e.old)


def dir_digest(root: str) -> list[tuple[str, int, str]]:
    """``(relative path, size, sha256 hex)`` of every entry under ``root``, sorted: equal digests, unchanged tree.

    Skips nothing: regular files by content; directories as ``("<rel>/", 0, "dir")``; symlinks (not followed) as
    ``(rel, 0, "symlink:<target>")``; anything else as ``(rel, 0, "special:<mode>")``. Errors propagate.
    """
    out: list[tuple[str, int, str]] = []

    def onerror(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        for name in _entries(dirnames, filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out.append((rel, 0, "symlink:" + os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                out.append((rel + "/", 0, "dir"))
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]
                        h.update(block)
                out.append((rel, st.st_size, h.hexdigest()))
            else:
                out.append((rel, 0, f"special:{stat.S_IFMT(st.st_mode):o}"))
    return sorted(out)


def _entries(dirnames: list[str], filenames: list[str]) -> Iterable[str]:
    yield from dirnames
    yield from filenames
