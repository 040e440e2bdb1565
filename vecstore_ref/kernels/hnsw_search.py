"""HNSW search kernels (Malkov & Yashunin 2018): greedy descent, SEARCH-LAYER, K-NN-SEARCH, and its batch form.

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

Two things decide the speed of a graph walk:

- Memory latency. Every distance reads a vector from a random row, so SEARCH-LAYER scans a neighbour list in two
  passes: the first marks the unvisited neighbours and requests all of their rows at once (software prefetch), the
  second computes the distances while those rows arrive.
- Reference counting. Numba counts references to every array a compiled function receives, with atomic
  instructions; in the per-distance loop that was a third of the search time. The walk kernels therefore allocate
  nothing and are compiled without it (``NO_REFCOUNT``), and the steps of their hot loops are inlined: the heap
  operations of :mod:`vecstore_ref.kernels.heap` are ``inline="always"``, and :func:`row_distance` is an
  ``inline="always"`` copy of :func:`vecstore_ref.kernels.distances.distance` (the same operations in the same
  order, so rankings and ties agree with the flat index).
"""

import numpy as np
from numba import njit, prange

from .distances import COSINE, DOT, EUCLIDEAN, FASTMATH, cosine_f64, cosine_scale
from .heap import heap_sort_ascending, max_heap_push, min_heap_pop, min_heap_push, worse
from .prefetch import prefetch_row

# Kernels that allocate nothing are compiled without Numba's reference counting of arrays (NRT): otherwise every
# array a compiled function receives, and every inlined helper's array argument, costs an atomic increment and
# decrement, which measured at a third of the search time. Such a kernel must not create or return an array.
NO_REFCOUNT = {"_nrt": False}

TAG_MAX = 65535  # the largest uint16 epoch; the visited array is cleared when a tag would pass it
LINE_FLOATS = 16  # float32 values per 64-byte cache line: a row is prefetched one line at a time

MASK_SAMPLE = 256  # mask entries sampled (evenly spaced) to rule out the dense case in O(1)


# --- inlined steps of the hot loops -----------------------------------------------------------------------------

@njit(cache=True, inline="always", fastmath=FASTMATH)
def row_distance(metric, q, q_inv, X, inv_norms, i):
    """Distance (lower is better) from query ``q`` (float32 (d,)) to row ``i`` of ``X``: ``distances.distance``."""
    s = np.float32(0.0)
    if metric == EUCLIDEAN:
        for j in range(q.shape[0]):
            t = q[j] - X[i, j]
            s += t * t
        return s
    for j in range(q.shape[0]):
        s += q[j] * X[i, j]
    if metric == DOT:
        return -s
    inv = cosine_scale(q_inv, inv_norms[i])
    if inv > 0:
        return -(s * inv)
    return cosine_f64(q, X, i)


@njit(cache=True, inline="always", fastmath=FASTMATH)
def rows_distance(metric, X, inv_norms, a, b):
    """Distance between stored rows ``a`` and ``b``: ``distances.distance_between_rows``."""
    s = np.float32(0.0)
    if metric == EUCLIDEAN:
        for j in range(X.shape[1]):
            t = X[a, j] - X[b, j]
            s += t * t
        return s
    for j in range(X.shape[1]):
        s += X[a, j] * X[b, j]
    if metric == DOT:
        return -s
    inv = cosine_scale(inv_norms[a], inv_norms[b])
    if inv > 0:
        return -(s * inv)
    return cosine_f64(X[a], X, b)


@njit(cache=True, inline="always")
def next_tag(visited, tags, t):
    """Start a new search epoch on ``visited`` (uint16 (capacity,)) for thread ``t``; returns the tag to use.

    ``tags``: int64 (threads,), the last tag used per thread.
    """
    tag = tags[t] + 1
    if tag > TAG_MAX:
        visited[:] = 0
        tag = 1
    tags[t] = tag
    return tag


# --- the steps of the paper -------------------------------------------------------------------------------------

