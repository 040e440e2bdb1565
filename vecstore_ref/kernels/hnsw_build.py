"""HNSW construction kernels (Malkov & Yashunin 2018): neighbour selection, linking, batched insertion, repair.

The arrays are those of `vecstore_ref.kernels.hnsw_search`. INSERT (Alg. 1) runs on a batch of nodes in three
phases, so that both cores work and the graph stays a deterministic function of the inserts and the seed:

1. `plan_links` (parallel, reads the graph only): for each node, the greedy descent and SEARCH-LAYER with
   ``ef_construction`` on each of its layers (Alg. 1 lines 5-9), merged with the batch's *earlier* members (which a
   one-at-a-time insert would have found in the graph, but which are not in it yet), then
   SELECT-NEIGHBORS-HEURISTIC (Alg. 4) picks the node's ``m`` links per layer (Alg. 1 line 10).
2. `write_links` (serial, batch order): write those links (Alg. 1 line 11) and move the entry point when a
   node tops the graph (Alg. 1 lines 17-18).
3. `connect_back` (parallel over target nodes): add the reverse links, and shrink every list that
   overflows with the same heuristic (Alg. 1 lines 11-16). Each target is handled by one thread, all of its
   incoming links at once, so the outcome does not depend on the thread count.

Phases 1 and 3 are serial kernels over one thread's share (``t, n_threads``), run on every core by
`vecstore_ref.index.parallel.run_split`.

The heuristic may leave a node with no incoming link, and an update may cut a path: `.hnsw_repair` finds the
live nodes that layer 0 no longer reaches from the entry point and links them again.
"""

import numpy as np
from numba import njit

from .heap import heap_sort_ascending, max_heap_push
from .hnsw_walk import greedy_descend, next_tag, row_distance, rows_distance, search_layer
from .signatures import (
    CACHE,
    COUNTS,
    EPOCH_ROWS,
    FASTMATH,
    FLAGS,
    FLOATS,
    INT,
    INTERNAL,
    LEVELS,
    NO_REFCOUNT,
    SLOT_ROWS,
    SLOTS,
    STEP,
    VECTORS,
    callee,
)


# Inlined by Numba, not LLVM: it returns a view, and a call returning an array counts a reference that a caller
# compiled without reference counting (connect_one) would never release.
@njit(cache=CACHE, inline="always")
def layer_links(links0, links_up, up_offset, node, level):
    """The neighbour row of ``node`` on ``level`` (a view, -1 after the last neighbour)."""
    if level == 0:
        return links0[node]
    return links_up[up_offset[node] + level - 1]


@callee((VECTORS, INT, INT), cache=CACHE, **STEP)
def same_row(X, a, b):
    """Whether rows ``a`` and ``b`` of ``X`` hold the same vector (two unrelated rows differ at once, in their
    first value)."""
    for j in range(X.shape[1]):
        if X[a, j] != X[b, j]:
            return False
    return True


