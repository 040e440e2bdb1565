"""HNSW construction kernels (Malkov & Yashunin 2018): neighbour selection, linking, and batched insertion.

Insertion runs in two phases so that both cores help (STYLE 2.2, point 6):

1. :func:`search_candidates_batch` (parallel, read-only): for every node of a batch, descend the current graph and
   run SEARCH-LAYER on layer 0 with ``ef_construction``, keeping the candidates.
2. :func:`link_batch` (serial, in insertion order): add the batch's earlier members to each node's candidates (they
   were not in the graph during phase 1), choose neighbours with the heuristic, link both ways, and insert the rare
   nodes of level >= 1 into the upper layers the classic way.

Applying links in order keeps the graph identical to a deterministic function of the input and the seed.
"""

import numpy as np
from numba import njit, prange

from .distances import FASTMATH, distance_between_rows
from .heap import heap_sort_ascending, max_heap_push
from .hnsw_search import greedy_descend, search_layer


@njit(cache=True, fastmath=FASTMATH)
def select_neighbors_heuristic(metric, X, inv_norms, cand_d, cand_s, n_cand, max_keep, out_s):
    """SELECT-NEIGHBORS-HEURISTIC (Alg. 4, without extendCandidates/keepPruned).

    Walk the candidates from the closest; keep one only if it is closer to the base node than to every neighbour
    kept so far, which spreads links in all directions instead of clustering them.

    Args:
        cand_d, cand_s: float32/int32 (>= n_cand,), candidates sorted ascending by distance to the base node.
        out_s: int32 (>= max_keep,), receives the kept slots.

    Returns:
        How many were kept (<= max_keep).
    """
    kept = 0
    for i in range(n_cand):
        e = cand_s[i]
        d_e = cand_d[i]
        good = True
        for j in range(kept):
            if distance_between_rows(metric, X, inv_norms, e, out_s[j]) < d_e:
                good = False
                break
        if good:
            out_s[kept] = e
            kept += 1
            if kept >= max_keep:
                break
    return kept


@njit(cache=True, fastmath=FASTMATH)
def add_link(metric, X, inv_norms, links, deg, node, new, max_deg, scratch_d, scratch_s, scratch_keep):
    """Link ``node -> new`` in one layer's adjacency (``links``: int32 (.., max_deg) row of node, ``deg`` a 1-element
    view). If the list is full, shrink it with the heuristic over the old neighbours plus ``new`` (Alg. 1 lines
    13-16)."""
    n = deg[0]
    for j in range(n):
        if links[j] == new:
            return
    if n < max_deg:
        links[n] = new
        deg[0] = n + 1
        return
    size = 0
    for j in range(n):
        size = max_heap_push(scratch_d, scratch_s, size,
                             distance_between_rows(metric, X, inv_norms, node, links[j]), links[j])
    size = max_heap_push(scratch_d, scratch_s, size, distance_between_rows(metric, X, inv_norms, node, new), new)
    heap_sort_ascending(scratch_d, scratch_s, size)
    kept = select_neighbors_heuristic(metric, X, inv_norms, scratch_d, scratch_s, size, max_deg, scratch_keep)
    for j in range(kept):
        links[j] = scratch_keep[j]
    for j in range(kept, max_deg):
        links[j] = -1
    deg[0] = kept


@njit(cache=True, fastmath=FASTMATH)
def connect_new_element(metric, X, inv_norms, node, cand_d, cand_s, n_cand, level, m, links0, deg0, links_up,
                        deg_up, upper_row, scratch_d, scratch_s, scratch_keep):
    """Alg. 1 lines 10-16 on one layer: choose ``node``'s neighbours among the sorted candidates and link both ways.

    Layer 0 keeps up to ``2m`` links per node, upper layers ``m`` (as hnswlib's maxM0 / maxM).
    """
    max_deg = 2 * m if level == 0 else m
    chosen = np.empty(m, dtype=np.int32)
    kept = select_neighbors_heuristic(metric, X, inv_norms, cand_d, cand_s, n_cand, m, chosen)
    if level == 0:
        row_links = links0[node]
        row_deg = deg0[node : node + 1]
    else:
        r = upper_row[node]
        row_links = links_up[r, level - 1]
        row_deg = deg_up[r, level - 1 : level]
    row_deg[0] = 0
    for j in range(kept):
        row_links[j] = chosen[j]
    for j in range(kept, row_links.shape[0]):
        row_links[j] = -1
    row_deg[0] = kept
    for j in range(kept):
        other = chosen[j]
        if level == 0:
            add_link(metric, X, inv_norms, links0[other], deg0[other : other + 1], other, node, max_deg, scratch_d,
                     scratch_s, scratch_keep)
        else:
            r = upper_row[other]
            add_link(metric, X, inv_norms, links_up[r, level - 1], deg_up[r, level - 1 : level], other, node,
                     max_deg, scratch_d, scratch_s, scratch_keep)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def search_candidates_batch(metric, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep, max_level, nodes,
                            ef, visited, tags, out_d, out_s, out_n, counters):
    """Phase 1: for each of ``nodes`` (int32 (b,)), the ``ef`` closest nodes on layer 0 of the current graph.

    Read-only on the graph, so the nodes spread over threads (one contiguous chunk, one visited array each).
    A node already in the graph (a relink after its vector changed) is traversed like any other, since its old links
    may be the only way to some nodes, but it never becomes its own candidate.
    Outputs: ``out_d``/``out_s`` (b, ef) sorted ascending, ``out_n`` (b,).
    """
    b = nodes.shape[0]
    n_chunks = visited.shape[0]
    cap = X.shape[0]
    for t in prange(n_chunks):
        lo = t * b // n_chunks
        hi = (t + 1) * b // n_chunks
        cand_d = np.empty(cap, dtype=np.float32)
        cand_s = np.empty(cap, dtype=np.int32)
        res_d = np.empty(ef, dtype=np.float32)
        res_s = np.empty(ef, dtype=np.int32)
        tag = tags[t]
        dummy = np.ones(1, dtype=np.bool_)
        local = np.zeros(2, dtype=np.int64)
        for i in range(lo, hi):
            node = nodes[i]
            q = X[node]
            q_inv = inv_norms[node]
            tag += np.uint32(1)
            if tag == 0:
                visited[t, :] = 0
                tag = np.uint32(1)
            cur, cur_d = greedy_descend(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row,
                                        ep, max_level, 0, local)
            n = search_layer(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, cur, cur_d, 0,
                             dummy, False, visited[t], tag, cand_d, cand_s, res_d, res_s, local)
            w = 0
            for j in range(n):
                if res_s[j] != node:
                    out_d[i, w] = res_d[j]
                    out_s[i, w] = res_s[j]
                    w += 1
            out_n[i] = w
        tags[t] = tag
        counters[t, 0] += local[0]
        counters[t, 1] += local[1]