@njit(cache=True, fastmath=FASTMATH, **NO_REFCOUNT)
def greedy_descend(metric, q, q_inv, X, inv_norms, links_up, up_offset, ep, ep_d, top_level, stop_level):
    """Greedy search with ef = 1 from ``top_level`` down to ``stop_level + 1`` (Alg. 5 lines 1-5, Alg. 1 lines 5-7).

    On each upper layer, move to the closest neighbour as long as one is closer than the current node.

    Args:
        q: the query, float32 (d,); q_inv its ``1/|q|`` under cosine.
        ep, ep_d: the entry point and its distance to ``q``.
        top_level, stop_level: layers ``top_level .. stop_level + 1`` are walked (none if equal).

    Returns:
        ``(node, distance, distance computations, hops)``: the entry point for layer ``stop_level``.
    """
    cur = ep
    cur_d = ep_d
    n_dist = 0
    hops = 0
    width = links_up.shape[1]
    for level in range(top_level, stop_level, -1):
        changed = True
        while changed:
            changed = False
            hops += 1
            r = up_offset[cur] + level - 1
            for j in range(width):
                e = links_up[r, j]
                if e < 0:
                    break
                d = row_distance(metric, q, q_inv, X, inv_norms, e)
                n_dist += 1
                if d < cur_d or (d == cur_d and e < cur):
                    cur_d = d
                    cur = e
                    changed = True
    return cur, cur_d, n_dist, hops


@njit(cache=True, fastmath=FASTMATH, **NO_REFCOUNT)
def search_layer(metric, q, q_inv, X, inv_norms, links0, links_up, up_offset, level, ep, ep_d, res_d, res_s,
                 cand_d, cand_s, pending, visited, tag, allowed, deleted, use_filter, exclude):
    """SEARCH-LAYER (Alg. 2): best-first search from ``ep`` keeping the ``ef = res_d.shape[0]`` closest nodes.

    ``C`` (candidates to expand) is a min-heap, ``W`` (results) a max-heap whose top is the worst kept result; the
    walk stops when the closest candidate is farther than the worst result of a full ``W``. With ``use_filter``,
    only nodes with ``allowed[node]`` and not ``deleted[node]`` enter ``W``, but every node is traversed, so
    filtered-out and deleted nodes still lead the way (a ``W`` that is not full never stops the walk).

    Args:
        level: the layer searched.
        ep, ep_d: the entry point and its distance to ``q``; the caller has not marked it visited.
        res_d, res_s: float32/int32 (ef,), receive ``W`` sorted best first by (distance, slot).
        cand_d, cand_s: float32/int32 (>= nodes in the graph,), scratch for ``C``.
        pending: int32 (>= 2m,), scratch for one neighbour list's unvisited nodes.
        visited, tag: the epoch array (uint16 (capacity,)) and this search's tag.
        allowed: bool (>= n_slots,), read only with ``use_filter``.
        deleted: uint8 (capacity,), read only with ``use_filter``.
        exclude: a slot never put in ``W`` (a node being relinked must not find itself), or -1.

    Returns:
        ``(results in W, distance computations, hops)``.
    """
    ef = res_d.shape[0]
    cosine = metric == COSINE
    Xf = X.reshape(-1)  # the same memory, one float per index: lets the prefetch name every line of a row
    dim = X.shape[1]
    links = links0 if level == 0 else links_up
    width = links.shape[1]
    n_cand = 0
    n_res = 0
    n_dist = 0
    hops = 0
    visited[ep] = tag
    n_cand = min_heap_push(cand_d, cand_s, n_cand, ep_d, ep)
    if ep != exclude and ((not use_filter) or (allowed[ep] and deleted[ep] == 0)):
        n_res = max_heap_push(res_d, res_s, n_res, ep_d, ep)
    while n_cand > 0:
        c_d, c, n_cand = min_heap_pop(cand_d, cand_s, n_cand)
        if n_res >= ef and c_d > res_d[0]:
            break  # the closest candidate is farther than the worst result: W cannot improve
        hops += 1
        r = c if level == 0 else up_offset[c] + level - 1
        # Pass 1: mark the unvisited neighbours and request their rows all at once.
        n_new = 0
        for j in range(width):
            e = links[r, j]
            if e < 0:
                break
            if visited[e] != tag:
                visited[e] = tag
                pending[n_new] = e
                n_new += 1
                base = e * dim
                for o in range(0, dim, LINE_FLOATS):
                    prefetch_row(Xf, base + o)
                if cosine:
                    prefetch_row(inv_norms, e)
        # Pass 2: distances, while the rows arrive.
        for j in range(n_new):
            e = pending[j]
            d = row_distance(metric, q, q_inv, X, inv_norms, e)
            n_dist += 1
            if n_res < ef or worse(res_d[0], res_s[0], d, e):
                n_cand = min_heap_push(cand_d, cand_s, n_cand, d, e)
                if level == 0:
                    prefetch_row(links0, cand_s[0])  # the next node to expand, most likely
                if e != exclude and ((not use_filter) or (allowed[e] and deleted[e] == 0)):
                    n_res = max_heap_push(res_d, res_s, n_res, d, e)
    heap_sort_ascending(res_d, res_s, n_res)
    return n_res, n_dist, hops


