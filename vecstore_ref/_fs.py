"""The file-system layer: every byte the store reads or writes goes through one of these objects.

:class:`OSFileSystem` is the real thing, with the fsync discipline of ``docs/concepts/durability.md`` built in:
``write_atomic`` writes a temp file in the same directory, fsyncs it, renames it over the target and fsyncs the
directory. :class:`FaultFS` is the same with faults injected for tests, after LevelDB's ``fault_injection_test``:
it fails the n-th operation of a kind (ENOSPC, EIO, short writes) and simulates a power cut by dropping every byte
and every directory change that was not yet fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil

from . import _crash


class AppendFile:
    """A file opened for appending, with its logical size tracked by the writer."""

    def __init__(self, fs: OSFileSystem, path: str, create: bool = False):
        flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0)
        if hasattr(os, "O_CLOEXEC"):
            flags |= os.O_CLOEXEC
        self._fs = fs
        self.path = path
        self.fd = os.open(path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes) -> None:
        """Write all of ``data`` at the end; loops over short writes, raises OSError on failure."""
        self._fs._write_fd(self, data)

    def fsync(self) -> None:
        self._fs._fsync_fd(self)

    def truncate(self, size: int) -> None:
        self._fs._ftruncate(self, size)
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class OSFileSystem:
    """Plain POSIX I/O with the durability rules of the store."""

    # --- primitives FaultFS intercepts ---------------------------------------------------------------------------

    def _write_fd(self, f: AppendFile, data: bytes) -> None:
        view = memoryview(data)
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

    # --- the API the store uses ----------------------------------------------------------------------------------

    def open_append(self, path: str, create: bool = False) -> AppendFile:
        return AppendFile(self, path, create)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def open_read(self, path: str):
        return open(path, "rb")

    def write_atomic(self, path: str, chunks, crash_prefix: str | None = None) -> int:
        """Replace ``path`` with ``chunks`` so that a crash leaves the old file or the new one, never a mix."""
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [chunks]
        tmp = path + ".tmp"
        written = 0
        f = None
        try:
            with contextlib.suppress(FileNotFoundError):
                self.unlink(tmp)
            f = self.open_append(tmp, create=True)
            for chunk in chunks:
                f.write(bytes(chunk) if not isinstance(chunk, bytes) else chunk)
                written += len(chunk)
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
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return written

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.fsync_dir(os.path.dirname(os.path.abspath(path)))

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def truncate(self, path: str, size: int) -> None:
        f = self.open_append(path)
        try:
            f.truncate(size)
            f.fsync()
        finally:
            f.close()

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)


_default_fs: OSFileSystem = OSFileSystem()


def get_fs() -> OSFileSystem:
    return _default_fs


def set_fs(fs: OSFileSystem) -> None:
    global _default_fs
    _default_fs = fs


@contextlib.contextmanager
def use_fs(fs: OSFileSystem):
    """Make ``fs`` the process-wide default for the duration of a ``with`` block."""
    old = get_fs()
    set_fs(fs)
    try:
        yield fs
    finally:
        set_fs(old)


class FaultFS(OSFileSystem):
    """An :class:`OSFileSystem` that fails on request and can simulate a power cut.

    Failures: ``fail("write", nth=3, err=errno.ENOSPC)`` makes the 3rd write from now raise (once, or every time
    with ``forever=True``); ``short=True`` writes part of the data first, as a full disk does. Kinds: write, fsync,
    replace, unlink, truncate, fsync_dir, open, any.

    Power loss: the object remembers, for every file it touched, how many bytes were fsynced, which files were
    created and which renames were made since their directory was last fsynced. ``drop_unsynced()`` then rewrites
    the real files to what a power cut would leave: each file cut to its fsynced length (``mode="random_prefix"``
    keeps a random part of the unsynced bytes, ``"zeros"``/``"garbage"`` keeps their length but not their content),
    files created since the last directory fsync deleted, renames not made durable undone.
    """

    def __init__(self):
        self.ops_count: dict[str, int] = {}
        self._faults: list[dict] = []
        self.synced: dict[str, int] = {}  # path -> bytes known durable
        self.new_files: set[str] = set()  # created, directory not fsynced since
        self.pending_renames: list[tuple[str, str, bytes | None]] = []  # (src, dst, old content of dst)
        self.injected = 0

    def fail(self, op: str, nth: int = 1, err: int = errno.ENOSPC, forever: bool = False, short: bool = False):
        self._faults.append({"op": op, "at": self.ops_count.get(op, 0) + nth, "err": err, "forever": forever,
                             "short": short, "any_at": self.ops_count.get("any", 0) + nth})
        return self

    def clear_faults(self) -> None:
        self._faults.clear()

    def _tick(self, op: str, path: str):
        """Count an operation; returns the fault dict that fires on it, or None."""
        self.ops_count[op] = self.ops_count.get(op, 0) + 1
        self.ops_count["any"] = self.ops_count.get("any", 0) + 1
        for fault in self._faults:
            if fault["op"] == op:
                hit = self.ops_count[op] >= fault["at"] if fault["forever"] else self.ops_count[op] == fault["at"]
            elif fault["op"] == "any":
                n = self.ops_count["any"]
                hit = n >= fault["any_at"] if fault["forever"] else n == fault["any_at"]
            else:
                continue
            if hit:
                self.injected += 1
                return fault
        return None

    def _raise(self, fault, path):
        raise OSError(fault["err"], os.strerror(fault["err"]), path)

    def _write_fd(self, f: AppendFile, data: bytes) -> None:
        fault = self._tick("write", f.path)
        if fault is not None:
            if fault["short"] and len(data) > 1:
                super()._write_fd(f, data[: len(data) // 2])
            self._raise(fault, f.path)
        super()._write_fd(f, data)

    def _fsync_fd(self, f: AppendFile) -> None:
        fault = self._tick("fsync", f.path)
        if fault is not None:
            self._raise(fault, f.path)
        super()._fsync_fd(f)
        self.synced[f.path] = f.size

    def _ftruncate(self, f: AppendFile, size: int) -> None:
        fault = self._tick("truncate", f.path)
        if fault is not None:
            self._raise(fault, f.path)
        super()._ftruncate(f, size)
        if self.synced.get(f.path, 0) > size:
            self.synced[f.path] = size

    def open_append(self, path: str, create: bool = False) -> AppendFile:
        fault = self._tick("open", path)
        if fault is not None:
            self._raise(fault, path)
        f = super().open_append(path, create)
        if create:
            self.new_files.add(path)
            self.synced[path] = 0
        else:
            self.synced.setdefault(path, f.size)
        return f

    def replace(self, src: str, dst: str) -> None:
        fault = self._tick("replace", dst)
        if fault is not None:
            self._raise(fault, dst)
        old = None
        if os.path.exists(dst):
            with open(dst, "rb") as fh:
                old = fh.read()
        super().replace(src, dst)
        self.pending_renames.append((src, dst, old))
        self.synced[dst] = self.synced.pop(src, 0)
        if src in self.new_files:
            self.new_files.discard(src)
            self.new_files.add(dst)

    def unlink(self, path: str) -> None:
        fault = self._tick("unlink", path)
        if fault is not None:
            self._raise(fault, path)
        super().unlink(path)
        self.synced.pop(path, None)
        self.new_files.discard(path)

    def fsync_dir(self, path: str) -> None:
        fault = self._tick("fsync_dir", path)
        if fault is not None:
            self._raise(fault, path)
        super().fsync_dir(path)
        here = os.path.abspath(path)
        self.new_files = {p for p in self.new_files if os.path.dirname(os.path.abspath(p)) != here}
        self.pending_renames = [r for r in self.pending_renames
                                if os.path.dirname(os.path.abspath(r[1])) != here]

    def drop_unsynced(self, mode: str = "truncate", rng=None) -> None:
        """Rewrite the real files to what a power cut would leave (see the class docstring)."""
        import random

        rng = rng or random.Random(0)
        for src, dst, old in reversed(self.pending_renames):
            if os.path.exists(dst):
                os.replace(dst, src)  # the new content goes back to its temp name (then dropped below)
                self.new_files.add(src)
            if old is not None:  # the file it replaced was durable: it comes back whole
                with open(dst, "wb") as fh:
                    fh.write(old)
                self.synced[dst] = len(old)
                self.new_files.discard(dst)
        self.pending_renames = []
        for path in list(self.new_files):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.synced.pop(path, None)
        self.new_files = set()
        for path, durable in self.synced.items():
            if not os.path.exists(path):
                continue
            size = os.path.getsize(path)
            if size <= durable:
                continue
            with open(path, "r+b") as fh:
                if mode == "random_prefix":
                    fh.truncate(durable + rng.randint(0, size - durable))
                elif mode == "zeros":
                    fh.seek(durable)
                    fh.write(b"\0" * (size - durable))
                elif mode == "garbage":
                    fh.seek(durable)
                    fh.write(bytes(rng.getrandbits(8) for _ in range(size - durable)))
                else:
                    fh.truncate(durable)


def dir_digest(root: str) -> list[tuple[str, int, str]]:
    """``(relative path, size, sha256)`` of every file under ``root``, sorted: equal digests, unchanged tree."""
    out = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out.append((os.path.relpath(full, root), os.path.getsize(full), digest))
    return sorted(out)