@callee((INT, VECTORS, FLOATS, INT, FLOATS, SLOTS, INT, INT, SLOTS), cache=CACHE, fastmath=FASTMATH, **STEP)
def select_neighbors_heuristic(metric, X, inv_norms, base, cand_d, cand_s, n_cand, max_keep, out_s):
    """SELECT-NEIGHBORS-HEURISTIC (Alg. 4, without extendCandidates and keepPrunedConnections) for node ``base``.

    Walk the candidates from the closest and keep one only if it is closer to the base node than to every node kept
    so far. A candidate that a kept neighbour already "covers" is skipped, which spreads the links in all
    directions instead of bunching them inside one cluster, and keeps clustered data navigable.

    Copies of the base node (rows holding the same vector: a document stored twice) are the exception. They lie
    at the base's own distance from every candidate, so in the plain rule each would cover everything else (up to
    rounding), and a group of more than ``max_keep`` copies would link only to each other: a closed room that a
    walk enters and never leaves. So copies of the base are kept while they fill at most half of the list, and
    cover nothing: the other candidates are judged against the kept nodes that are not copies. Without copies
    the rule is the plain one.

    Args:
        base: the slot whose neighbours these are (its row of ``X`` holds its vector).
        cand_d, cand_s: float32/int32 (>= n_cand,), candidates sorted best first by (distance to base, slot).
        max_keep: the most links kept.
        out_s: int32 (>= max_keep,), receives the kept slots in the order kept (closest first).

    Returns:
        How many were kept (<= max_keep).
    """
    kept = 0
    copies = 0
    for i in range(n_cand):
        e = cand_s[i]
        if e == base:
            continue
        if same_row(X, e, base):
            if 2 * (copies + 1) <= max_keep:
                out_s[kept] = e
                kept += 1
                copies += 1
                if kept >= max_keep:
                    break
            continue
        d_e = cand_d[i]
        good = True
        for j in range(kept):
            r = out_s[j]
            if copies and same_row(X, r, base):
                continue
            if rows_distance(metric, X, inv_norms, e, r) < d_e:
                good = False
                break
        if good:
            out_s[kept] = e
            kept += 1
            if kept >= max_keep:
                break
    return kept


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH, **NO_REFCOUNT, **INTERNAL)
def plan_node(metric, X, inv_norms, links0, links_up, up_offset, deleted, ep, max_level, nodes, node_levels,
              is_new, i, m, visited, tags, t, cand_d, cand_s, pending, res_d, res_s, merged_d, merged_s, fwd, fwd_n,
              fwd_off, no_filter):
    """Phase 1 for batch member ``i``: its candidates on each of its layers, and the links the heuristic keeps.

    Alg. 1 lines 5-10: descend greedily to the node's level, then on each of its layers run SEARCH-LAYER with
    ``ef_construction = res_d.shape[0]`` from the closest node found so far, add the batch's earlier members of that
    layer (exact distances), keep the best ``ef_construction`` and select ``m`` links with the heuristic.
    A node already in the graph (its vector changed) is walked through like any other but never chosen as its own
    neighbour.

    Writes ``fwd[fwd_off[i] + l, :fwd_n[...]]`` for each layer ``l`` of the node.
    """
    node = nodes[i]
    level = np.int64(node_levels[i])
    q = X[node]
    q_inv = inv_norms[node]
    cur = ep
    cur_d = np.float32(0.0)
    top = -1  # the highest layer both the graph and the node have
    if ep >= 0:
        cur_d = row_distance(metric, q, q_inv, X, inv_norms, ep)
        cur, cur_d, _, _ = greedy_descend(metric, q, q_inv, X, inv_norms, links_up, up_offset, ep, cur_d, max_level,
                                          level)
        top = min(level, max_level)
    for lc in range(level, -1, -1):
        n_w = 0
        tag = 0
        if lc <= top:
            tag = next_tag(visited, tags, t)
            n_w, _, _ = search_layer(metric, q, q_inv, X, inv_norms, links0, links_up, up_offset, lc, cur, cur_d,
                                     res_d, res_s, cand_d, cand_s, pending, visited, tag, no_filter, deleted,
                                     np.bool_(False), np.int64(node))
            if n_w > 0:
                cur = res_s[0]
                cur_d = res_d[0]
        size = 0
        for j in range(n_w):
            size = max_heap_push(merged_d, merged_s, size, res_d[j], res_s[j])
        for j in range(i):
            other = nodes[j]
            if node_levels[j] < lc or other == node:
                continue
            if is_new[j] == 0 and tag > 0 and visited[other] == tag:
                dup = False  # a relinked earlier member is in the graph: the walk may have found it already
                for r in range(n_w):
                    if res_s[r] == other:
                        dup = True
                        break
                if dup:
                    continue
            d = rows_distance(metric, X, inv_norms, node, other)
            size = max_heap_push(merged_d, merged_s, size, d, other)
        heap_sort_ascending(merged_d, merged_s, size)
        row = fwd_off[i] + lc
        fwd_n[row] = select_neighbors_heuristic(metric, X, inv_norms, np.int64(node), merged_d, merged_s, size, m,
                                                  fwd[row])


@njit((INT, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, FLAGS, INT, INT, SLOTS, LEVELS, FLAGS, INT, INT, EPOCH_ROWS,
       COUNTS, VECTORS, SLOT_ROWS, SLOT_ROWS, SLOTS, COUNTS, INT, INT), cache=CACHE, nogil=True, fastmath=FASTMATH)
def plan_links(metric, X, inv_norms, links0, links_up, up_offset, deleted, ep, max_level, nodes, node_levels, is_new,
               m, ef, visited, tags, cand_d, cand_s, fwd, fwd_n, fwd_off, t, n_threads):
    """Phase 1 of a batch insert (the graph is only read): `plan_node` for members ``t, t + n_threads, ...``.

    Args:
        nodes: int32 (b,), the batch in insertion order; node_levels: int8 (b,); is_new: uint8 (b,), 0 = relink.
        ep, max_level: the graph's entry point and top layer before the batch (-1, -1 for an empty graph).
        ef: ef_construction.
        visited: uint16 (threads, capacity); tags: int64 (threads,); cand_d/cand_s: (threads, capacity) scratch.
        fwd: int32 (rows, m), -1 filled; member i's row for layer l is ``fwd_off[i] + l`` (fwd_off: int64 (b,)).
        fwd_n: int32 (rows,), receives how many links each row holds.
        t, n_threads: this thread's share (round-robin: later members cost more, having more earlier members).
    """
    b = nodes.shape[0]
    res_d = np.empty(ef, dtype=np.float32)
    res_s = np.empty(ef, dtype=np.int32)
    merged_d = np.empty(ef, dtype=np.float32)
    merged_s = np.empty(ef, dtype=np.int32)
    pending = np.empty(links0.shape[1], dtype=np.int32)
    no_filter = np.ones(1, dtype=np.bool_)
    for i in range(t, b, n_threads):
        plan_node(metric, X, inv_norms, links0, links_up, up_offset, deleted, ep, max_level, nodes, node_levels,
                  is_new, i, m, visited[t], tags, t, cand_d[t], cand_s[t], pending, res_d, res_s, merged_d, merged_s,
                  fwd, fwd_n, fwd_off, no_filter)


