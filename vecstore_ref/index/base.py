"""What every index shares: the vector table it reads, the search result it returns, and the protocol.

The store owns one :class:`VectorTable` (the vectors by internal slot) and hands it to its index. Indexes never
copy the vectors: they read ``table.vectors`` on every call, so a table that grows is seen at once.

Slots are ``int32`` row numbers; ids (strings) never reach an index. An index returns *distances* (lower is
better, see :mod:`vecstore_ref.kernels.distances`); :func:`scores_from_distances` turns them into the scores users
see (higher is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..config import METRIC_CODES

DTYPE_VEC = np.float32
DTYPE_SLOT = np.int32
NO_SLOT = -1  # sentinel for "empty" in slot arrays


class VectorTable:
    """Vectors by slot, float32 (capacity, dim), C-contiguous, plus ``1/|x|`` per slot for cosine.

    Capacity doubles when full; slots are never moved except by compaction, which builds a new table.
    """

    def __init__(self, dim: int, metric: str, capacity: int = 1024):
        self.dim = int(dim)
        self.metric = metric
        self.metric_code = METRIC_CODES[metric]
        capacity = max(16, int(capacity))
        self.vectors = np.zeros((capacity, self.dim), dtype=DTYPE_VEC)
        self.inv_norms = np.ones(capacity, dtype=DTYPE_VEC)
        self.n_slots = 0  # high-water mark: slots [0, n_slots) have been handed out

    @classmethod
    def adopt(cls, dim: int, metric: str, vectors: np.ndarray, inv_norms: np.ndarray, n_slots: int) -> VectorTable:
        """A table over arrays that already hold ``n_slots`` slots, used as they are (a snapshot read in place).

        ``vectors`` float32 (capacity, dim) and ``inv_norms`` float32 (capacity,), C-contiguous; rows from
        ``n_slots`` on are free room.
        """
        t = cls.__new__(cls)
        t.dim, t.metric, t.metric_code = int(dim), metric, METRIC_CODES[metric]
        t.vectors, t.inv_norms, t.n_slots = vectors, inv_norms, int(n_slots)
        return t

    @property
    def capacity(self) -> int:
        return self.vectors.shape[0]

    def reserve(self, n_slots: int) -> None:
        """Make room for ``n_slots`` slots (amortized doubling)."""
        if n_slots <= self.capacity:
            return
        new_cap = self.capacity
        while new_cap < n_slots:
            new_cap *= 2
        vectors = np.zeros((new_cap, self.dim), dtype=DTYPE_VEC)
        vectors[: self.n_slots] = self.vectors[: self.n_slots]
        inv = np.ones(new_cap, dtype=DTYPE_VEC)
        inv[: self.n_slots] = self.inv_norms[: self.n_slots]
        self.vectors, self.inv_norms = vectors, inv

    def allocate(self, n: int) -> np.ndarray:
        """Hand out ``n`` fresh slots at the end of the table; returns them as int32."""
        start = self.n_slots
        self.reserve(start + n)
        self.n_slots = start + n
        return np.arange(start, start + n, dtype=DTYPE_SLOT)

    def write(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (float32 (n, dim)) at ``slots`` and refresh their inverse norms."""
        self.vectors[slots] = vectors
        if self.metric == "cosine":
            v = vectors.astype(np.float64)
            self.inv_norms[slots] = (1.0 / np.sqrt(np.einsum("ij,ij->i", v, v))).astype(DTYPE_VEC)


@dataclass
class SearchStats:
    """Work counters of one search: the cost model and ``query_explain`` are built on them."""

    distance_computations: int = 0
    hops: int = 0


class Index(Protocol):
    """The interface the store relies on; :class:`FlatIndex` and :class:`HNSWIndex` implement it."""

    kind: str
    table: VectorTable

    def add(self, slots: np.ndarray) -> None:
        """Index ``slots`` (int32) whose vectors are already in the table; a slot seen before is relinked."""

    def remove(self, slots: np.ndarray) -> None:
        """Forget ``slots`` as results (HNSW keeps them for traversal until compaction)."""

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None):
        """Top-k among ``allowed`` (bool (n_slots,)) for one query (float32 (dim,)).

        Returns ``(slots int32 (m,), distances float32 (m,), SearchStats)`` with m <= k, best first.
        """

    def search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None):
        """Top-k for each row of ``queries`` (float32 (nq, dim)), in parallel.

        Returns ``(slots int32 (nq, k) padded -1, distances float32 (nq, k) padded +inf,
        distance_computations int64 (nq,), hops int64 (nq,))``.
        """

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(json-able params, named arrays)`` to persist in a snapshot."""


def query_inv_norm(metric: str, q: np.ndarray) -> np.float32:
    """``1/|q|`` for cosine (norm computed in float64), 1 otherwise."""
    if metric != "cosine":
        return DTYPE_VEC(1.0)
    return DTYPE_VEC(1.0 / np.linalg.norm(q.astype(np.float64)))


def scores_from_distances(metric: str, distances: np.ndarray) -> np.ndarray:
    """Users' scores (higher is better) from kernel distances: ``-sqrt(d)`` for euclidean, ``-d`` otherwise."""
    d = np.asarray(distances, dtype=DTYPE_VEC)
    if metric == "euclidean":
        return -np.sqrt(np.maximum(d, DTYPE_VEC(0.0)))
    return -d


def numba_threads() -> int:
    """The threads Numba's parallel kernels use (``numba.set_num_threads``); the batch paths split work by it."""
    from numba import get_num_threads

    return max(1, get_num_threads())


def kernel_array(a, dtype) -> np.ndarray:
    """``a`` as the kernels take it: an ndarray of exactly ``dtype``, C-contiguous and writable (a copy only if not).

    Each kernel is compiled for that one array type (see :mod:`vecstore_ref.kernels.signatures`).
    """
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, dtype=dtype, order="C")