@njit(cache=True)
def inv_norm(metric, q):
    """``1/|q|`` of a query under cosine (summed in float64, in order), 1 for the other metrics."""
    if metric != COSINE:
        return np.float32(1.0)
    s = 0.0
    for j in range(q.shape[0]):
        v = np.float64(q[j])
        s += v * v
    return np.float32(1.0 / np.sqrt(s))


@njit(cache=True)
def count_allowed(allowed, n_slots, limit):
    """How many of ``allowed[:n_slots]`` are set, counted in blocks (which vectorize) until past ``limit``."""
    c = 0
    for start in range(0, n_slots, 4096):
        for s in range(start, min(start + 4096, n_slots)):
            c += allowed[s]
        if c > limit:
            break
    return c


@njit(cache=True)
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


@njit(cache=True, fastmath=FASTMATH, **NO_REFCOUNT)
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


@njit(cache=True, fastmath=FASTMATH, **NO_REFCOUNT)
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


@njit(cache=True, nogil=True, fastmath=FASTMATH)
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


@njit(cache=True, parallel=True, nogil=True, fastmath=FASTMATH)
def knn_search_batch(metric, Q, X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed, ep, max_level,
                     ef, visited, tags, scratch_d, scratch_s, scan_limit, unlinked, out_d, out_s, out_dist, out_hops):
    """:func:`knn_search` for every row of ``Q`` (float32 (nq, d)), the queries dealt round-robin to threads.

    Args:
        visited: uint16 (threads, capacity); tags: int64 (threads,);
        scratch_d, scratch_s: float32/int32 (threads, >= capacity + ef), one row per thread.
        scan_limit: as for :func:`knn_search`, decided once for the whole batch (one mask).
        unlinked: as for :func:`knn_search`.
        out_d, out_s: float32/int32 (nq, k), filled with +inf/-1 by the caller; results written best first.
        out_dist, out_hops: int64 (nq,), the work counters per query.
    """
    nq = Q.shape[0]
    k = out_d.shape[1]
    cap = levels.shape[0]
    n_threads = visited.shape[0]
    if scan_limit >= 0:
        scan_limit = -2 if prefer_exact(allowed[:cap], scan_limit) else -1
    for t in prange(n_threads):
        for i in range(t, nq, n_threads):
            found, nd, nh = knn_search(metric, Q[i], X, inv_norms, links0, links_up, up_offset, levels, deleted,
                                       allowed, ep, max_level, k, ef, visited[t], tags, np.int64(t), scratch_d[t],
                                       scratch_s[t], scan_limit, unlinked)
            for j in range(found):
                out_d[i, j] = scratch_d[t, cap + j]
                out_s[i, j] = scratch_s[t, cap + j]
            out_dist[i] = nd
            out_hops[i] = nh
