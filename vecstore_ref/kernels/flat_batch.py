"""Exact top-k for a batch of queries: :func:`~vecstore_ref.kernels.flat_search.topk_masked` for one thread's share.

The kernel is serial and releases the GIL; :func:`vecstore_ref.index.parallel.run_split` runs one copy per core,
thread ``t`` of ``n_threads`` taking queries ``t, t + n_threads, ...``. Big batches take the BLAS path instead
(:mod:`.flat_blas`).
"""

from numba import njit

from .flat_search import topk_masked
from .signatures import CACHE, COUNTS, FASTMATH, FLOATS, INT, MASK, SLOT_ROWS, VECTORS


@njit((INT, VECTORS, FLOATS, VECTORS, FLOATS, MASK, INT, VECTORS, SLOT_ROWS, COUNTS, FLOATS, INT, INT), cache=CACHE,
      nogil=True, fastmath=FASTMATH)
def topk_masked_batch(metric, Q, q_inv_norms, X, inv_norms, allowed, n_slots, out_dists, out_slots, out_found,
                      out_next, t, n_threads):
    """:func:`topk_masked` for rows ``t, t + n_threads, ...`` of ``Q`` (float32 (nq, d)), on thread ``t``.

    Outputs: out_dists float32 (nq, k) (+inf padded), out_slots int32 (nq, k) (-1 padded), out_found int64 (nq,),
    out_next float32 (nq,).
    """
    for i in range(t, Q.shape[0], n_threads):
        found, _, nd = topk_masked(metric, Q[i], q_inv_norms[i], X, inv_norms, allowed, n_slots, out_dists[i],
                                   out_slots[i])
        out_found[i] = found
        out_next[i] = nd
