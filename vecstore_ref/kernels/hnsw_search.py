"""HNSW search kernels (Malkov & Yashunin 2018): K-NN-SEARCH for one query, and the graph arrays they walk.

The graph is plain arrays, owned and allocated by :mod:`vecstore_ref.index.hnsw`:

==============  ==============================  ==========================================================
array           dtype, shape                    meaning
==============  ==============================  ==========================================================
``links0``      int32 (capacity, 2m)            layer-0 neighbours of each slot, packed first, -1 = empty
``links_up``    int32 (rows, m)                 layers 1.. for the ~1/m nodes that reach them, packed the same
``up_offset``   int32 (capacity,)               node's row for layer ``l >= 1`` is ``up_offset[node] + l - 1``
``levels``      int8 (capacity,)                a node's top layer; -1 = not in the graph
``deleted``     uint8 (capacity,)               1 = marked deleted: traversed, never returned
==============  ==============================  ==========================================================

A neighbour list ends at its first -1, so the hot loop needs no degree array. Work counters (distance
computations, hops = nodes whose neighbour list was scanned) are returned by every kernel: the cost model and
``query_explain`` are built on them.

Visited sets are epoch arrays (uint16 (capacity,), one per thread, preallocated by the caller): a node is visited
when ``visited[node] == tag``, so a new search bumps the tag instead of clearing the array; only when the tag wraps
is the array zeroed (once per 65,535 searches).

The walk itself (greedy descent, SEARCH-LAYER) is in :mod:`vecstore_ref.kernels.hnsw_walk`.
"""

import numpy as np
from numba import njit

from .heap import heap_sort_ascending, max_heap_push
from .hnsw_walk import greedy_descend, next_tag, row_distance, search_layer
from .signatures import (
    CACHE,
    COSINE,
    COUNTS,
    EPOCHS,
    FASTMATH,
    FLAGS,
    FLOATS,
    INT,
    INTERNAL,
    LEVELS,
    MASK,
    NO_REFCOUNT,
    SLOT_ROWS,
    SLOTS,
    VECTOR,
    VECTORS,
)

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

    Nodes marked ``visited[s] == tag`` are skipped (the caller scans them itself, see :func:`knn_search`).

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

    Vectors written but not linked yet (see :mod:`vecstore_ref.index.link_queue`) are not in the graph, or sit in
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


@njit((INT, VECTOR, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, LEVELS, FLAGS, MASK, INT, INT, INT, INT, EPOCHS, COUNTS,
       INT, FLOATS, SLOTS, INT, SLOTS), cache=CACHE, nogil=True, fastmath=FASTMATH)
def knn_search(metric, q, X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed, ep, max_level, k, ef,
               visited, tags, t, scratch_d, scratch_s, scan_limit, unlinked):
    """K-NN-SEARCH (Alg. 5) for one query: greedy descent to layer 0, then SEARCH-LAYER there with the mask.

    When the mask allows few nodes, they are scanned exactly instead: a filtered walk must visit about
    ``ef / selectivity`` nodes to fill ``W``, while the scan costs one sequential distance per allowed node.
    The ``unlinked`` slots (written, not linked yet) are scanned exactly and merged in (:func:`fold_unlinked`).

    Args:
        q: the query, float32 (d,), C-contiguous.
        allowed: bool (>= n_slots,): the slots that may be returned; deleted nodes never are.
        k, ef: results wanted and search width, ``1 <= k <= ef``.
        visited, tags, t: the thread's epoch array (uint16 (capacity,)), the tags (int64 (threads,)), the thread.
        scratch_d, scratch_s: float32/int32 (capacity + ef,): the candidate heap ``C`` in the first ``capacity``
            entries, then ``W``; the results are left at ``[capacity, capacity + found)``, best first.
        scan_limit: scan exactly if at most this many slots are allowed (decided here, see
            :func:`prefer_exact`); -1 = always walk, -2 = always scan.
        unlinked: int32 (p,), slots to scan exactly rather than through the graph: written but not linked yet,
            or being linked right now (usually empty).

    Returns:
        ``(results found (<= k), distance computations, hops)``.
    """
    cap = levels.shape[0]
    res_d = scratch_d[cap:cap + ef]
    res_s = scratch_s[cap:cap + ef]
    q_inv = inv_norm(metric, q)
    found = 0
    n_dist = 0
    hops = 0
    # The unlinked slots are scanned by fold_unlinked below; marking them visited keeps the walk (or the exact
    # scan) from returning one of them too, as it could while the linker thread is writing its links.
    tag = next_tag(visited, tags, t)
    for i in range(unlinked.shape[0]):
        visited[unlinked[i]] = tag
    if ep < 0:
        pass  # an empty graph: only unlinked slots can be found
    elif scan_limit == -2 or (scan_limit >= 0 and prefer_exact(allowed[:cap], scan_limit)):
        found, n_dist = exact_scan(metric, q, q_inv, X, inv_norms, allowed, deleted, levels, visited, tag,
                                   res_d[:k], res_s[:k])
    else:
        ep_d = row_distance(metric, q, q_inv, X, inv_norms, ep)
        # np.int64() / np.bool_() keep constant arguments from being typed as literals, so that one compiled
        # greedy_descend and search_layer serve every caller (each literal would compile another copy).
        layer0 = np.int64(0)
        cur, cur_d, n_dist, hops = greedy_descend(metric, q, q_inv, X, inv_norms, links_up, up_offset, ep, ep_d,
                                                  max_level, layer0)
        exclude = np.int64(cur) if visited[cur] == tag else np.int64(-1)  # an entry point being linked
        pending = np.empty(links0.shape[1], dtype=np.int32)
        found, nd, nh = search_layer(metric, q, q_inv, X, inv_norms, links0, links_up, up_offset, layer0, cur,
                                     cur_d, res_d, res_s, scratch_d[:cap], scratch_s[:cap], pending, visited, tag,
                                     allowed, deleted, np.bool_(True), exclude)
        n_dist += nd + 1
        hops += nh
    if unlinked.shape[0] > 0:
        found, nd = fold_unlinked(metric, q, q_inv, X, inv_norms, allowed, unlinked, res_d, res_s, found,
                                  scratch_d[:k], scratch_s[:k])
        n_dist += nd
    return min(found, k), n_dist, hops
