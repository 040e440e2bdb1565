"""HNSW search kernels (Malkov & Yashunin 2018): greedy descent over the upper layers, then SEARCH-LAYER.

The graph is plain arrays (see :mod:`vecstore_ref.index.hnsw`):

- ``links0``: int32 (capacity, 2m), layer-0 neighbours, ``deg0``: int32 (capacity,) how many are set;
- ``links_up``: int32 (rows, MAX_LEVEL, m) and ``deg_up``: int32 (rows, MAX_LEVEL), the layers above 0 for the
  few nodes that reach them; ``upper_row``: int32 (capacity,), a node's row there or -1.

Every search returns work counters through ``counters`` (int64 (2,): distance computations, hops), which the cost
model and ``query_explain`` are built on. Visited sets are epoch arrays (uint32 (capacity,)): a node is visited when
``visited[node] == tag``, so a new search only bumps the tag instead of clearing an array.
"""

import numpy as np
from numba import njit, prange

from .distances import FASTMATH, distance
from .heap import heap_sort_ascending, max_heap_push, min_heap_pop, min_heap_push
from .prefetch import prefetch_row


@njit(cache=True, inline="always")
def neighbours(links0, deg0, links_up, deg_up, upper_row, node, level):
    """The neighbour list of ``node`` on ``level`` (a view, no copy)."""
    if level == 0:
        return links0[node, : deg0[node]]
    row = upper_row[node]
    return links_up[row, level - 1, : deg_up[row, level - 1]]


@njit(cache=True, fastmath=FASTMATH)
def greedy_descend(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep, top_level,
                   stop_level, counters):
    """Greedy search with ef = 1 from ``top_level`` down to ``stop_level + 1`` (Alg. 5 lines 1-5, Alg. 1 lines 5-7).

    Returns ``(entry point for stop_level, its distance)``.
    """
    cur = ep
    cur_d = distance(metric, q, q_inv, X, inv_norms, cur)
    counters[0] += 1
    for level in range(top_level, stop_level, -1):
        changed = True
        while changed:
            changed = False
            counters[1] += 1
            nbrs = neighbours(links0, deg0, links_up, deg_up, upper_row, cur, level)
            for j in range(nbrs.shape[0]):
                cand = nbrs[j]
                d = distance(metric, q, q_inv, X, inv_norms, cand)
                counters[0] += 1
                if d < cur_d:
                    cur_d = d
                    cur = cand
                    changed = True
    return cur, cur_d


@njit(cache=True, fastmath=FASTMATH)
def search_layer(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep, ep_d, level,
                 allowed, use_mask, visited, tag, cand_d, cand_s, res_d, res_s, counters):
    """SEARCH-LAYER (Alg. 2): best-first search from ``ep`` keeping the ``ef = res_d.shape[0]`` closest nodes.

    With ``use_mask`` only nodes with ``allowed[node]`` enter the result set ``W``, but every node is traversed,
    so filtered and deleted nodes still lead the way to matching ones.

    Args:
        cand_d, cand_s: float32/int32 scratch of capacity >= the number of nodes (the candidate min-heap ``C``).
        res_d, res_s: float32/int32 (ef,), the result max-heap ``W``; filled best first on return.
        visited: uint32 (capacity,), epoch array; ``tag`` marks this search.

    Returns:
        The number of results in ``res_d``/``res_s``.
    """
    ef = res_d.shape[0]
    n_cand = 0
    n_res = 0
    visited[ep] = tag
    n_cand = min_heap_push(cand_d, cand_s, n_cand, ep_d, ep)
    if (not use_mask) or allowed[ep]:
        n_res = max_heap_push(res_d, res_s, n_res, ep_d, ep)
    while n_cand > 0:
        c_d, c, n_cand = min_heap_pop(cand_d, cand_s, n_cand)
        if n_res >= ef and c_d > res_d[0]:
            break  # the closest candidate is farther than the worst result: W cannot improve
        counters[1] += 1
        nbrs = neighbours(links0, deg0, links_up, deg_up, upper_row, c, level)
        n_nbrs = nbrs.shape[0]
        if n_nbrs > 0:
            prefetch_row(X, nbrs[0])
        for j in range(n_nbrs):
            if j + 1 < n_nbrs:
                prefetch_row(X, nbrs[j + 1])  # fetch the next vector while this distance is computed
            e = nbrs[j]
            if visited[e] == tag:
                continue
            visited[e] = tag
            d = distance(metric, q, q_inv, X, inv_norms, e)
            counters[0] += 1
            if n_res < ef or d < res_d[0]:
                if n_cand < cand_d.shape[0]:
                    n_cand = min_heap_push(cand_d, cand_s, n_cand, d, e)
                if (not use_mask) or allowed[e]:
                    n_res = max_heap_push(res_d, res_s, n_res, d, e)
    heap_sort_ascending(res_d, res_s, n_res)
    return n_res


@njit(cache=True, fastmath=FASTMATH)
def knn_search(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep, max_level, allowed,
               visited, tag, cand_d, cand_s, res_d, res_s, counters):
    """K-NN-SEARCH (Alg. 5): descend greedily to layer 0, then SEARCH-LAYER there with the allowed mask.

    Returns the number of results written to ``res_d``/``res_s`` (best first; the caller keeps the first k).
    """
    cur, cur_d = greedy_descend(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep,
                                max_level, 0, counters)
    return search_layer(metric, q, q_inv, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, cur, cur_d, 0,
                        allowed, True, visited, tag, cand_d, cand_s, res_d, res_s, counters)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def knn_search_batch(metric, Q, q_invs, X, inv_norms, links0, deg0, links_up, deg_up, upper_row, ep, max_level,
                     allowed, visited, tags, ef, out_d, out_s, out_found, out_counters):
    """:func:`knn_search` for every row of ``Q``, the queries split into one contiguous chunk per thread.

    ``visited``: uint32 (n_chunks, capacity) and ``tags``: uint32 (n_chunks,), one epoch array per chunk.
    Outputs: ``out_d``/``out_s`` (nq, k), ``out_found`` (nq,), ``out_counters`` int64 (nq, 2).
    """
    nq = Q.shape[0]
    n_chunks = visited.shape[0]
    k = out_d.shape[1]
    cap = X.shape[0]
    for t in prange(n_chunks):
        lo = t * nq // n_chunks
        hi = (t + 1) * nq // n_chunks
        cand_d = np.empty(cap, dtype=np.float32)
        cand_s = np.empty(cap, dtype=np.int32)
        res_d = np.empty(ef, dtype=np.float32)
        res_s = np.empty(ef, dtype=np.int32)
        tag = tags[t]
        for i in range(lo, hi):
            tag += np.uint32(1)
            if tag == 0:
                visited[t, :] = 0
                tag = np.uint32(1)
            found = knn_search(metric, Q[i], q_invs[i], X, inv_norms, links0, deg0, links_up, deg_up, upper_row,
                               ep, max_level, allowed, visited[t], tag, cand_d, cand_s, res_d, res_s,
                               out_counters[i])
            m = min(found, k)
            out_d[i, :m] = res_d[:m]
            out_s[i, :m] = res_s[:m]
            out_found[i] = m
        tags[t] = tag
