"""The steps of an HNSW graph walk (Malkov & Yashunin 2018), shared by search and build: greedy descent and
SEARCH-LAYER, and the inlined steps of their hot loops.

The graph arrays are described in `vecstore_ref.kernels.hnsw_search`.

Two things decide the speed of a graph walk:

- Memory latency. Every distance reads a vector from a random row, so SEARCH-LAYER scans a neighbour list in two
  passes: the first marks the unvisited neighbours and requests all of their rows at once (software prefetch of
  each row's first lines, `PREFETCH_FLOATS`), the second computes the distances while those rows arrive.
- Reference counting. Numba counts references to every array a compiled function receives, with atomic
  instructions; in the per-distance loop that was a third of the search time. The walk kernels therefore allocate
  nothing and are compiled without it (``NO_REFCOUNT``), and so are the steps of their hot loops, which LLVM
  inlines (``STEP``): the heap operations of `vecstore_ref.kernels.heap`, and `row_distance`, a copy of
  `vecstore_ref.kernels.distances.distance` (the same operations in the same order, so rankings and ties
  agree with the flat index).
"""

import numpy as np
from numba import boolean

from .cosine import cosine_f64, cosine_scale
from .heap import heap_sort_ascending, max_heap_push, min_heap_pop, min_heap_push, worse
from .prefetch import prefetch_row
from .signatures import (
    CACHE,
    COSINE,
    COUNTS,
    DIST,
    DOT,
    EPOCHS,
    EUCLIDEAN,
    FASTMATH,
    FLAGS,
    FLOATS,
    INT,
    INTERNAL,
    MASK,
    NO_REFCOUNT,
    SLOT_ROWS,
    SLOTS,
    STEP,
    VECTOR,
    VECTORS,
    callee,
)

TAG_MAX = 65535  # the largest uint16 epoch; the visited array is cleared when a tag would pass it
LINE_FLOATS = 16  # float32 values per 64-byte cache line: a row is prefetched one line at a time
# A walk prefetches at most the first 8 lines (512 bytes: a whole row up to 128 dimensions) of each neighbour's
# row. Asking for every line of twenty 384-d rows at once (480 requests) overflows the core's few line-fill
# buffers; the hardware prefetcher streams the rest of a row once its first lines are read. On all-MiniLM-L6-v2
# embeddings (74k x 384) the raw walk against hnswlib went from 0.94-0.98x to 0.96-1.03x at ef 10-64, timed in
# alternating passes (docs/benchmarks.md).
PREFETCH_FLOATS = 8 * LINE_FLOATS


# --- steps of the hot loops, inlined by LLVM ---------------------------------------------------------------

@callee((INT, VECTOR, DIST, VECTORS, FLOATS, INT), cache=CACHE, fastmath=FASTMATH, **STEP)
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


@callee((INT, VECTORS, FLOATS, INT, INT), cache=CACHE, fastmath=FASTMATH, **STEP)
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


@callee((EPOCHS, COUNTS, INT), cache=CACHE, **STEP)
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

@callee((INT, VECTOR, DIST, VECTORS, FLOATS, SLOT_ROWS, SLOTS, INT, DIST, INT, INT), cache=CACHE, nogil=True,
      fastmath=FASTMATH, **NO_REFCOUNT, **INTERNAL)
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


@callee((INT, VECTOR, DIST, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, INT, INT, DIST, FLOATS, SLOTS, FLOATS, SLOTS,
       SLOTS, EPOCHS, INT, MASK, FLAGS, boolean, INT), cache=CACHE, nogil=True, fastmath=FASTMATH, **NO_REFCOUNT,
      **INTERNAL)
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
                for o in range(0, min(dim, PREFETCH_FLOATS), LINE_FLOATS):
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
