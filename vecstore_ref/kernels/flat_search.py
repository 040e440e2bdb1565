"""Exact top-k: scan every allowed row, keep the best k in a max-heap (the oracle for every recall test).

Each kernel fills caller-allocated output rows and returns counts; none allocates per row. Alongside the top-k
they return ``next_dist``, the smallest distance among allowed rows *not* returned (``inf`` if none): when it equals
the k-th distance there is a tie at the boundary, which the store breaks by id (ids are strings the kernels never
see; :func:`ties_at` lists the tied slots).
"""

import numpy as np
from numba import njit, prange

from .distances import DOT, EUCLIDEAN, FASTMATH, distance
from .heap import heap_sort_ascending, max_heap_push


@njit(cache=True, inline="always")
def _offer(out_dists, out_slots, size, d, s, next_d):
    """Offer (d, s) to the result heap; track the best distance that is (or gets) left out."""
    k = out_dists.shape[0]
    if size < k:
        return max_heap_push(out_dists, out_slots, size, d, s), next_d
    top = out_dists[0]
    if d < top or (d == top and s < out_slots[0]):
        if top < next_d:
            next_d = top
        return max_heap_push(out_dists, out_slots, size, d, s), next_d
    if d < next_d:
        next_d = d
    return size, next_d


@njit(cache=True, fastmath=FASTMATH)
def topk_masked(metric, q, q_inv_norm, X, inv_norms, allowed, n_slots, out_dists, out_slots):
    """Top-k over slots ``0 <= s < n_slots`` with ``allowed[s]``.

    Args:
        metric: metric code (kernels.distances).
        q: float32 (d,); q_inv_norm: float32.
        X: float32 (capacity, d), C-contiguous; inv_norms: float32 (capacity,).
        allowed: bool (>= n_slots,).
        out_dists, out_slots: float32 (k,), int32 (k,): filled best first.

    Returns:
        (number found, number of distances computed, next_dist).
    """
    size = 0
    n_dist = 0
    next_d = np.float32(np.inf)
    for s in range(n_slots):
        if not allowed[s]:
            continue
        d = distance(metric, q, q_inv_norm, X, inv_norms, s)
        n_dist += 1
        size, next_d = _offer(out_dists, out_slots, size, d, np.int32(s), next_d)
    heap_sort_ascending(out_dists, out_slots, size)
    return size, n_dist, next_d


@njit(cache=True, fastmath=FASTMATH)
def topk_subset(metric, q, q_inv_norm, X, inv_norms, candidates, out_dists, out_slots):
    """Top-k over an explicit candidate list (int32 (m,)), the filtered-scan plan. Returns as topk_masked."""
    size = 0
    next_d = np.float32(np.inf)
    for i in range(candidates.shape[0]):
        s = candidates[i]
        d = distance(metric, q, q_inv_norm, X, inv_norms, s)
        size, next_d = _offer(out_dists, out_slots, size, d, s, next_d)
    heap_sort_ascending(out_dists, out_slots, size)
    return size, candidates.shape[0], next_d


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def topk_masked_batch(metric, Q, q_inv_norms, X, inv_norms, allowed, n_slots, out_dists, out_slots, out_found,
                      out_next):
    """:func:`topk_masked` for every row of ``Q`` (float32 (nq, d)), queries spread over threads (prange).

    Outputs: out_dists float32 (nq, k) (+inf padded), out_slots int32 (nq, k) (-1 padded), out_found int64 (nq,),
    out_next float32 (nq,).
    """
    for i in prange(Q.shape[0]):
        found, _, nd = topk_masked(metric, Q[i], q_inv_norms[i], X, inv_norms, allowed, n_slots, out_dists[i],
                                   out_slots[i])
        out_found[i] = found
        out_next[i] = nd


@njit(cache=True, fastmath=FASTMATH)
def ties_at(metric, q, q_inv_norm, X, inv_norms, allowed, n_slots, value, out_slots):
    """Allowed slots whose distance equals ``value`` exactly, ascending; returns how many (out_slots (n_slots,))."""
    count = 0
    for s in range(n_slots):
        if allowed[s] and distance(metric, q, q_inv_norm, X, inv_norms, s) == value:
            out_slots[count] = s
            count += 1
    return count


MERGE_CHUNK = 16  # inner products screened together before any of them is offered to a heap


@njit(cache=True, inline="always")
def _block_distance(metric, IP, i, j, q_sq_i, x_aux, s):
    """The distance of query ``i`` to row ``s`` from its BLAS inner product ``IP[i, j]`` (approximate: see
    :meth:`~vecstore_ref.index.flat.FlatIndex.search_batch_with_boundary` for how results stay exact)."""
    if metric == EUCLIDEAN:
        return (q_sq_i + x_aux[s]) - np.float32(2.0) * IP[i, j]
    if metric == DOT:
        return -IP[i, j]
    return -(IP[i, j] * x_aux[s])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
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


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def rescore_shortlists(metric, Q, q_inv_norms, X, inv_norms, heap_s, sizes, out_d, out_s):
    """Recompute the shortlisted candidates with the exact kernel distance and sort them by (distance, slot).

    out_d, out_s: float32/int32 (nq, c); entries past ``sizes[i]`` are left as given (+inf / -1).
    """
    for i in prange(Q.shape[0]):
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
