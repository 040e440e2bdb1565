"""The exact index: every query scans every allowed row (kernels in :mod:`vecstore_ref.kernels.flat_search`).

It keeps no structure of its own (``add`` and ``remove`` do nothing: the store's masks say which slots count), so it
is always consistent, and it is the oracle that every recall figure of the HNSW index is measured against.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..jit import load as load_kernels
from .base import DTYPE_SLOT, DTYPE_VEC, SearchStats, VectorTable, kernel_array, numba_threads, query_inv_norm
from .parallel import run_split

BLAS_MIN_QUERIES = 32  # below this the per-query kernel is as fast and needs no second pass
BLAS_MIN_ROWS = 4096
BLAS_MAX_K = 256
BLAS_MARGIN = 16  # extra shortlist entries that absorb BLAS rounding before the exact rescore
BLAS_BLOCK_ROWS = 2048  # a block of inner products (queries x rows) is 4 MiB: it stays in cache for the merge
BLAS_BLOCK_QUERIES = 512


class _BlasOnCallingThread:
    """While any batch search runs, BLAS calls run on the thread that makes them (needs threadpoolctl).

    The batch search runs one matrix product per core from its own thread; BLAS's own thread pool on top of that
    would put two threads on every core (measured 1.4x slower). Limiting it needs threadpoolctl, an optional
    dependency (``pip install vecstore-ref[fast]``); without it this is a no-op. The limit is process-wide, so
    overlapping searches (two stores queried from two threads) share one limit: the first to enter sets it, the
    last to leave restores the original setting.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._controller = None  # threadpoolctl's view of the loaded BLAS libraries, found once (about 1 ms)
        self._limiter = None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:
                    ThreadpoolController = None
                if ThreadpoolController is not None:
                    if self._controller is None:
                        self._controller = ThreadpoolController()
                    self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None
        return False


_blas_on_calling_thread = _BlasOnCallingThread()


