"""Exact top-k for big batches at matrix-multiply speed: fold BLAS inner products into shortlists, then rescore.

The Python side (`vecstore_ref.index.flat.FlatIndex._blas_batch`) computes blocks of inner products with one
float32 matmul each; these kernels keep the best ``k + margin`` rows per query (`merge_block`) and recompute
them with the exact kernel distance (`rescore_shortlists`), so results equal the single-query path's.
"""

import numpy as np
from numba import njit

from .distances import distance
from .heap import max_heap_push
from .signatures import (
    CACHE,
    COUNTS,
    DIST,
    DOT,
    EUCLIDEAN,
    FASTMATH,
    FLOATS,
    INT,
    MASK,
    SLOT_ROWS,
    STEP,
    VECTORS,
    callee,
)

MERGE_CHUNK = 16  # inner products screened together before any of them is offered to a heap


@callee((INT, VECTORS, INT, INT, DIST, FLOATS, INT), cache=CACHE, **STEP)
def _block_distance(metric, IP, i, j, q_sq_i, x_aux, s):
    """The distance of query ``i`` to row ``s`` from its BLAS inner product ``IP[i, j]`` (approximate: see
    `FlatIndex.search_batch_with_boundary` for how results stay exact)."""
    if metric == EUCLIDEAN:
        return (q_sq_i + x_aux[s]) - np.float32(2.0) * IP[i, j]
    if metric == DOT:
        return -IP[i, j]
    return -(IP[i, j] * x_aux[s])


@njit((INT, VECTORS, INT, FLOATS, FLOATS, MASK, VECTORS, SLOT_ROWS, COUNTS), cache=CACHE, nogil=True,
      fastmath=FASTMATH)
def merge_block(metric, IP, row0, q_sq, x_aux, allowed, heap_d, heap_s, sizes):
    """Fold a block of BLAS inner products into per-query shortlist heaps (the big-batch path of the flat index).

    Once a query's heap is full, most rows cannot enter it: each chunk of ``MERGE_CHUNK`` rows is screened by its
    best distance, a branch-free minimum that vectorizes, and only a chunk that beats the worst kept entry is
    walked row by row. Serial and ``nogil``: the index runs one copy per core on Python threads, each over its own
    slice of the queries. (A ``prange`` kernel here alternated with the BLAS thread pool, and the idle threads of
    each, spinning while the other worked, halved the speed.)

    Args:
        IP: float32 (nq, b), inner products of every query (unit-normed under cosine) with rows ``row0 ..``.
        q_sq: float32 (nq,), ``|q|^2`` (euclidean only).
        x_aux: float32 (>= row0 + b,), ``|x|^2`` under euclidean, ``1/|x|`` under cosine, unused for dot.
        allowed: bool (>= row0 + b,).
        heap_d, heap_s: float32/int32 (nq, c), max-heaps of the best ``c`` so far; ``sizes`` int64 (nq,).
    """
    b = IP.shape[1]
    whole = b - b % MERGE_CHUNK  # chunks past this are partial and always walked
    for i in range(IP.shape[0]):
        size = sizes[i]
        hd = heap_d[i]
        hs = heap_s[i]
        cap = hd.shape[0]
        qi = q_sq[i]
        for j0 in range(0, b, MERGE_CHUNK):
            if size == cap and j0 < whole:
                best = np.float32(np.inf)
                for j in range(j0, j0 + MERGE_CHUNK):
                    best = min(best, _block_distance(metric, IP, i, j, qi, x_aux, row0 + j))
                if not best < hd[0]:
                    continue
            for j in range(j0, min(b, j0 + MERGE_CHUNK)):
                s = row0 + j
                if allowed[s]:
                    d = _block_distance(metric, IP, i, j, qi, x_aux, s)
                    if size < cap or d < hd[0]:
                        size = max_heap_push(hd, hs, size, d, np.int32(s))
        sizes[i] = size


@njit((INT, VECTORS, FLOATS, VECTORS, FLOATS, SLOT_ROWS, COUNTS, VECTORS, SLOT_ROWS, INT, INT), cache=CACHE, nogil=True,
      fastmath=FASTMATH)
def rescore_shortlists(metric, Q, q_inv_norms, X, inv_norms, heap_s, sizes, out_d, out_s, t, n_threads):
    """Recompute the shortlisted candidates with the exact kernel distance and sort them by (distance, slot).

    Queries ``t, t + n_threads, ...`` (this thread's share). out_d, out_s: float32/int32 (nq, c); entries past
    ``sizes[i]`` are left as given (+inf / -1).
    """
    for i in range(t, Q.shape[0], n_threads):
        n = sizes[i]
        for j in range(n):
            out_s[i, j] = heap_s[i, j]
            out_d[i, j] = distance(metric, Q[i], q_inv_norms[i], X, inv_norms, heap_s[i, j])
        # insertion sort: shortlists are short (k + a small margin)
        for a in range(1, n):
            d = out_d[i, a]
            s = out_s[i, a]
            b = a - 1
            while b >= 0 and (out_d[i, b] > d or (out_d[i, b] == d and out_s[i, b] > s)):
                out_d[i, b + 1] = out_d[i, b]
                out_s[i, b + 1] = out_s[i, b]
                b -= 1
            out_d[i, b + 1] = d
            out_s[i, b + 1] = s
