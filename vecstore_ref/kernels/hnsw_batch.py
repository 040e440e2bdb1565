"""HNSW batch search: `knn_search` for one thread's share of a batch.

The kernel is serial and releases the GIL; `vecstore_ref.index.parallel.run_split` runs one copy per core,
thread ``t`` of ``n_threads`` taking queries ``t, t + n_threads, ...`` (round-robin, so that each thread gets as
many hard queries as easy ones). Results equal ``knn_search`` query by query, for any thread count.
"""

from numba import njit

from .hnsw_scan import exact_knn, fold_unlinked, inv_norm, prefer_exact
from .hnsw_search import knn_search
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


@njit((INT, VECTORS, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, LEVELS, FLAGS, MASK, INT, INT, INT, EPOCH_ROWS,
       COUNTS, VECTORS, SLOT_ROWS, INT, SLOTS, VECTORS, SLOT_ROWS, COUNTS, COUNTS, INT, INT),
      cache=CACHE, nogil=True, fastmath=FASTMATH)
def knn_search_batch(metric, Q, X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed, ep, max_level,
                     ef, visited, tags, scratch_d, scratch_s, scan_limit, unlinked, out_d, out_s, out_dist, out_hops,
                     t, n_threads):
    """`knn_search` for rows ``t, t + n_threads, ...`` of ``Q`` (float32 (nq, d)), on thread ``t``.

    Args:
        visited: uint16 (threads, capacity); tags: int64 (threads,);
        scratch_d, scratch_s: float32/int32 (threads, >= capacity + ef + 2m), one row per thread (this one uses
            row t).
        scan_limit: scan exactly (`exact_knn`) if the mask allows at most this many nodes (`prefer_exact`),
            -1 = always walk; every thread decides the same way (one mask).
        unlinked: as for `knn_search`.
        out_d, out_s: float32/int32 (nq, k), filled with +inf/-1 by the caller; results written best first.
        out_dist, out_hops: int64 (nq,), the work counters per query.
        t, n_threads: this thread's share.
    """
    nq = Q.shape[0]
    k = out_d.shape[1]
    cap = levels.shape[0]
    if scan_limit >= 0:
        scan_limit = -2 if prefer_exact(allowed[:cap], scan_limit) else -1
    for i in range(t, nq, n_threads):
        if scan_limit == -2:
            found, nd, nh = exact_knn(metric, Q[i], X, inv_norms, levels, deleted, allowed, k, visited[t], tags, t,
                                      scratch_d[t], scratch_s[t], unlinked)
        else:
            found, nd, nh = knn_search(metric, Q[i], X, inv_norms, links0, links_up, up_offset, levels, deleted,
                                       allowed, ep, max_level, k, ef, visited[t], tags, t, scratch_d[t], scratch_s[t],
                                       unlinked, deleted, -1)
            if unlinked.shape[0] > 0:
                found, nf = fold_unlinked(metric, Q[i], inv_norm(metric, Q[i]), X, inv_norms, allowed, unlinked,
                                          scratch_d[t, cap:cap + ef], scratch_s[t, cap:cap + ef], found,
                                          scratch_d[t, :k], scratch_s[t, :k])
                found = min(found, k)
                nd += nf
        for j in range(found):
            out_d[i, j] = scratch_d[t, cap + j]
            out_s[i, j] = scratch_s[t, cap + j]
        out_dist[i] = nd
        out_hops[i] = nh
