"""Filtered search kernels: a graph walk that stays inside the matching records, and an exact scan of them.

A filter turns a query into "the k nearest among the *allowed* nodes". Two ways to answer it, and the planner
(`vecstore_ref.query`) picks the cheaper from measured costs (`vecstore_ref.cost`):

- `scan_subset`: an exact scan of the matching rows, given as a sorted list of slots. One distance per row; rows
  are read in slot order with a software prefetch a few rows ahead, so a scattered subset streams from memory
  almost as fast as a contiguous one.
- `filtered_knn_search`: a graph walk restricted to the allowed nodes, after ACORN (Patel et al., SIGMOD 2024,
  "ACORN-1"). The classic filtered walk traverses every node and lets only allowed ones into the results, so at
  selectivity ``s`` it computes about ``1/s`` times the distances of an unfiltered search. Here distances are
  computed for allowed nodes only, and the walk crosses non-matching nodes without computing theirs: when an
  allowed node is expanded, its allowed neighbours are candidates, and each non-matching neighbour is a *bridge*
  whose own allowed neighbours are gathered too (two hops), up to ``gather`` new candidates per expansion. The
  candidate set ``C`` and the results ``W`` hold allowed nodes only, and the walk stops as SEARCH-LAYER does
  (Malkov & Yashunin 2018, Alg. 2): when the closest candidate is farther than the worst of a full ``W``.

Every bridge goes into a FIFO. The walk crosses the FIFO breadth-first, reading each bridge's list for allowed
nodes and for more bridges, in two cases:

- **At the start**, when the greedy descent ends at a node that does not match. Once it has met a few neighbour
  lists' worth of nodes (``EAGER_SAMPLE``) it judges the region: if matches are about as common there as the
  filter's selectivity says, the walk starts. If they are much rarer (``ANTI_RATIO`` times), the filter is
  anti-correlated with the query: the crossing goes on until ``seeds_wanted`` allowed nodes are found, the ways
  out of the region where nothing matches, and since such answers lie farther away and closer together, ``W``
  widens (to ``ef_wide``) and each expansion gathers twice as far.
- **Whenever ``C`` runs empty before ``W`` is full.** So a walk whose ``W`` never fills visits every allowed
  node reachable from the entry point, which makes it exact whenever ``ef`` is at least the number of allowed
  nodes (the property tests rely on that).

Memory. ``C`` is a min-heap at the start of the caller's scratch row (as in
`vecstore_ref.kernels.hnsw_search.knn_search`), and the FIFO grows down from the end of the same ``capacity``
entries: every node enters one of them at most once (it is marked visited first), so together they never hold
more than ``capacity`` entries and never overlap. ``W`` follows at ``[capacity, capacity + ef_wide)``.

Distances are those of `vecstore_ref.kernels.hnsw_walk.row_distance`, the same operations in the same order as
the flat index, so a walk that finds every allowed node returns exactly what a scan does, ties included. The
kernels allocate nothing in their loops and return their work counters (distance computations, hops = neighbour
lists read), as every kernel of the package does.
"""

import numpy as np
from numba import boolean, float64, njit

from .heap import heap_sort_ascending, max_heap_push, min_heap_pop, min_heap_push, worse
from .hnsw_scan import fold_unlinked, inv_norm
from .hnsw_walk import PREFETCH_FLOATS, greedy_descend, next_tag, row_distance
from .prefetch import prefetch_row
from .signatures import (
    CACHE,
    COSINE,
    COUNTS,
    DIST,
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
    callee,
)

LINE_FLOATS = 16  # float32 values per 64-byte cache line
SCAN_AHEAD = 8  # rows of a subset scan requested before they are needed
ANTI_RATIO = 4  # matches this many times rarer near the entry than overall: the filter is anti-correlated
EAGER_SAMPLE = 4  # neighbour lists' worth of nodes the first crossing reads before it judges the region


@njit((INT, VECTOR, DIST, VECTORS, FLOATS, SLOTS, FLOATS, SLOTS), cache=CACHE, nogil=True, fastmath=FASTMATH,
      **NO_REFCOUNT)