@njit(cache=True, fastmath=FASTMATH)
def link_batch(metric, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, levels, ep, max_level, nodes,
               node_levels, cand_d, cand_s, cand_n, in_batch_before, m, ef, visited, tag, counters):
    """Phase 2: link the batch's nodes in order; returns the new ``(entry point, max level, visited tag)``.

    For node i, its phase-1 candidates are merged with the batch members before it (``in_batch_before`` > 0 means
    they are new this batch), then the heuristic picks its layer-0 links. Nodes with level >= 1 are also inserted
    into the upper layers the classic way (greedy descent, SEARCH-LAYER per layer, connect).
    """
    cap = X.shape[0]
    heap_cap = 4 * m + 2
    scratch_d = np.empty(heap_cap, dtype=np.float32)
    scratch_s = np.empty(heap_cap, dtype=np.int32)
    scratch_keep = np.empty(heap_cap, dtype=np.int32)
    merged_d = np.empty(ef, dtype=np.float32)
    merged_s = np.empty(ef, dtype=np.int32)
    big_d = np.empty(cap, dtype=np.float32)
    big_s = np.empty(cap, dtype=np.int32)
    res_d = np.empty(ef, dtype=np.float32)
    res_s = np.empty(ef, dtype=np.int32)
    dummy = np.ones(1, dtype=np.bool_)
    b = nodes.shape[0]
    for i in range(b):
        node = nodes[i]
        level = node_levels[i]
        levels[node] = level
        if ep < 0:  # the very first node: it is the graph
            ep = node
            max_level = level
            deg0[node] = 0
            continue
        q = X[node]
        q_inv = inv_norms[node]
        # Upper layers: the classic insertion (few nodes reach them).
        cur, cur_d = greedy_descend(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep,
                                    max_level, level, counters)
        for lc in range(min(level, max_level), 0, -1):
            tag += np.uint32(1)
            if tag == 0:
                visited[:] = 0
                tag = np.uint32(1)
            n = search_layer(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, cur, cur_d,
                             lc, dummy, False, visited, tag, big_d, big_s, res_d, res_s, counters)
            w = 0  # a relinked node can find itself: never link a node to itself
            for j in range(n):
                if res_s[j] != node:
                    res_d[w] = res_d[j]
                    res_s[w] = res_s[j]
                    w += 1
            n = w
            if n > 0:
                connect_new_element(metric, X, inv_norms, node, res_d, res_s, n, lc, m, links0, deg0, links_up,
                                    deg_up, upper_row, scratch_d, scratch_s, scratch_keep)
                cur = res_s[0]
                cur_d = res_d[0]
        # Layer 0: phase-1 candidates plus the batch's earlier members, best ef of them.
        size = 0
        for j in range(cand_n[i]):
            size = max_heap_push(merged_d, merged_s, size, cand_d[i, j], cand_s[i, j])
        for j in range(i):
            if in_batch_before[j] > 0 and nodes[j] != node:
                d = distance_between_rows(metric, X, inv_norms, node, nodes[j])
                counters[0] += 1
                size = max_heap_push(merged_d, merged_s, size, d, nodes[j])
        heap_sort_ascending(merged_d, merged_s, size)
        w = 0  # drop duplicates (a relinked node can appear both ways)
        for j in range(size):
            if merged_s[j] != node and (w == 0 or merged_s[j] != merged_s[w - 1] or merged_d[j] != merged_d[w - 1]):
                merged_d[w] = merged_d[j]
                merged_s[w] = merged_s[j]
                w += 1
        relink = in_batch_before[i] == 0 and deg0[node] > 0
        if relink:  # remember the old links: a neighbour may be reachable only through this node
            n_old = deg0[node]
            old_links = links0[node, :n_old].copy()
        connect_new_element(metric, X, inv_norms, node, merged_d, merged_s, w, 0, m, links0, deg0, links_up, deg_up,
                            upper_row, scratch_d, scratch_s, scratch_keep)
        if relink:
            # Keep the old links the heuristic dropped while the list has room (layer 0 holds 2m, the heuristic
            # picks at most m), so an update never cuts a neighbour off the graph.
            for j in range(n_old):
                o = old_links[j]
                if deg0[node] >= 2 * m:
                    break
                present = o == node
                for r in range(deg0[node]):
                    if links0[node, r] == o:
                        present = True
                        break
                if not present:
                    links0[node, deg0[node]] = o
                    deg0[node] += 1
        if level > max_level:
            ep = node
            max_level = level
    return ep, max_level, tag
