"""Filtered batch search: `vecstore_ref.kernels.filtered_search`'s kernels for one thread's share of a batch.

The kernels are serial and release the GIL; `vecstore_ref.index.parallel.run_split` runs one copy per core, thread
``t`` of ``n_threads`` taking queries ``t, t + n_threads, ...``. Results equal the single-query kernels query by
query, for any thread count.
"""

from numba import float64, njit

from .filtered_search import filtered_knn_search, scan_subset
from .signatures import (
    CACHE,
    COUNTS,
    EPOCH_ROWS,
    FASTMATH,
    FLAGS,
    FLOATS,
    INT,
    LEVELS,
    MASK,
    SLOT_ROWS,
    SLOTS,
    VECTORS,
)


@njit((INT, VECTORS, FLOATS, VECTORS, FLOATS, SLOTS, VECTORS, SLOT_ROWS, COUNTS, FLOATS, INT, INT), cache=CACHE,
      nogil=True, fastmath=FASTMATH)
def scan_subset_batch(metric, Q, q_invs, X, inv_norms, candidates, out_d, out_s, out_found, out_next, t, n_threads):
    """`scan_subset` for rows ``t, t + n_threads, ...`` of ``Q`` (float32 (nq, d)), on thread ``t``.

    Outputs: out_d/out_s float32/int32 (nq, k) (filled best first, the rest left as given), out_found int64 (nq,),
    out_next float32 (nq,).
    """
    for i in range(t, Q.shape[0], n_threads):
        found, _, nd = scan_subset(metric, Q[i], q_invs[i], X, inv_norms, candidates, out_d[i], out_s[i])
        out_found[i] = found
        out_next[i] = nd


@njit((INT, VECTORS, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, LEVELS, FLAGS, MASK, INT, INT, INT, INT, EPOCH_ROWS,
       COUNTS, VECTORS, SLOT_ROWS, SLOTS, INT, INT, float64, VECTORS, SLOT_ROWS, COUNTS, COUNTS, INT, INT),
      cache=CACHE, nogil=True, fastmath=FASTMATH)
def filtered_knn_search_batch(metric, Q, X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed, ep,
                              max_level, ef, ef_wide, visited, tags, scratch_d, scratch_s, unlinked, gather,
                              seeds_wanted, selectivity, out_d, out_s, out_dist, out_hops, t, n_threads):
    """`filtered_knn_search` for rows ``t, t + n_threads, ...`` of ``Q`` (float32 (nq, d)), on thread ``t``.

    Args:
        visited: uint16 (threads, capacity); tags: int64 (threads,);
        scratch_d, scratch_s: float32/int32 (threads, >= capacity + ef_wide), one row per thread (this one: row t).
        out_d, out_s: float32/int32 (nq, w), filled with +inf/-1 by the caller; the best ``w`` written first.
        out_dist, out_hops: int64 (nq,), the work counters per query.
        t, n_threads: this thread's share.
    """
    nq = Q.shape[0]
    w = out_d.shape[1]
    cap = levels.shape[0]
    for i in range(t, nq, n_threads):
        found, nd, nh = filtered_knn_search(metric, Q[i], X, inv_norms, links0, links_up, up_offset, levels, deleted,
                                            allowed, ep, max_level, ef, ef_wide, visited[t], tags, t, scratch_d[t],
                                            scratch_s[t], unlinked, gather, seeds_wanted, selectivity)
        for j in range(min(found, w)):
            out_d[i, j] = scratch_d[t, cap + j]
            out_s[i, j] = scratch_s[t, cap + j]
        out_dist[i] = nd
        out_hops[i] = nh