class FlatIndex:
    kind = "flat"

    def __init__(self, table: VectorTable):
        self.table = table

    def add(self, slots: np.ndarray) -> None:
        """Nothing to do: the scan reads the table."""

    def remove(self, slots: np.ndarray) -> None:
        """Nothing to do: removed slots are simply not allowed."""

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {}

    def capture(self, n: int) -> tuple[dict, dict[str, np.ndarray]]:
        """Nothing to save: the exact index is the table itself."""
        return {}, {}

    @classmethod
    def from_arrays(cls, table: VectorTable, meta: dict, arrays: dict) -> FlatIndex:
        return cls(table)

    def memory_bytes(self) -> int:
        return 0

    @classmethod
    def preload_kernels(cls, metric: str = "euclidean") -> None:
        """Load (or compile) the exact-search kernels by one tiny search through the real methods (see
        `HNSWIndex.preload_kernels`)."""
        table = VectorTable(4, metric, 16)
        table.write(table.allocate(2), np.ones((2, 4), dtype=DTYPE_VEC))
        allowed = np.ones(table.capacity, dtype=np.bool_)
        idx = cls(table)
        idx.search_with_boundary(np.ones(4, dtype=DTYPE_VEC), 1, allowed)
        idx.search_subset_with_boundary(np.ones(4, dtype=DTYPE_VEC), 1, np.arange(2, dtype=DTYPE_SLOT))

    def _k(self, k: int) -> int:
        return max(0, min(int(k), self.table.n_slots))

    def search_with_boundary(self, query: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        """``(slots, dists, stats, next_dist)``: the top-k and the best distance left out (for tie-breaking)."""
        t = self.table
        k = self._k(k)
        out_d = np.full(k, np.inf, dtype=DTYPE_VEC)
        out_s = np.full(k, -1, dtype=DTYPE_SLOT)
        q = kernel_array(query, DTYPE_VEC)
        found, n_dist, next_d = load_kernels("flat_search").topk_masked(
            t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms, kernel_array(allowed, np.bool_),
            t.n_slots, out_d, out_s)
        return out_s[:found], out_d[:found], SearchStats(int(n_dist), 0), float(next_d)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        slots, dists, stats, _ = self.search_with_boundary(query, k, allowed)
        return slots, dists, stats

    def search_subset(self, query: np.ndarray, k: int, candidates: np.ndarray):
        """Top-k among ``candidates`` (int32 slots): the filtered-scan plan."""
        slots, dists, stats, _ = self.search_subset_with_boundary(query, k, candidates)
        return slots, dists, stats

    def search_subset_with_boundary(self, query: np.ndarray, k: int, candidates: np.ndarray):
        t = self.table
        k = max(0, min(int(k), len(candidates)))
        out_d = np.full(k, np.inf, dtype=DTYPE_VEC)
        out_s = np.full(k, -1, dtype=DTYPE_SLOT)
        q = kernel_array(query, DTYPE_VEC)
        cand = kernel_array(candidates, DTYPE_SLOT)
        found, n_dist, next_d = load_kernels("flat_search").topk_subset(
            t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms, cand, out_d, out_s)
        return out_s[:found], out_d[:found], SearchStats(int(n_dist), 0), float(next_d)

    def search_batch_with_boundary(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        """Top-k for every query; big batches shortlist with BLAS, then rescore exactly (see ``_blas_batch``)."""
        t = self.table
        allowed = kernel_array(allowed, np.bool_)
        if queries.shape[0] >= BLAS_MIN_QUERIES and t.n_slots >= BLAS_MIN_ROWS and 0 < k <= BLAS_MAX_K:
            return self._blas_batch(kernel_array(queries, DTYPE_VEC), self._k(k), allowed)
        Q = kernel_array(queries, DTYPE_VEC)
        nq = Q.shape[0]
        k = self._k(k)
        out_d = np.full((nq, k), np.inf, dtype=DTYPE_VEC)
        out_s = np.full((nq, k), -1, dtype=DTYPE_SLOT)
        found = np.zeros(nq, dtype=np.int64)
        nxt = np.full(nq, np.inf, dtype=DTYPE_VEC)
        if t.metric == "cosine":
            inv = (1.0 / np.linalg.norm(Q.astype(np.float64), axis=1)).astype(DTYPE_VEC)
        else:
            inv = np.ones(nq, dtype=DTYPE_VEC)
        if nq and k:
            run_split(load_kernels("flat_batch").topk_masked_batch, min(numba_threads(), nq), t.metric_code, Q, inv,
                      t.vectors, t.inv_norms, allowed, t.n_slots, out_d, out_s, found, nxt)
        n_dist = np.full(nq, int(np.count_nonzero(allowed[: t.n_slots])), dtype=np.int64)
        return out_s, out_d, n_dist, np.zeros(nq, dtype=np.int64), nxt

    def _blas_batch(self, Q: np.ndarray, k: int, allowed: np.ndarray):
        """Exact top-k for many queries at matrix-multiply speed.

        1. Distances of a block of queries to a block of rows come from one float32 matmul (BLAS), and a Numba
           kernel keeps the best ``k + BLAS_MARGIN`` of them per query (the top-k selection, not the matmul, is the
           real cost of exact search, so it stays in Numba). Each core's Python thread runs both for its own slice
           of the queries (see :func:`~vecstore_ref.kernels.flat_blas.merge_block` for why not ``prange``).
        2. The shortlist is rescored with the very kernel distance of the single-query path and sorted.
        3. A query whose rescored k-th distance comes within BLAS rounding of the shortlist's boundary (something
           outside might still belong in) is answered again by the exact scan. So results equal the single-query
           path's, bit for bit, whatever BLAS does.
        """
        blas = load_kernels("flat_blas")
        topk_masked = load_kernels("flat_search").topk_masked
        t = self.table
        n, nq, c = t.n_slots, Q.shape[0], k + BLAS_MARGIN
        X = t.vectors[:n]
        Q64 = Q.astype(np.float64)
        q_norm = np.linalg.norm(Q64, axis=1)
        if t.metric == "cosine":
            q_inv = (1.0 / q_norm).astype(DTYPE_VEC)
            Qn = (Q64 * (1.0 / q_norm)[:, None]).astype(DTYPE_VEC)
        else:
            q_inv = np.ones(nq, dtype=DTYPE_VEC)
            Qn = Q
        with np.errstate(over="ignore"):  # vectors near the float32 limits: an inf here only widens `tol` below
            x_sq = np.einsum("ij,ij->i", X, X, dtype=np.float32) if t.metric == "euclidean" else None
            q_sq = np.einsum("ij,ij->i", Q, Q, dtype=np.float32)
        x_aux = x_sq if x_sq is not None else t.inv_norms
        heap_d = np.full((nq, c), np.inf, dtype=DTYPE_VEC)
        heap_s = np.full((nq, c), -1, dtype=DTYPE_SLOT)
        sizes = np.zeros(nq, dtype=np.int64)

        def shortlist(first: int, stop: int) -> None:
            """One thread's share: queries ``first .. stop`` against every block of rows."""
            for q0 in range(first, stop, BLAS_BLOCK_QUERIES):
                q1 = min(stop, q0 + BLAS_BLOCK_QUERIES)
                for r0 in range(0, n, BLAS_BLOCK_ROWS):
                    r1 = min(n, r0 + BLAS_BLOCK_ROWS)
                    if allowed[r0:r1].any():
                        ip = np.ascontiguousarray(Qn[q0:q1] @ X[r0:r1].T, dtype=DTYPE_VEC)
                        blas.merge_block(t.metric_code, ip, r0, q_sq[q0:q1], x_aux, allowed, heap_d[q0:q1],
                                         heap_s[q0:q1], sizes[q0:q1])

        n_threads = min(numba_threads(), nq)
        cuts = np.linspace(0, nq, n_threads + 1).astype(np.int64).tolist()
        with _blas_on_calling_thread, ThreadPoolExecutor(n_threads) as pool:
            for share in [pool.submit(shortlist, cuts[j], cuts[j + 1]) for j in range(n_threads)]:
                share.result()
        exact_d = np.full((nq, c), np.inf, dtype=DTYPE_VEC)
        exact_s = np.full((nq, c), -1, dtype=DTYPE_SLOT)
        run_split(blas.rescore_shortlists, n_threads, t.metric_code, Q, q_inv, t.vectors, t.inv_norms, heap_s, sizes,
                  exact_d, exact_s)
        # BLAS rounding bound: a few float32 ulps of the largest |q||x| term, times the dimension
        with np.errstate(over="ignore"):
            x_max = float(np.sqrt(x_sq.max())) if x_sq is not None and n else float(np.linalg.norm(X, axis=1).max())
        scale = (q_norm + x_max) ** 2 if t.metric == "euclidean" else q_norm * (1.0 if t.metric == "cosine" else x_max)
        tol = 1e-5 * (t.dim ** 0.5) * scale + 1e-30
        rows = np.arange(nq)
        found = np.minimum(sizes, k)
        kept = np.arange(k)[None, :] < found[:, None]
        out_s = np.where(kept, exact_s[:, :k], -1).astype(DTYPE_SLOT)
        out_d = np.where(kept, exact_d[:, :k], np.inf).astype(DTYPE_VEC)
        nxt = np.where(found < sizes, exact_d[rows, np.minimum(found, c - 1)], np.inf).astype(DTYPE_VEC)
        # A full shortlist whose k-th exact distance comes within rounding of its worst BLAS distance may have left
        # out a row that belongs in the top k: those (rare) queries are scanned exactly.
        boundary = heap_d.max(axis=1, initial=-np.inf)
        kth = exact_d[rows, np.maximum(found - 1, 0)]
        unsure = (sizes == c) & (found > 0) & (kth + 2 * tol >= boundary)
        for i in np.flatnonzero(unsure).tolist():
            row_d = np.full(k, np.inf, dtype=DTYPE_VEC)
            row_s = np.full(k, -1, dtype=DTYPE_SLOT)
            _, _, nxt[i] = topk_masked(t.metric_code, Q[i], q_inv[i], t.vectors, t.inv_norms, allowed, n, row_d, row_s)
            out_s[i], out_d[i] = row_s, row_d
        n_allowed = int(np.count_nonzero(allowed[:n]))
        return out_s, out_d, np.full(nq, n_allowed, dtype=np.int64), np.zeros(nq, dtype=np.int64), nxt

    def search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        slots, dists, n_dist, hops, _ = self.search_batch_with_boundary(queries, k, allowed)
        return slots, dists, n_dist, hops

    def ties_at(self, query: np.ndarray, allowed: np.ndarray, dist: float) -> np.ndarray:
        """Allowed slots at exactly distance ``dist`` from ``query``, ascending."""
        t = self.table
        q = kernel_array(query, DTYPE_VEC)
        out = np.empty(t.n_slots, dtype=DTYPE_SLOT)
        n = load_kernels("flat_search").ties_at(t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms,
                                                kernel_array(allowed, np.bool_), t.n_slots, DTYPE_VEC(dist), out)
        return out[:n].copy()
