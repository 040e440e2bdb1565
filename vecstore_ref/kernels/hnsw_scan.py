"""The exact parts of an HNSW query: scanning the slots a walk cannot serve, ranked as the flat index ranks.

- `fold_unlinked` merges the vectors written but not linked yet (`vecstore_ref.index.link_queue`) into a walk's
  results; `knn_search` and the filtered walk call it.
- `exact_knn` answers a query by scanning every allowed node, for a mask that allows so few that the scan beats a
  walk (`vecstore_ref.kernels.hnsw_exact` for one query; the batch kernel, which decides with `prefer_exact` from
  a sample of the mask, for many).

Every kernel here is internal (called by other kernels only) and compiles when a caller does: none is compiled
by importing this module.
"""

import numpy as np
from numba import njit

from .heap import heap_sort_ascending, max_heap_push
from .hnsw_walk import next_tag, row_distance
from .signatures import CACHE, COSINE, FASTMATH, INTERNAL, NO_REFCOUNT

MASK_SAMPLE = 256  # mask entries sampled (evenly spaced) to rule out the dense case in O(1)


@njit(cache=CACHE, **INTERNAL)
def inv_norm(metric, q):
    """``1/|q|`` of a query under cosine (summed in float64, in order), 1 for the other metrics."""
    if metric != COSINE:
        return np.float32(1.0)
    s = 0.0
    for j in range(q.shape[0]):
        v = np.float64(q[j])
        s += v * v
    return np.float32(1.0 / np.sqrt(s))


@njit(cache=CACHE, **INTERNAL)
def count_allowed(allowed, n_slots, limit):
    """How many of ``allowed[:n_slots]`` are set, counted in blocks (which vectorize) until past ``limit``."""
    c = 0
    for start in range(0, n_slots, 4096):
        for s in range(start, min(start + 4096, n_slots)):
            c += allowed[s]
        if c > limit:
            break
    return c


@njit(cache=CACHE, **INTERNAL)
def prefer_exact(allowed, scan_limit):
    """True when the mask allows at most ``scan_limit`` slots, so that scanning them beats a filtered walk.

    An evenly spaced sample of the mask settles the dense case (every unfiltered query) in O(1); only a mask that
    looks sparse is counted. ``allowed``: bool (capacity,) (the caller cuts the mask to the capacity).
    """
    n_slots = allowed.shape[0]
    step = max(1, n_slots // MASK_SAMPLE)
    hits = 0
    total = 0
    for s in range(0, n_slots, step):
        total += 1
        hits += allowed[s]
    if hits * n_slots > 2 * scan_limit * total:
        return False  # the sample puts the allowed count at more than twice the limit
    return count_allowed(allowed, n_slots, scan_limit) <= scan_limit


@njit(cache=CACHE, fastmath=FASTMATH, **NO_REFCOUNT, **INTERNAL)
def exact_scan(metric, q, q_inv, X, inv_norms, allowed, deleted, levels, visited, tag, res_d, res_s):
    """Top ``res_d.shape[0]`` of the allowed, live nodes by scanning them all (the sparse-filter path).

    Nodes marked ``visited[s] == tag`` are skipped (the caller scans them itself, see `knn_search`).

    Returns ``(results, distance computations)``; results sorted best first by (distance, slot), exactly as the
    flat index ranks them.
    """
    n_res = 0
    n_dist = 0
    for s in range(min(allowed.shape[0], levels.shape[0])):
        if allowed[s] and deleted[s] == 0 and levels[s] >= 0 and visited[s] != tag:
            d = row_distance(metric, q, q_inv, X, inv_norms, s)
            n_dist += 1
            n_res = max_heap_push(res_d, res_s, n_res, d, s)
    heap_sort_ascending(res_d, res_s, n_res)
    return n_res, n_dist


@njit(cache=CACHE, fastmath=FASTMATH, **NO_REFCOUNT, **INTERNAL)
def fold_unlinked(metric, q, q_inv, X, inv_norms, allowed, unlinked, res_d, res_s, found, heap_d, heap_s):
    """Merge the exact distances of the ``unlinked`` slots into the graph's sorted results ``res[:found]``.

    Vectors written but not linked yet (see `vecstore_ref.index.link_queue`) are not in the graph, or sit in
    it marked deleted until their relink; a query scans them one by one. ``heap_d``/``heap_s`` (k entries, scratch)
    hold a max-heap of the best k; the merged list is left sorted in ``res[:k]``. Returns ``(found, distances)``.
    """
    n = 0
    for j in range(min(found, heap_d.shape[0])):
        n = max_heap_push(heap_d, heap_s, n, res_d[j], res_s[j])
    n_dist = 0
    for i in range(unlinked.shape[0]):
        s = unlinked[i]
        if allowed[s]:
            d = row_distance(metric, q, q_inv, X, inv_norms, s)
            n_dist += 1
            n = max_heap_push(heap_d, heap_s, n, d, s)
    heap_sort_ascending(heap_d, heap_s, n)
    for j in range(n):
        res_d[j] = heap_d[j]
        res_s[j] = heap_s[j]
    return n, n_dist


@njit(cache=CACHE, fastmath=FASTMATH, **INTERNAL)
def exact_knn(metric, q, X, inv_norms, levels, deleted, allowed, k, visited, tags, t, scratch_d, scratch_s,
              unlinked):
    """`knn_search`'s answer by scanning every allowed node (the sparse-mask path), with the unlinked slots folded
    in: exact, ranked by (distance, slot) as the flat index ranks. Results at ``scratch[cap:cap + found]``."""
    cap = levels.shape[0]
    res_d = scratch_d[cap:cap + k]
    res_s = scratch_s[cap:cap + k]
    q_inv = inv_norm(metric, q)
    tag = next_tag(visited, tags, t)
    for i in range(unlinked.shape[0]):
        visited[unlinked[i]] = tag  # fold_unlinked scans them; the scan below must not return them twice
    found, n_dist = exact_scan(metric, q, q_inv, X, inv_norms, allowed, deleted, levels, visited, tag, res_d, res_s)
    if unlinked.shape[0] > 0:
        found, nd = fold_unlinked(metric, q, q_inv, X, inv_norms, allowed, unlinked, res_d, res_s, found,
                                  scratch_d[:k], scratch_s[:k])
        n_dist += nd
    return min(found, k), n_dist, 0
