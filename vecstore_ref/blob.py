"""Append-only byte storage: the ids and the metadata rows of a store, packed in one numpy buffer each.

A store of a million records keeps a million ids and a million small JSON texts. As Python objects that is a
few hundred bytes each and, worse, a snapshot would have to visit every one of them (holding the interpreter lock)
to write them out. Packed into one ``uint8`` buffer with an offset per slot they cost their bytes plus 12, a
snapshot writes the used prefix of the buffer as it is, and an opened snapshot's buffer is used directly.

Bytes are only ever appended: an entry, once written, never changes, so a reader (or a checkpoint writing the
buffer out) holding the current array sees stable bytes below its length. When the buffer is full a larger one is
allocated and the old bytes copied; holders of the old array keep a valid, if shorter, copy.
"""

from __future__ import annotations

import numpy as np


class ByteLog:
    """A growable ``uint8`` buffer of appended entries, addressed by ``(start, length)``."""

    __slots__ = ("buf", "size")

    def __init__(self, initial: np.ndarray | None = None, capacity: int = 4096):
        if initial is None:
            self.buf = np.empty(max(16, int(capacity)), dtype=np.uint8)
            self.size = 0
        else:
            self.buf = initial  # e.g. a snapshot's array, used as it is until the first append needs room
            self.size = int(initial.shape[0])

    def _room(self, extra: int) -> None:
        need = self.size + extra
        if need > self.buf.shape[0]:
            grown = np.empty(max(need, 2 * self.buf.shape[0], 4096), dtype=np.uint8)
            grown[: self.size] = self.buf[: self.size]
            self.buf = grown

    def append(self, data: bytes) -> int:
        """Append one entry; returns where it starts."""
        start = self.size
        n = len(data)
        if n:
            self._room(n)
            self.buf[start : start + n] = np.frombuffer(data, dtype=np.uint8)
            self.size = start + n
        return start

    def append_joined(self, data: bytes, lengths: np.ndarray) -> np.ndarray:
        """Append entries given joined (``b"".join(entries)``) with their lengths; returns their starts (int64)."""
        base = self.size
        if data:
            self._room(len(data))
            self.buf[base : base + len(data)] = np.frombuffer(data, dtype=np.uint8)
            self.size = base + len(data)
        lengths = np.asarray(lengths, dtype=np.int64)
        return base + np.cumsum(lengths) - lengths

    def get(self, start: int, length: int) -> bytes:
        return self.buf[start : start + length].tobytes()

    def used(self) -> np.ndarray:
        """The bytes written so far (a view: stable, since entries never change)."""
        return self.buf[: self.size]
