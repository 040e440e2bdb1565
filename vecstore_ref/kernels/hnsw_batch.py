"""HNSW batch search: :func:`~vecstore_ref.kernels.hnsw_search.knn_search` for one thread's share of a batch.

The kernel is serial and releases the GIL; :func:`vecstore_ref.index.parallel.run_split` runs one copy per core,
thread ``t`` of ``n_threads`` taking queries ``t, t + n_threads, ...`` (round-robin, so that each thread gets as
many hard queries as easy ones). Results equal ``knn_search`` query by query, for any thread count.
"""

from numba import njit

from .hnsw_search import knn_search, prefer_exact
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
    """:func:`knn_search` for rows ``t, t + n_threads, ...`` of ``Q`` (float32 (nq, d)), on thread ``t``.

    Args:
        visited: uint16 (threads, capacity); tags: int64 (threads,);
        scratch_d, scratch_s: float32/int32 (threads, >= capacity + ef), one row per thread (this one uses row t).
        scan_limit: as for :func:`knn_search`; every thread decides the same way (one mask).
        unlinked: as for :func:`knn_search`.
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
        found, nd, nh = knn_search(metric, Q[i], X, inv_norms, links0, links_up, up_offset, levels, deleted, allowed,
                                   ep, max_level, k, ef, visited[t], tags, t, scratch_d[t], scratch_s[t], scan_limit,
                                   unlinked)
        for j in range(found):
            out_d[i, j] = scratch_d[t, cap + j]
            out_s[i, j] = scratch_s[t, cap + j]
        out_dist[i] = nd
        out_hops[i] = nh
