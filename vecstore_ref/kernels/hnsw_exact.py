"""The exact scans beside an HNSW walk, as entry points: what `knn_search` does not always need.

- `exact_knn_search` replaces the walk when a mask allows so few nodes that scanning them is cheaper
  (`HNSWIndex.scan_limit`);
- `fold_unlinked_into` merges the exact distances of the vectors written but not linked yet into a walk's results
  (only while the linker has a backlog).

They are a module of their own so that a store whose queries never take these paths (an unfiltered store opened
with its graph linked) never compiles them: the walk's first compile is the one a new user waits for.
"""

from numba import njit

from .hnsw_scan import exact_knn, fold_unlinked, inv_norm
from .signatures import CACHE, EXACT_KNN_SEARCH, FASTMATH, FOLD_UNLINKED, NO_REFCOUNT


@njit(EXACT_KNN_SEARCH, cache=CACHE, nogil=True, fastmath=FASTMATH)
def exact_knn_search(metric, q, X, inv_norms, levels, deleted, allowed, k, visited, tags, t, scratch_d, scratch_s,
                     unlinked):
    """The top ``k`` allowed, live nodes by scanning them all, the ``unlinked`` slots folded in (each argument as
    the one of that name of `knn_search`): ``(found, distance computations, 0)``, the results at
    ``scratch[cap:cap + found]``."""
    return exact_knn(metric, q, X, inv_norms, levels, deleted, allowed, k, visited, tags, t, scratch_d, scratch_s,
                     unlinked)


@njit(FOLD_UNLINKED, cache=CACHE, nogil=True, fastmath=FASTMATH, **NO_REFCOUNT)
def fold_unlinked_into(metric, q, X, inv_norms, allowed, unlinked, scratch_d, scratch_s, cap, ef, found, k):
    """Merge the exact distances of the ``unlinked`` allowed slots into `knn_search`'s results (``found`` of them at
    ``scratch[cap:cap + ef]``, best first): the best ``k`` are left there, best first (the first ``k`` entries of
    the scratch rows are the merge's heap). Returns ``(found (<= k), distance computations)``."""
    q_inv = inv_norm(metric, q)
    found, n_dist = fold_unlinked(metric, q, q_inv, X, inv_norms, allowed, unlinked, scratch_d[cap:cap + ef],
                                  scratch_s[cap:cap + ef], found, scratch_d[:k], scratch_s[:k])
    return min(found, k), n_dist
