"""Record ids by slot, and slots by id.

Every slot that was ever handed out has an id: the record it held (or holds). Ids are packed as UTF-8 in a
`ByteLog` with an offset per slot, in slot order, and never change once written, so a snapshot writes them as they
are and an opened snapshot's ids are used without decoding one. Two views are built only when first needed:

- ``array()``: the ids as a numpy object array by slot, for results of batch queries (decoded once, then kept up
  to date);
- the id -> slot map of *mapped* records (live or soft-deleted), for writes and ``get`` (built from the array
  and the slot states once, then kept up to date).

So opening a store of a million records costs nothing here; the first ``get`` or write pays for the map once
(about 0.2 s per million ids).

Invariant: ``lookup(id) == s`` iff slot ``s`` holds the record ``id`` and is mapped (the store's ``state[s] !=
FREE``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .blob import ByteLog
from .errors import CorruptSnapshotError


class IdMap:
    """Ids by slot (append-only) and the lazily built id -> slot map of mapped slots."""

    def __init__(self, mapped: Callable[[int], np.ndarray], capacity: int = 1024):
        """``mapped(n)`` returns the bool mask (n,) of the slots that are mapped (the store's state array)."""
        self._mapped = mapped
        self._bytes = ByteLog()
        self._ends = np.zeros(max(16, capacity) + 1, dtype=np.int64)  # id of slot s: bytes[ends[s] : ends[s+1]]
        self.n = 0  # slots with an id
        self._array: np.ndarray | None = np.empty(0, dtype=object)  # decoded ids by slot (None: not decoded yet)
        self._complete = True  # every id below n is in _array
        self._slot_of: dict[str, int] | None = {}  # mapped id -> slot, or None until needed

    # --- writing ----------------------------------------------------------------------------------------------

    def _reserve(self, n: int) -> None:
        if n + 1 > self._ends.shape[0]:
            grown = np.zeros(max(n + 1, 2 * self._ends.shape[0]), dtype=np.int64)
            grown[: self.n + 1] = self._ends[: self.n + 1]
            self._ends = grown

    def append(self, slot: int, id_: str) -> None:
        """Give the next slot (``slot == n``) its id, and map it."""
        if slot != self.n:
            raise AssertionError(f"ids are assigned in slot order: slot {slot} after {self.n}")
        raw = id_.encode("utf-8")
        self._reserve(slot + 1)
        self._bytes.append(raw)
        self._ends[slot + 1] = self._ends[slot] + len(raw)
        self.n = slot + 1
        if self._array is not None:
            if self._array.shape[0] <= slot:
                self._array = _grown_objects(self._array, max(slot + 1, 2 * self._array.shape[0], 1024))
            self._array[slot] = id_
        if self._slot_of is not None:
            self._slot_of[id_] = slot

    def append_many(self, first: int, ids: list[str], mapped: bool = True) -> None:
        """Give slots ``first .. first + len(ids) - 1`` (``first == n``) their ids, and map them (with
        ``mapped=False`` the map is rebuilt from the slot states when next needed)."""
        if first != self.n:
            raise AssertionError(f"ids are assigned in slot order: slot {first} after {self.n}")
        k = len(ids)
        joined = "\0".join(ids)  # ids hold no NUL (SPEC section 1): one encode for all of them
        raw = joined.encode("utf-8")
        if joined.isascii():
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=k)
        else:
            lengths = np.fromiter((len(i.encode("utf-8")) for i in ids), dtype=np.int64, count=k)
        raw = raw.replace(b"\0", b"")
        self._reserve(first + k)
        self._bytes.append(raw)
        self._ends[first + 1 : first + k + 1] = self._ends[first] + np.cumsum(lengths)
        self.n = first + k
        if self._array is not None:
            if self._array.shape[0] < self.n:
                self._array = _grown_objects(self._array, max(self.n, 2 * self._array.shape[0], 1024))
            self._array[first : self.n] = ids
        if not mapped:
            self._slot_of = None
        elif self._slot_of is not None:
            self._slot_of.update(zip(ids, range(first, first + k)))

    def unmap(self, id_: str) -> None:
        """The record left its slot (deleted, expired, or replaced by a new version); the slot keeps its id."""
        if self._slot_of is not None:
            self._slot_of.pop(id_, None)

    def remap(self, id_: str, slot: int) -> None:
        """Map ``id_`` to ``slot`` again (a write that was rolled back)."""
        if self._slot_of is not None:
            self._slot_of[id_] = slot

    # --- reading ----------------------------------------------------------------------------------------------

    def id_at(self, slot: int) -> str:
        """The id of ``slot`` (decoded once, on first use, when the store was opened from a snapshot)."""
        arr = self._array
        if arr is not None and slot < arr.shape[0]:
            v = arr[slot]
            if v is not None:
                return v
        return self._decode_one(slot)

    def _decode_one(self, slot: int) -> str:
        v = self._bytes.buf[self._ends[slot] : self._ends[slot + 1]].tobytes().decode("utf-8")
        arr = self._array
        if arr is None or arr.shape[0] < self.n:  # a cache of the decoded ids, filled as queries need them
            arr = self._array = _grown_objects(np.empty(0, dtype=object) if arr is None else arr, max(self.n, 1024))
            self._complete = False
        arr[slot] = v
        return v

    def ids_of(self, slots: list[int]) -> list[str]:
        """The ids of a few slots (a query's results)."""
        arr = self._array
        if arr is not None and arr.shape[0] >= self.n:
            out = [arr[s] for s in slots]
            if None not in out:
                return out
        return [self.id_at(s) for s in slots]

    def array(self) -> np.ndarray:
        """Ids by slot as an object array of at least ``n`` entries (decoded in bulk on first use)."""
        arr = self._array
        if arr is None or arr.shape[0] < self.n or not self._complete:
            arr = self._decode_all()
            self._array = arr
            self._complete = True
        return arr

    def _decode_all(self) -> np.ndarray:
        from .storage.snapshot import unpack_strings

        arr = np.empty(max(self.n, 1024), dtype=object)
        if self.n:
            arr[: self.n] = unpack_strings(self._bytes.used()[: self._ends[self.n]], self._ends[: self.n + 1])
        return arr

    def lookup(self, id_: str) -> int:
        """The slot of a mapped id, or -1."""
        slot_of = self._slot_of
        if slot_of is None:
            slot_of = self._build_map()
        return slot_of.get(id_, -1)

    def _build_map(self) -> dict[str, int]:
        mapped = np.flatnonzero(self._mapped(self.n))
        ids = self.array()
        slot_of = dict(zip(ids[mapped].tolist(), mapped.tolist()))
        if len(slot_of) != mapped.size:
            raise CorruptSnapshotError("two mapped slots hold the same id")
        self._slot_of = slot_of
        return slot_of

    def mapped_count(self) -> int:
        return len(self._slot_of) if self._slot_of is not None else int(np.count_nonzero(self._mapped(self.n)))

    # --- persistence ------------------------------------------------------------------------------------------

    def to_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blob uint8, offsets int64 (n + 1,))`` of slots ``0 .. n-1``: views of stable bytes, no copy."""
        ends = self._ends[: n + 1]
        return self._bytes.used()[: int(ends[-1])], ends

    @classmethod
    def from_arrays(cls, blob: np.ndarray, offsets: np.ndarray, mapped: Callable[[int], np.ndarray]) -> IdMap:
        """Ids from a snapshot, used as they are (nothing decoded until needed).

        Raises:
            CorruptSnapshotError: offsets that do not start at 0, fall, or end elsewhere than the blob's end.
        """
        if blob.ndim != 1 or blob.dtype != np.uint8 or offsets.ndim != 1 or offsets.dtype != np.int64:
            raise CorruptSnapshotError("the snapshot's id table has the wrong dtype or shape")
        n = offsets.shape[0] - 1
        if n < 0 or offsets[0] != 0 or offsets[-1] != blob.shape[0] or (np.diff(offsets) < 0).any():
            raise CorruptSnapshotError("the snapshot's id offsets are inconsistent")
        out = cls(mapped, capacity=n)
        out._bytes = ByteLog(blob)
        out._ends = np.zeros(max(16, n) + 1, dtype=np.int64)
        out._ends[: n + 1] = offsets
        out.n = n
        out._array = None
        out._complete = False
        out._slot_of = None
        return out


def _grown_objects(arr: np.ndarray, capacity: int) -> np.ndarray:
    out = np.empty(capacity, dtype=object)
    out[: arr.shape[0]] = arr
    return out