@njit((SLOT_ROWS, SLOT_ROWS, SLOTS, LEVELS, INT, INT, SLOTS, LEVELS, FLAGS, SLOT_ROWS, SLOTS, COUNTS), cache=CACHE,
      nogil=True)
def write_links(links0, links_up, up_offset, levels, ep, max_level, nodes, node_levels, is_new, fwd, fwd_n, fwd_off):
    """Phase 2 (serial, batch order): set each member's own links (Alg. 1 line 11) and the entry point (lines 17-18).

    A relinked node keeps the old links the heuristic dropped while its list has room (the heuristic picks at most
    ``m`` of layer 0's ``2m``), so an update does not cut off a node that was reached through it.

    Returns:
        The new ``(entry point, max level)``.
    """
    for i in range(nodes.shape[0]):
        node = nodes[i]
        level = node_levels[i]
        for lc in range(level + 1):
            row = layer_links(links0, links_up, up_offset, node, lc)
            src = fwd[fwd_off[i] + lc]
            n = fwd_n[fwd_off[i] + lc]
            old = row.copy()
            for j in range(n):
                row[j] = src[j]
            for j in range(n, row.shape[0]):
                row[j] = -1
            if is_new[i] == 0:
                for j in range(old.shape[0]):
                    o = old[j]
                    if o < 0 or n >= row.shape[0]:
                        break
                    present = o == node
                    for r in range(n):
                        if row[r] == o:
                            present = True
                            break
                    if not present:
                        row[n] = o
                        n += 1
        levels[node] = level
        if level > max_level:
            ep = node
            max_level = level
    return ep, max_level


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH, **NO_REFCOUNT, **INTERNAL)
def connect_one(metric, X, inv_norms, links0, links_up, up_offset, level, u, sources, buf_d, buf_s, keep):
    """Alg. 1 lines 11-16 for one target: link ``u -> s`` for every ``s`` of ``sources`` on ``level``.

    If the list would exceed its bound (2m on layer 0, m above), the old and new neighbours are ranked by distance
    to ``u`` and the heuristic keeps at most the bound.
    """
    row = layer_links(links0, links_up, up_offset, u, level)
    max_deg = row.shape[0]
    n = 0
    while n < max_deg and row[n] >= 0:
        buf_s[n] = row[n]
        n += 1
    for j in range(sources.shape[0]):
        s = sources[j]
        if s == u:
            continue
        present = False
        for r in range(n):
            if buf_s[r] == s:
                present = True
                break
        if not present:
            buf_s[n] = s
            n += 1
    if n <= max_deg:
        for j in range(n):
            row[j] = buf_s[j]
        return
    size = 0
    heap_d = buf_d[:n]
    heap_s = keep[:n]
    for j in range(n):
        size = max_heap_push(heap_d, heap_s, size, rows_distance(metric, X, inv_norms, u, buf_s[j]), buf_s[j])
    heap_sort_ascending(heap_d, heap_s, size)
    kept = select_neighbors_heuristic(metric, X, inv_norms, np.int64(u), heap_d, heap_s, size, max_deg, row)
    for j in range(kept, max_deg):
        row[j] = -1


@njit((INT, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, COUNTS, SLOTS, COUNTS, SLOTS, INT, INT, INT), cache=CACHE,
      nogil=True, fastmath=FASTMATH)
def connect_back(metric, X, inv_norms, links0, links_up, up_offset, group_level, group_node, group_start, sources,
                 max_group, t, n_threads):
    """Phase 3 (one thread's share of the targets): `connect_one` for groups ``t, t + n_threads, ...``.

    Args:
        group_level, group_node: int64/int32 (g,), the layer and target node of each group.
        group_start: int64 (g + 1,), group j's sources are ``sources[group_start[j]:group_start[j + 1]]``.
        sources: int32, the new neighbours of each target, in batch order.
        max_group: the largest group (sizes the per-thread buffers).
        t, n_threads: this thread's share; each target is in one group, so shares never write the same row.
    """
    g = group_node.shape[0]
    width = links0.shape[1] + max_group
    buf_d = np.empty(width, dtype=np.float32)
    buf_s = np.empty(width, dtype=np.int32)
    keep = np.empty(width, dtype=np.int32)
    for j in range(t, g, n_threads):
        connect_one(metric, X, inv_norms, links0, links_up, up_offset, group_level[j], group_node[j],
                    sources[group_start[j]:group_start[j + 1]], buf_d, buf_s, keep)
