"""HNSW repair (layer-0 reachability): find the live nodes the entry point no longer reaches, and link them again.

SELECT-NEIGHBORS-HEURISTIC (Malkov & Yashunin 2018, Alg. 4) may drop a node's last incoming link when it shrinks a
full list, and an update may cut a path; such a node can never be found. :func:`reachable_from` is the
breadth-first search that finds them (also used by ``verify``), :func:`repair_reachability` links each from its
nearest reachable node. The graph arrays are those of :mod:`vecstore_ref.kernels.hnsw_search`.
"""

import numpy as np
from numba import njit

from .hnsw_walk import greedy_descend, next_tag, row_distance, rows_distance, search_layer
from .signatures import CACHE, COUNTS, EPOCHS, FASTMATH, FLAGS, FLOATS, INT, MASK, SLOT_ROWS, SLOTS, VECTORS


@njit((SLOT_ROWS, SLOTS, MASK, SLOTS), cache=CACHE, nogil=True)
def reachable_from(links0, sources, seen, queue):
    """Breadth-first search on layer 0 from ``sources`` (int32), marking ``seen`` (bool (capacity,)).

    Nodes already seen are not expanded again, so a call extends an earlier search. ``queue``: int32 (capacity,)
    scratch. Returns how many nodes were newly marked.
    """
    head = 0
    tail = 0
    for j in range(sources.shape[0]):
        s = sources[j]
        if not seen[s]:
            seen[s] = True
            queue[tail] = s
            tail += 1
    while head < tail:
        c = queue[head]
        head += 1
        row = links0[c]
        for j in range(row.shape[0]):
            e = row[j]
            if e < 0:
                break
            if not seen[e]:
                seen[e] = True
                queue[tail] = e
                tail += 1
    return tail


@njit((INT, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, FLAGS, INT, INT, SLOTS, INT, MASK, SLOTS, EPOCHS, COUNTS, FLOATS,
       SLOTS), cache=CACHE, nogil=True, fastmath=FASTMATH)
def repair_reachability(metric, X, inv_norms, links0, links_up, up_offset, deleted, ep, max_level, lost, ef, seen,
                        queue, visited, tags, cand_d, cand_s):
    """Link every node of ``lost`` (int32, live nodes layer 0 does not reach) from its nearest reachable node.

    For each lost node still unseen: walk the graph towards its vector keeping only reachable nodes (``seen``) in
    ``W``; the closest of them with a free link slot gets a link to it, else the closest one replaces its farthest
    link (which may cut another node off: the caller then searches again). The nodes the new link reaches are
    marked seen.

    Returns:
        ``(links added, links replaced)``.
    """
    added = 0
    replaced = 0
    res_d = np.empty(ef, dtype=np.float32)
    res_s = np.empty(ef, dtype=np.int32)
    pending = np.empty(links0.shape[1], dtype=np.int32)
    one = np.empty(1, dtype=np.int32)
    max_deg = links0.shape[1]
    for idx in range(lost.shape[0]):
        u = lost[idx]
        if seen[u]:
            continue
        q = X[u]
        q_inv = inv_norms[u]
        ep_d = row_distance(metric, q, q_inv, X, inv_norms, ep)
        cur, cur_d, _, _ = greedy_descend(metric, q, q_inv, X, inv_norms, links_up, up_offset, ep, ep_d, max_level,
                                          np.int64(0))
        if not seen[cur]:
            cur = ep
            cur_d = ep_d
        tag = next_tag(visited, tags, 0)
        n_w, _, _ = search_layer(metric, q, q_inv, X, inv_norms, links0, links_up, up_offset, np.int64(0), cur, cur_d,
                                 res_d, res_s, cand_d, cand_s, pending, visited, tag, seen, deleted, np.bool_(True),
                                 np.int64(u))
        w = ep if n_w == 0 else res_s[0]
        for j in range(n_w):
            if links0[res_s[j], max_deg - 1] < 0:
                w = res_s[j]
                break
        row = links0[w]
        if row[max_deg - 1] < 0:
            n = 0
            while row[n] >= 0:
                n += 1
            row[n] = u
        else:
            far = 0
            far_d = np.float32(-np.inf)
            for j in range(max_deg):
                d = rows_distance(metric, X, inv_norms, w, row[j])
                if d > far_d:
                    far_d = d
                    far = j
            row[far] = u
            replaced += 1
        added += 1
        one[0] = u
        reachable_from(links0, one, seen, queue)
    return added, replaced
