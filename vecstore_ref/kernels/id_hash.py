"""The id -> slot hash table: open addressing over the ids' UTF-8 bytes, as they sit in the store's id buffer.

A Python dict of a million ids costs about 150 MB (the dict, a str and an int object per record); this table costs
4 bytes per entry of a power-of-two array kept at most half full, and reads the ids where they already are
(`vecstore_ref.ids`: ``blob[ends[s] : ends[s + 1]]`` is the id of slot ``s``).

``table[i]`` holds ``slot + 1``, or 0 for an empty entry. A key's home entry is ``fnv1a(key) & (size - 1)``;
collisions probe linearly, and a removal shifts the entries after it back (no tombstones), so a probe stops at
the first empty entry.
"""

import numpy as np
from numba import njit, types

from .signatures import CACHE, COUNTS, INT, STEP, callee

BYTES = types.uint8[::1]
TABLE = types.int32[::1]
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


@callee(types.uint64(BYTES, INT, INT), cache=CACHE, **STEP)
def _fnv1a(data, a, b):
    """FNV-1a of ``data[a:b]`` (uint8)."""
    h = FNV_OFFSET
    for i in range(a, b):
        h = (h ^ np.uint64(data[i])) * FNV_PRIME
    return h


@callee(types.boolean(BYTES, COUNTS, INT, BYTES, INT, INT), cache=CACHE, **STEP)
def _same(blob, ends, slot, key, ka, kb):
    """Whether the id of ``slot`` equals ``key[ka:kb]``."""
    a = ends[slot]
    n = ends[slot + 1] - a
    if n != kb - ka:
        return False
    for i in range(n):
        if blob[a + i] != key[ka + i]:
            return False
    return True


@callee(INT(TABLE, BYTES, COUNTS, BYTES, INT, INT), cache=CACHE, **STEP)
def _find(table, blob, ends, key, ka, kb):
    mask = table.shape[0] - 1
    i = np.int64(_fnv1a(key, ka, kb) & np.uint64(mask))
    while True:
        e = table[i]
        if e == 0:
            return -1
        if _same(blob, ends, e - 1, key, ka, kb):
            return e - 1
        i = (i + 1) & mask


@njit(types.void(TABLE, BYTES, COUNTS, BYTES, COUNTS, COUNTS), cache=CACHE, nogil=True)
def find_many(table, blob, ends, keys, key_ends, out):
    """Slot of each key, or -1: key j is ``keys[key_ends[j] : key_ends[j + 1]]`` (``out``: int64 (n_keys,))."""
    for j in range(out.shape[0]):
        out[j] = _find(table, blob, ends, keys, key_ends[j], key_ends[j + 1])


@njit(INT(TABLE, BYTES, COUNTS, COUNTS), cache=CACHE, nogil=True)
def insert_many(table, blob, ends, slots):
    """Add ``slots`` (int64) under their ids; returns the first slot whose id is already in the table (nothing
    more is added then), or -1. The caller keeps the table at most half full."""
    mask = table.shape[0] - 1
    for j in range(slots.shape[0]):
        s = slots[j]
        a = ends[s]
        b = ends[s + 1]
        i = np.int64(_fnv1a(blob, a, b) & np.uint64(mask))
        while True:
            e = table[i]
            if e == 0:
                table[i] = np.int32(s + 1)
                break
            if _same(blob, ends, e - 1, blob, a, b):
                return s
            i = (i + 1) & mask
    return -1


@njit(types.boolean(TABLE, BYTES, COUNTS, INT), cache=CACHE, nogil=True)
def remove(table, blob, ends, slot):
    """Remove the entry of ``slot`` (found by its id), shifting later entries of its run back; True if found."""
    mask = table.shape[0] - 1
    a = ends[slot]
    b = ends[slot + 1]
    i = np.int64(_fnv1a(blob, a, b) & np.uint64(mask))
    while True:
        e = table[i]
        if e == 0:
            return False
        if np.int64(e) - 1 == slot:
            break
        i = (i + 1) & mask
    # backward-shift deletion: move up every later entry whose home is not between the hole and itself
    j = i
    while True:
        j = (j + 1) & mask
        e = table[j]
        if e == 0:
            break
        s = e - 1
        home = np.int64(_fnv1a(blob, ends[s], ends[s + 1]) & np.uint64(mask))
        if i <= j:
            stays = i < home and home <= j  # its home lies after the hole: the entry must not move before it
        else:
            stays = home > i or home <= j
        if not stays:
            table[i] = e
            i = j
    table[i] = 0
    return True