def scan_subset(metric, q, q_inv, X, inv_norms, candidates, res_d, res_s):
    """Exact top ``res_d.shape[0]`` of the rows ``candidates`` (int32 (m,), ascending), the filtered-scan plan.

    Args:
        q: the query, float32 (d,); ``q_inv`` its ``1/|q|`` under cosine (1 otherwise).
        X: float32 (capacity, d), C-contiguous; ``inv_norms``: float32 (capacity,).
        res_d, res_s: float32/int32 (k,): receive the results sorted best first by (distance, slot).

    Returns:
        ``(found, distance computations, next_dist)``: ``next_dist`` is the best distance left out (``inf`` if
        none); when it equals the k-th distance there is a tie at the boundary, which the store breaks by id.
    """
    k = res_d.shape[0]
    m = candidates.shape[0]
    Xf = X.reshape(-1)
    dim = X.shape[1]
    cosine = metric == COSINE
    size = 0
    next_d = np.float32(np.inf)
    for i in range(min(SCAN_AHEAD, m)):
        base = candidates[i] * dim
        for o in range(0, dim, LINE_FLOATS):
            prefetch_row(Xf, base + o)
    for i in range(m):
        if i + SCAN_AHEAD < m:
            base = candidates[i + SCAN_AHEAD] * dim
            for o in range(0, dim, LINE_FLOATS):
                prefetch_row(Xf, base + o)
            if cosine:
                prefetch_row(inv_norms, candidates[i + SCAN_AHEAD])
        s = candidates[i]
        d = row_distance(metric, q, q_inv, X, inv_norms, s)
        if size < k:
            size = max_heap_push(res_d, res_s, size, d, s)
        elif worse(res_d[0], res_s[0], d, s):
            if res_d[0] < next_d:
                next_d = res_d[0]
            size = max_heap_push(res_d, res_s, size, d, s)
        elif d < next_d:
            next_d = d
    heap_sort_ascending(res_d, res_s, size)
    return size, m, next_d


@callee((INT, VECTOR, DIST, VECTORS, FLOATS, SLOT_ROWS, MASK, FLAGS, INT, DIST, boolean, INT, FLOATS, SLOTS, FLOATS,
       SLOTS, SLOTS, SLOTS, EPOCHS, INT, INT, INT, float64), cache=CACHE, nogil=True, fastmath=FASTMATH,
      **NO_REFCOUNT, **INTERNAL)
