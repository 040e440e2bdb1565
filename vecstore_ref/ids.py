"""Record ids by slot, and slots by id.

Every slot that was ever handed out has an id: the record it held (or holds). Ids are packed as UTF-8 in a
`ByteLog` with an offset per slot, in slot order, and never change once written, so a snapshot writes them as they
are and an opened snapshot's ids are used without decoding one. Finding a slot by id goes through a hash table over
those same bytes (`vecstore_ref.kernels.id_hash`: 4 bytes per entry, no Python object per record), built in one
pass the first time an id is looked up after an open (about 30 ms per million ids).

Query results need ids as ``str``: ``id_at`` decodes one and keeps it in a cache by slot, and ``array()`` decodes
all of them at once for the results of batch queries.

Invariant: ``lookup(id) == s`` iff slot ``s`` holds the record ``id`` and is mapped (the store's ``state[s] !=
FREE``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from .blob import ByteLog
from .config import MAX_ID_BYTES
from .errors import CorruptSnapshotError

_EMPTY_TABLE = np.zeros(16, dtype=np.int32)
_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        from .jit import load

        _KERNELS = load("id_hash")
    return _KERNELS


class IdMap:
    """Ids by slot (append-only) and the id -> slot table of mapped slots."""

    def __init__(self, mapped: Callable[[int], np.ndarray], capacity: int = 1024):
        """``mapped(n)`` returns the bool mask (n,) of the slots that are mapped (the store's state array)."""
        self._mapped = mapped
        self._bytes = ByteLog()
        self._ends = np.zeros(max(16, capacity) + 1, dtype=np.int64)  # id of slot s: bytes[ends[s] : ends[s+1]]
        self.n = 0  # slots with an id
        self._cache: np.ndarray | None = None  # decoded ids by slot, for reads (None entries: not decoded yet)
        self._list: list[str | None] | None = None  # the same as a list (a query reads ten; see ids_of)
        self._complete = False  # every id below n is in _cache
        self._table: np.ndarray | None = _EMPTY_TABLE.copy()  # None until built (after an open)
        self._count = 0  # entries in _table

    # --- writing ----------------------------------------------------------------------------------------------

    def _reserve(self, n: int) -> None:
        if n + 1 > self._ends.shape[0]:
            grown = np.zeros(max(n + 1, 2 * self._ends.shape[0]), dtype=np.int64)
            grown[: self.n + 1] = self._ends[: self.n + 1]
            self._ends = grown

    def _rebuild(self, size: int, upto: int | None = None) -> None:
        """A new table of ``size`` entries holding the mapped slots below ``upto`` (default: all of them)."""
        n = self.n if upto is None else upto
        mapped = np.flatnonzero(self._mapped(n)).astype(np.int64)
        table = np.zeros(size, dtype=np.int32)
        dup = _kernels().insert_many(table, self._bytes.buf, self._ends, mapped)
        if dup >= 0:
            raise CorruptSnapshotError(f"two mapped slots hold the id {self.id_at(int(dup))!r}")
        self._table, self._count = table, int(mapped.size)

    def _insert(self, slots: np.ndarray) -> None:
        """Map the new slots ``slots`` (the last ones appended)."""
        if self._table is None:
            return  # built from the slot states when first needed
        if 2 * (self._count + slots.size) > self._table.shape[0]:  # keep the table at most half full
            self._rebuild(_table_size(self._count + slots.size), upto=int(slots[0]))
        dup = _kernels().insert_many(self._table, self._bytes.buf, self._ends, slots)
        if dup >= 0:  # the caller maps only ids that are not mapped: a broken invariant, not bad input
            raise AssertionError(f"id {self.id_at(int(dup))!r} is mapped twice")
        self._count += slots.size

    def append(self, slot: int, id_: str) -> None:
        """Give the next slot (``slot == n``) its id, and map it."""
        if slot != self.n:
            raise AssertionError(f"ids are assigned in slot order: slot {slot} after {self.n}")
        raw = id_.encode("utf-8")
        self._reserve(slot + 1)
        self._bytes.append(raw)
        self._ends[slot + 1] = self._ends[slot] + len(raw)
        self.n = slot + 1
        self._put_cache(slot, [id_])
        self._insert(np.array([slot], dtype=np.int64))

    def append_many(self, first: int, ids: list[str], mapped: bool = True) -> None:
        """Give slots ``first .. first + len(ids) - 1`` (``first == n``) their ids, and map them (with
        ``mapped=False`` the table is rebuilt from the slot states when next needed)."""
        if first != self.n:
            raise AssertionError(f"ids are assigned in slot order: slot {first} after {self.n}")
        k = len(ids)
        raw, lengths = _joined(ids)
        self._reserve(first + k)
        self._bytes.append(raw)
        self._ends[first + 1 : first + k + 1] = self._ends[first] + np.cumsum(lengths)
        self.n = first + k
        self._put_cache(first, ids)
        if not mapped:
            self._table = None
            self._count = 0
        else:
            self._insert(np.arange(first, first + k, dtype=np.int64))

    def unmap(self, slot: int) -> None:
        """The record left ``slot`` (deleted, expired, or replaced by a new version); the slot keeps its id."""
        if self._table is not None and _kernels().remove(self._table, self._bytes.buf, self._ends, slot):
            self._count -= 1

    # --- reading ----------------------------------------------------------------------------------------------

    def lookup(self, id_: str) -> int:
        """The slot of a mapped id, or -1."""
        if self._table is None:
            self._rebuild(_table_size(int(np.count_nonzero(self._mapped(self.n)))))
        out = np.empty(1, dtype=np.int64)
        try:
            raw = np.frombuffer(bytearray(id_.encode("utf-8")), dtype=np.uint8)  # writable: the kernel's type
        except UnicodeEncodeError:  # a lone surrogate: no stored id has one
            return -1
        _kernels().find_many(self._table, self._bytes.buf, self._ends, raw, np.array([0, raw.size]), out)
        return int(out[0])

    def lookup_many(self, ids: list[str]) -> np.ndarray:
        """`lookup` for many ids at once: int64 (len(ids),)."""
        if self._table is None:
            self._rebuild(_table_size(int(np.count_nonzero(self._mapped(self.n)))))
        raw, lengths = _joined(ids)
        key_ends = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=key_ends[1:])
        out = np.empty(len(ids), dtype=np.int64)
        _kernels().find_many(self._table, self._bytes.buf, self._ends, np.frombuffer(bytearray(raw), dtype=np.uint8),
                             key_ends, out)
        return out

    def _put_cache(self, first: int, ids: list[str]) -> None:
        """Keep a cache in step with appended ids (writes never start one: it is for reads)."""
        cache = self._cache
        if cache is None:
            return
        if first + len(ids) <= cache.shape[0]:
            cache[first : first + len(ids)] = ids
            lst = self._list
            if lst is not None and first + len(ids) <= len(lst):
                lst[first : first + len(ids)] = ids
        else:
            self._complete = False

    def id_at(self, slot: int) -> str:
        """The id of ``slot`` (decoded once, on first use, and cached)."""
        cache = self._cache
        if cache is not None and slot < cache.shape[0]:
            v = cache[slot]
            if v is not None:
                return v
        v = self._bytes.buf[self._ends[slot] : self._ends[slot + 1]].tobytes().decode("utf-8")
        if cache is None or cache.shape[0] < self.n:
            old = 0 if cache is None else cache.shape[0]
            # grown by half at least, so records appended one at a time do not copy the cache each time
            cache = self._cache = _grown_objects(np.empty(0, dtype=object) if cache is None else cache,
                                                 max(self.n, 1024, old + old // 2))
            self._complete = False
            lst = self._list
            if lst is not None:
                lst.extend([None] * (cache.shape[0] - len(lst)))
        cache[slot] = v
        lst = self._list
        if lst is not None and slot < len(lst):
            lst[slot] = v
        return v

    def ids_of(self, slots: list[int]) -> list[str]:
        """The ids of a few slots (a query's results).

        Read from ``_list``, a plain list beside the cache: indexing a list with a Python int costs a fifth of
        indexing an object array (whose item access goes through numpy's general machinery), and a query reads
        ten. Entries not decoded yet (None) are decoded by `id_at`, which fills both.
        """
        lst = self._list
        if lst is None:
            cache = self._cache
            if cache is not None:
                lst = self._list = cache.tolist()
        if lst is not None and len(lst) >= self.n:
            out = [lst[s] for s in slots]
            if all(out):  # no None (not decoded yet); ids are never empty, so only None is false
                return cast("list[str]", out)
        return [self.id_at(s) for s in slots]

    def array(self) -> np.ndarray:
        """Ids by slot as an object array of at least ``n`` entries (decoded in bulk on first use, then kept)."""
        cache = self._cache
        if cache is None or cache.shape[0] < self.n or not self._complete:
            from .storage.snapshot import unpack_strings

            cache = np.empty(max(self.n, 1024), dtype=object)
            if self.n:
                cache[: self.n] = unpack_strings(self._bytes.used()[: self._ends[self.n]], self._ends[: self.n + 1])
            self._cache, self._complete, self._list = cache, True, None
        return cache

    def take(self, slots: np.ndarray, mapped: Callable[[int], np.ndarray]) -> IdMap:
        """A new map where slot ``i`` holds the id of ``slots[i]`` here (compaction renumbers slots); ``mapped`` is
        the new state's mask. The bytes are gathered with array operations, nothing is decoded."""
        from .columns import _gather

        slots = np.asarray(slots, dtype=np.int64)
        blob, _, lengths = _gather(self._bytes.used(), self._ends[slots], self._ends[slots + 1] - self._ends[slots])
        out = IdMap(mapped, capacity=slots.size)
        out._bytes = ByteLog(blob)
        out._reserve(slots.size)
        out._ends[1 : slots.size + 1] = np.cumsum(lengths.astype(np.int64))
        out.n = int(slots.size)
        out._table = None
        return out

    def mapped_count(self) -> int:
        return self._count if self._table is not None else int(np.count_nonzero(self._mapped(self.n)))

    # --- persistence ------------------------------------------------------------------------------------------

    def to_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blob uint8, offsets int64 (n + 1,))`` of slots ``0 .. n-1``: views of stable bytes, no copy."""
        ends = self._ends[: n + 1]
        return self._bytes.used()[: int(ends[-1])], ends

    @classmethod
    def from_arrays(cls, blob: np.ndarray, offsets: np.ndarray, mapped: Callable[[int], np.ndarray]) -> IdMap:
        """Ids from a snapshot, used as they are (nothing decoded, no table built until needed).

        Raises:
            CorruptSnapshotError: offsets that do not start at 0, fall, or end elsewhere than the blob's end.
        """
        if blob.ndim != 1 or blob.dtype != np.uint8 or offsets.ndim != 1 or offsets.dtype != np.int64:
            raise CorruptSnapshotError("the snapshot's id table has the wrong dtype or shape")
        n = offsets.shape[0] - 1
        if n < 0 or offsets[0] != 0 or offsets[-1] != blob.shape[0] or (np.diff(offsets) < 0).any():
            raise CorruptSnapshotError("the snapshot's id offsets are inconsistent")
        _check_id_bytes(blob, offsets, mapped(n))
        out = cls(mapped, capacity=n)
        out._bytes = ByteLog(blob)
        out._ends = np.zeros(max(16, n) + 1, dtype=np.int64)
        out._ends[: n + 1] = offsets
        out.n = n
        out._table = None
        return out


def _check_id_bytes(blob: np.ndarray, offsets: np.ndarray, mapped: np.ndarray) -> None:
    """A snapshot's ids obey SPEC section 1 (1 to 512 bytes of UTF-8, no control character, no lone surrogate),
    checked with array operations and one ``bytes.decode`` of the whole blob, so that opening costs no work per id
    and `id_at` never meets bytes it cannot decode.

    ``mapped``: bool (n,), the slots holding records (only those must have an id; every id may be read).

    Raises:
        CorruptSnapshotError: naming what is wrong.
    """
    lengths = np.diff(offsets)
    if lengths.size and (int(lengths.max()) > MAX_ID_BYTES or (lengths[mapped] < 1).any()):
        raise CorruptSnapshotError(f"a snapshot id is empty or longer than {MAX_ID_BYTES} bytes")
    if not blob.size:
        return
    try:
        blob.tobytes().decode("utf-8")  # strict: encoded surrogates are refused too
    except UnicodeDecodeError as exc:
        raise CorruptSnapshotError(f"the snapshot's ids are not UTF-8 (byte {exc.start})") from None
    starts = offsets[:-1][lengths > 0]
    if ((blob[starts] & 0xC0) == 0x80).any():  # a continuation byte: the cut runs through a character
        raise CorruptSnapshotError("a snapshot id starts inside a character")
    c0 = (blob < 0x20) | (blob == 0x7F)
    c1 = (blob[:-1] == 0xC2) & (blob[1:] >= 0x80) & (blob[1:] <= 0x9F)  # U+0080..U+009F in UTF-8
    if c0.any() or c1.any():
        raise CorruptSnapshotError("a snapshot id holds a control character")


def _table_size(count: int) -> int:
    """The smallest power of two at least twice ``count`` (at most half full; doubling amortizes the rebuilds)."""
    size = 16
    while size < 2 * count:
        size *= 2
    return size


def _joined(ids: list[str]) -> tuple[bytes, np.ndarray]:
    """The ids' UTF-8 bytes, concatenated, and their lengths (int64)."""
    joined = "\0".join(ids)  # ids hold no NUL (SPEC section 1): one encode for all of them
    if joined.isascii():
        return joined.replace("\0", "").encode("ascii"), np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    raws = [i.encode("utf-8") for i in ids]
    return b"".join(raws), np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))


def _grown_objects(arr: np.ndarray, capacity: int) -> np.ndarray:
    out = np.empty(capacity, dtype=object)
    out[: arr.shape[0]] = arr
    return out
