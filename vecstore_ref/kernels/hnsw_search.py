"""HNSW search kernels (Malkov & Yashunin 2018): K-NN-SEARCH for one query, and the graph arrays they walk.

The graph is plain arrays, owned and allocated by `vecstore_ref.index.hnsw`:

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

The walk itself (greedy descent, SEARCH-LAYER) is in `vecstore_ref.kernels.hnsw_walk`, the exact parts (unlinked
slots, sparse masks) in `vecstore_ref.kernels.hnsw_scan`.
"""

import numpy as np
from numba import njit

from .handoff import leave_python, wait_for_python
from .hnsw_scan import inv_norm
from .hnsw_walk import greedy_descend, next_tag, row_distance, search_layer
from .signatures import CACHE, FASTMATH, KNN_SEARCH, NO_REFCOUNT


@njit(KNN_SEARCH, cache=CACHE, nogil=True, fastmath=FASTMATH, **NO_REFCOUNT)
def knn_search(metric, q, X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed, ep, max_level, k, ef,
               visited, tags, t, scratch_d, scratch_s, unlinked, in_python, me):
    """K-NN-SEARCH (Alg. 5) for one query: greedy descent to layer 0, then SEARCH-LAYER there with the mask.

    The caller has decided to walk: when the mask allows few nodes, scanning them is cheaper (a filtered walk must
    visit about ``ef / selectivity`` nodes to fill ``W``, while the scan costs one sequential distance per allowed
    node), and the index calls `vecstore_ref.kernels.hnsw_exact.exact_knn_search` instead, compiled apart so that a
    store that never needs the scan never compiles it. The ``unlinked`` slots (written, not linked yet) are left
    out of the walk; when there are any, the index merges their exact distances in afterwards
    (`vecstore_ref.kernels.hnsw_exact.fold_unlinked_into`), for the same reason.

    Args:
        q: the query, float32 (d,), C-contiguous.
        allowed: bool (>= n_slots,): the slots that may be returned; deleted nodes never are.
        k, ef: results wanted and search width, ``1 <= k <= ef``.
        visited, tags, t: the thread's epoch array (uint16 (capacity,)), the tags (int64 (threads,)), the thread.
        scratch_d, scratch_s: float32/int32 (>= capacity + ef + 2m,): the candidate heap ``C`` in the first
            ``capacity`` entries, then ``W``; the results are left at ``[capacity, capacity + found)``, best
            first. The last 2m entries of ``scratch_s`` hold one neighbour list's unvisited nodes (the kernel
            allocates nothing, so it runs without reference counting).
        unlinked: int32 (p,), slots the walk must not return: written but not linked yet, or being linked right
            now (usually empty).
        in_python, me: `vecstore_ref.handoff.IN_PYTHON` and this thread's slot in it, or -1 (a caller that is not
            a single query, such as the batch kernel): the walk clears the slot when it starts and, before it
            returns, waits (bounded) for another query thread's Python to reach its own walk
            (`vecstore_ref.kernels.handoff`); the caller sets the slot again when it holds the GIL.

    Returns:
        ``(results found (<= k), distance computations, hops)``.
    """
    leave_python(in_python, me)
    cap = levels.shape[0]
    res_d = scratch_d[cap:cap + ef]
    res_s = scratch_s[cap:cap + ef]
    q_inv = inv_norm(metric, q)
    found = 0
    n_dist = 0
    hops = 0
    # The unlinked slots are scanned by the caller's fold; marking them visited keeps the walk from returning one
    # of them too, as it could while the linker thread is writing its links.
    tag = next_tag(visited, tags, t)
    for i in range(unlinked.shape[0]):
        visited[unlinked[i]] = tag
    if ep < 0:
        pass  # an empty graph: only unlinked slots can be found
    else:
        ep_d = row_distance(metric, q, q_inv, X, inv_norms, ep)
        # np.int64() / np.bool_() keep constant arguments from being typed as literals, so that one compiled
        # greedy_descend and search_layer serve every caller (each literal would compile another copy).
        layer0 = np.int64(0)
        cur, cur_d, n_dist, hops = greedy_descend(metric, q, q_inv, X, inv_norms, links_up, up_offset, ep, ep_d,
                                                  max_level, layer0)
        exclude = np.int64(cur) if visited[cur] == tag else np.int64(-1)  # an entry point being linked
        pending = scratch_s[scratch_s.shape[0] - links0.shape[1]:]
        found, nd, nh = search_layer(metric, q, q_inv, X, inv_norms, links0, links_up, up_offset, layer0, cur,
                                     cur_d, res_d, res_s, scratch_d[:cap], scratch_s[:cap], pending, visited, tag,
                                     allowed, deleted, np.bool_(True), exclude)
        n_dist += nd + 1
        hops += nh
    wait_for_python(in_python, me)
    return min(found, k), n_dist, hops