def filtered_layer0(metric, q, q_inv, X, inv_norms, links0, allowed, deleted, ep, ep_d, ep_ok, ef, res_d, res_s,
                    cand_d, cand_s, pending, bridges, visited, tag, gather, seeds_wanted, selectivity):
    """The filtered SEARCH-LAYER on layer 0 (module docstring): best-first among allowed nodes, crossing
    non-matching ones without computing their distances.

    Args:
        ep, ep_d: where the greedy descent ended and its distance; the caller has marked it visited.
        ep_ok: whether ``ep`` may be returned (allowed, live, not being linked). If not, the walk first crosses
            breadth-first from it (module docstring): until the region looks ordinary, or, when matches are
            ``ANTI_RATIO`` times rarer there than ``selectivity`` (the fraction of nodes allowed) says, until
            ``seeds_wanted`` allowed nodes are found; then ``W`` widens to all of ``res_d``.
        ef: the width of ``W``; ``res_d``/``res_s`` (float32/int32 (>= ef,)) receive ``W`` sorted best first by
            (distance, slot).
        cand_d, cand_s: float32/int32 (capacity,): ``C`` from the front, the FIFO of bridges from the back.
        pending: int32 (>= gather + 2m,): one expansion's new allowed nodes; an anti-correlated walk gathers up
            to ``len(pending) - 2m`` per expansion.
        bridges: int32 (>= 2m,): one expansion's non-matching neighbours.
        visited, tag: the epoch array (uint16 (capacity,)) and this search's tag.
        gather: new candidates one expansion collects before it stops crossing bridges (ACORN's M).

    Returns:
        ``(results in W, distance computations, hops)``; hops count every node whose neighbour list was read.
    """
    cap = cand_s.shape[0]
    width = links0.shape[1]
    Xf = X.reshape(-1)
    dim = X.shape[1]
    cosine = metric == COSINE
    w_d = res_d[:ef]
    w_s = res_s[:ef]
    n_cand = 0
    n_res = 0
    n_dist = 0
    hops = 0
    head = cap - 1  # the FIFO of bridges: entries (tail, head], popped at head, pushed at tail
    tail = cap - 1
    eager = 0  # allowed nodes still wanted from the first crossing
    seen = 0  # nodes the first crossing met, and how many of them were allowed
    met = 0
    if ep_ok:
        n_cand = min_heap_push(cand_d, cand_s, n_cand, ep_d, ep)
        n_res = max_heap_push(w_d, w_s, n_res, ep_d, ep)
    else:
        cand_s[tail] = ep
        tail -= 1
        eager = seeds_wanted
    while True:
        n_new = 0
        if head > tail and (eager > 0 or (n_cand == 0 and n_res < w_d.shape[0])):
            # Breadth-first through the bridges until allowed nodes appear: first from a non-matching entry, and
            # again whenever no candidate is left while W is not full.
            while head > tail and n_new == 0:
                br = cand_s[head]
                head -= 1
                hops += 1
                for j in range(width):
                    e = links0[br, j]
                    if e < 0:
                        break
                    if visited[e] == tag:
                        continue
                    visited[e] = tag
                    seen += 1
                    if allowed[e] and deleted[e] == 0:
                        pending[n_new] = e
                        n_new += 1
                    else:
                        cand_s[tail] = e
                        tail -= 1
            if eager > 0:
                met += n_new
                eager -= n_new
                anti = met * ANTI_RATIO < selectivity * seen
                if not anti and seen >= EAGER_SAMPLE * width:
                    eager = 0  # matches are as common here as anywhere: the walk can start
                elif eager <= 0 or head <= tail:
                    if anti:
                        w_d = res_d  # anti-correlated: widen W (the heap stays valid, it only gets room) ...
                        w_s = res_s
                        gather = pending.shape[0] - width  # ... and cross further per expansion
                    eager = 0
        elif n_cand > 0:
            eager = 0
            c_d, c, n_cand = min_heap_pop(cand_d, cand_s, n_cand)
            if n_res >= w_d.shape[0] and c_d > w_d[0]:
                break  # the closest candidate is farther than the worst result: W cannot improve
            hops += 1
            # Pass 1: allowed neighbours are candidates (their rows requested now); the others are bridges.
            n_br = 0
            for j in range(width):
                e = links0[c, j]
                if e < 0:
                    break
                if visited[e] == tag:
                    continue
                visited[e] = tag
                if allowed[e] and deleted[e] == 0:
                    pending[n_new] = e
                    n_new += 1
                    base = e * dim
                    for o in range(0, min(dim, PREFETCH_FLOATS), LINE_FLOATS):
                        prefetch_row(Xf, base + o)
                    if cosine:
                        prefetch_row(inv_norms, e)
                else:
                    bridges[n_br] = e
                    n_br += 1
                    prefetch_row(links0, e)
            # Pass 2: two hops through the bridges, until the expansion has gathered enough candidates. Every
            # bridge also goes to the FIFO, which reads its list again (for non-matching neighbours) only if the
            # walk runs out of candidates.
            for b in range(n_br):
                br = bridges[b]
                if n_new < gather:
                    hops += 1
                    for j in range(width):
                        e = links0[br, j]
                        if e < 0:
                            break
                        if allowed[e] and visited[e] != tag and deleted[e] == 0:
                            visited[e] = tag
                            pending[n_new] = e
                            n_new += 1
                            base = e * dim
                            for o in range(0, min(dim, PREFETCH_FLOATS), LINE_FLOATS):
                                prefetch_row(Xf, base + o)
                            if cosine:
                                prefetch_row(inv_norms, e)
                            if n_new >= gather:
                                break
                cand_s[tail] = br
                tail -= 1
        else:
            break
        # Distances of the new allowed nodes, while their rows arrive.
        for j in range(n_new):
            e = pending[j]
            d = row_distance(metric, q, q_inv, X, inv_norms, e)
            n_dist += 1
            if n_res < w_d.shape[0] or worse(w_d[0], w_s[0], d, e):
                n_cand = min_heap_push(cand_d, cand_s, n_cand, d, e)
                prefetch_row(links0, cand_s[0])  # the next node to expand, most likely
                n_res = max_heap_push(w_d, w_s, n_res, d, e)
    heap_sort_ascending(w_d, w_s, n_res)
    return n_res, n_dist, hops


