"""Exact top-k: scan every allowed row, keep the best k in a max-heap (the oracle for every recall test).

Each kernel fills caller-allocated output rows and returns counts; none allocates per row. Alongside the top-k
they return ``next_dist``, the smallest distance among allowed rows *not* returned (``inf`` if none): when it equals
the k-th distance there is a tie at the boundary, which the store breaks by id (ids are strings the kernels never
see; `ties_at` lists the tied slots).
"""

import numpy as np
from numba import njit

from .distances import distance
from .heap import heap_sort_ascending, max_heap_push
from .signatures import (
    CACHE,
    DIST,
    FASTMATH,
    FLOATS,
    INT,
    MASK,
    NO_REFCOUNT,
    SLOTS,
    STEP,
    VECTOR,
    VECTORS,
    callee,
)


@callee((FLOATS, SLOTS, INT, DIST, INT, DIST), cache=CACHE, **STEP)
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


@njit((INT, VECTOR, DIST, VECTORS, FLOATS, MASK, INT, FLOATS, SLOTS), cache=CACHE, nogil=True, fastmath=FASTMATH,
      **NO_REFCOUNT)
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


@njit((INT, VECTOR, DIST, VECTORS, FLOATS, SLOTS, FLOATS, SLOTS), cache=CACHE, nogil=True, fastmath=FASTMATH,
      **NO_REFCOUNT)
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


@njit((INT, VECTOR, DIST, VECTORS, FLOATS, MASK, INT, DIST, SLOTS), cache=CACHE, nogil=True, fastmath=FASTMATH,
      **NO_REFCOUNT)
def ties_at(metric, q, q_inv_norm, X, inv_norms, allowed, n_slots, value, out_slots):
    """Allowed slots whose distance equals ``value`` exactly, ascending; returns how many (out_slots (n_slots,))."""
    count = 0
    for s in range(n_slots):
        if allowed[s] and distance(metric, q, q_inv_norm, X, inv_norms, s) == value:
            out_slots[count] = s
            count += 1
    return count
