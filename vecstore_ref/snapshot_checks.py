"""What a snapshot's header and vectors must satisfy before a store adopts them (SPEC sections 1 and 6).

A snapshot's checksum only says the file is whole, not that its writer was this library: a hostile backup can carry
a valid checksum over any JSON and any numbers. So every header field that sizes an allocation, picks a code path or
is handed to an index is checked for its type and range here, and the vectors are held to the rules a live write
obeys, before anything is allocated from them. Anything wrong is `CorruptSnapshotError`, never the ``TypeError`` or
``MemoryError`` the field would cause later. The checks cost one pass over the vectors and none per record in Python.
"""

from __future__ import annotations

import numpy as np

from .config import MAX_DIM
from .errors import CorruptSnapshotError
from .validation import CLEARLY_VALID_SQUARED_NORM, MIN_COSINE_NORM

_CHUNK_ROWS = 4096  # rows converted to float64 at a time
_INV_NORM_TOLERANCE = 1e-2  # float32 sums of squares are within 0.5% of the exact one even at MAX_DIM


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is not a count


def check_header(header: object) -> tuple[int, int | None]:
    """The slot count and dimension of a snapshot's state header, after checking every field the state reads.

    Raises:
        CorruptSnapshotError: a field of the wrong type or out of range (``n_slots``, ``dim``, ``counts``,
            ``columns``, ``index_kind``, ``index_meta``).
    """
    if type(header) is not dict:
        raise CorruptSnapshotError("the snapshot header is not a JSON object")
    n = header.get("n_slots", 0)
    if not _is_int(n) or n < 0:
        raise CorruptSnapshotError(f"the snapshot's slot count {n!r:.40} is not a count")
    dim = header.get("dim")
    if dim is not None and (not _is_int(dim) or not 1 <= dim <= MAX_DIM):
        raise CorruptSnapshotError(f"the snapshot's dimension {dim!r:.40} is not 1..{MAX_DIM}")
    for key in ("counts", "columns", "index_meta"):
        value = header.get(key)
        if value is not None and type(value) is not dict:
            raise CorruptSnapshotError(f"the snapshot's {key} {value!r:.40} is not a JSON object")
    kind = header.get("index_kind")
    if kind is not None and type(kind) is not str:
        raise CorruptSnapshotError(f"the snapshot's index kind {kind!r:.40} is not a name")
    return n, dim


def check_vectors(vectors: np.ndarray, inv_norms: np.ndarray | None, metric: str,
                  free: np.ndarray | None = None) -> None:
    """Every stored vector is finite and, under cosine, has a norm above ``MIN_COSINE_NORM`` and the inverse norm
    the table would compute for it (what a query divides by).

    A free slot holds no record (a batch that wrote an id twice leaves the first slot free, zeroed): it must only
    be finite with a finite, positive inverse norm, since a kernel may still read it.

    Args:
        vectors: float32 (n, dim), the snapshot's rows, free slots too.
        inv_norms: float32 (n,), or None (a snapshot that stores none).
        metric: the store's metric.
        free: bool (n,), the free slots (None: every slot holds a record).

    Raises:
        CorruptSnapshotError: naming the first bad slot.
    """
    if vectors.shape[0] == 0:
        return
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", vectors, vectors)
    clear = (sq > CLEARLY_VALID_SQUARED_NORM[0]) & (sq < CLEARLY_VALID_SQUARED_NORM[1])
    unclear = np.flatnonzero(~clear)
    for a in range(0, unclear.size, _CHUNK_ROWS):  # rare rows (tiny, huge, non-finite), judged in float64
        rows = vectors[unclear[a:a + _CHUNK_ROWS]].astype(np.float64)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            slot = int(unclear[a + int(np.flatnonzero(~finite)[0])])
            raise CorruptSnapshotError(f"snapshot slot {slot} holds a non-finite vector value")
        if metric == "cosine":
            flat = ~(np.linalg.norm(rows, axis=1) > MIN_COSINE_NORM)
            if free is not None:
                flat &= ~free[unclear[a:a + _CHUNK_ROWS]]
            if flat.any():
                slot = int(unclear[a + int(np.flatnonzero(flat)[0])])
                raise CorruptSnapshotError(f"snapshot slot {slot} holds a vector without direction under cosine")
    if metric != "cosine" or inv_norms is None:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~(np.abs(inv_norms * np.sqrt(sq) - 1.0) < _INV_NORM_TOLERANCE)
        if unclear.size:  # their float32 squares are off: only a usable inverse norm is asked of them
            rest = inv_norms[unclear]
            bad[unclear] = ~(np.isfinite(rest) & (rest > 0))
        if free is not None and free.any():  # no record, no norm to match
            rest = inv_norms[free]
            bad[free] = ~(np.isfinite(rest) & (rest > 0))
    if bad.any():
        slot = int(np.flatnonzero(bad)[0])
        raise CorruptSnapshotError(f"snapshot slot {slot} has an inverse norm that does not match its vector")