@njit((INT, VECTOR, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, LEVELS, FLAGS, MASK, INT, INT, INT, INT, EPOCHS, COUNTS,
       INT, FLOATS, SLOTS, SLOTS, INT, INT, float64), cache=CACHE, nogil=True, fastmath=FASTMATH)
def filtered_knn_search(metric, q, X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed, ep,
                        max_level, ef, ef_wide, visited, tags, t, scratch_d, scratch_s, unlinked, gather,
                        seeds_wanted, selectivity):
    """K-NN-SEARCH restricted to the allowed nodes: the greedy descent of the upper layers (unfiltered: they only
    steer towards the query), `filtered_layer0`, then the exact scan of the vectors not linked yet.

    Args:
        q: the query, float32 (d,), C-contiguous.
        allowed: bool (>= n_slots,): the slots that may be returned; deleted nodes never are.
        ef, ef_wide: the search width, and the width it takes if the filter proves anti-correlated with the
            query (``ef <= ef_wide``; see `filtered_layer0`).
        visited, tags, t: the thread's epoch array (uint16 (capacity,)), the tags (int64 (threads,)), the thread.
        scratch_d, scratch_s: float32/int32 (capacity + ef_wide,): ``C`` and the FIFO in the first ``capacity``
            entries, then ``W``; the results are left at ``[capacity, capacity + found)``, best first.
        unlinked: int32 (p,): slots written but not linked yet, scanned exactly (usually empty).
        gather, seeds_wanted, selectivity: see `filtered_layer0`.

    Returns:
        ``(results found (<= ef_wide), distance computations, hops)``.
    """
    cap = levels.shape[0]
    res_d = scratch_d[cap:cap + ef_wide]
    res_s = scratch_s[cap:cap + ef_wide]
    q_inv = inv_norm(metric, q)
    found = 0
    n_dist = 0
    hops = 0
    tag = next_tag(visited, tags, t)
    for i in range(unlinked.shape[0]):
        visited[unlinked[i]] = tag  # scanned by fold_unlinked below, never found through the graph
    if ep >= 0:
        ep_d = row_distance(metric, q, q_inv, X, inv_norms, ep)
        cur, cur_d, n_dist, hops = greedy_descend(metric, q, q_inv, X, inv_norms, links_up, up_offset, ep, ep_d,
                                                  max_level, np.int64(0))
        n_dist += 1
        cur_ok = visited[cur] != tag and allowed[cur] and deleted[cur] == 0
        visited[cur] = tag
        width = links0.shape[1]
        pending = np.empty(2 * gather + width, dtype=np.int32)  # room for the anti-correlated case's gather
        bridges = np.empty(width, dtype=np.int32)
        found, nd, nh = filtered_layer0(metric, q, q_inv, X, inv_norms, links0, allowed, deleted, cur, cur_d,
                                        cur_ok, ef, res_d, res_s, scratch_d[:cap], scratch_s[:cap], pending,
                                        bridges, visited, tag, gather, seeds_wanted, selectivity)
        n_dist += nd
        hops += nh
    if unlinked.shape[0] > 0:
        w = max(found, ef)  # the width W had
        found, nd = fold_unlinked(metric, q, q_inv, X, inv_norms, allowed, unlinked, res_d, res_s, found,
                                  scratch_d[:w], scratch_s[:w])
        n_dist += nd
    return found, n_dist, hops
