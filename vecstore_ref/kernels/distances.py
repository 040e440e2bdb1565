"""Distances between float32 rows, dispatched on an integer metric code.

Every kernel ranks by a *distance* where lower is better, and the store turns it into a *score* where higher is
better only when it returns results (a cheap proxy in the inner loop, corrected once at the end):

====================  ==========  ==================================  =========================
metric                code        distance (lower is better)          score returned to users
====================  ==========  ==================================  =========================
euclidean             0           squared L2                          ``-sqrt(distance)``
dot                   1           ``-<q, x>``                         ``-distance``
cosine                2           ``-<q, x> / (|q| |x|)``             ``-distance``
====================  ==========  ==================================  =========================

Cosine keeps the raw vectors and multiplies by precomputed inverse norms, so the store holds one copy of each
vector and ``get`` returns it as given. The float32 dot product of two such vectors is exact enough while
``|q| |x|`` lies in ``[1e-30, 1e30]``: its partial sums cannot overflow (they are at most ``|q| |x|``) and what
underflow loses is ~1e-10 of it (and while neither inverse norm is a subnormal float32, i.e. both norms are below
~8.5e37). Any vector whose float64 norm is above 1e-30 is a valid cosine vector (SPEC
section 1), so a pair outside that range (``np.full(8, 1e20)`` with itself: the float32 dot is inf) has its cosine
computed in float64 instead (`cosine_f64`, in `.cosine`): a few comparisons per distance, on the inverse
norms the kernels already read.

The inner loops are compiled with ``reassoc``/``contract`` so that LLVM vectorizes the reductions (about 2.7x
faster than strict IEEE order at 128 dimensions). The result is deterministic for a given build, and the flat and
HNSW indexes call these very functions, so they agree on every distance. ``nnan``/``ninf`` stay off: inputs are
finite, but sums can overflow and comparisons with ``inf`` must stay correct.
"""

import numpy as np

from .cosine import cosine_f64, cosine_scale
from .signatures import CACHE, COSINE, DIST, DOT, EUCLIDEAN, FASTMATH, INT, STEP, VECTOR, VECTORS, callee

__all__ = ["COSINE", "DOT", "EUCLIDEAN", "cosine_f64", "cosine_scale", "distance", "ip_row", "l2sq_row"]

# The float32 cosine is used while 1 / (|q| |x|) (the product of the two inverse norms) lies in this range, and
# neither inverse norm is subnormal (a norm above ~8.5e37 would keep only part of its digits).
COSINE_F32_MIN_INV = np.float32(1e-30)
COSINE_F32_MAX_INV = np.float32(1e30)
FLOAT32_MIN_NORMAL = np.float32(np.finfo(np.float32).tiny)


@callee((VECTOR, VECTORS, INT), cache=CACHE, fastmath=FASTMATH, **STEP)
def l2sq_row(q, X, i):
    """Squared L2 distance between ``q`` (float32, (d,)) and row ``i`` of ``X`` (float32, (n, d))."""
    s = np.float32(0.0)
    for j in range(q.shape[0]):
        t = q[j] - X[i, j]
        s += t * t
    return s


@callee((VECTOR, VECTORS, INT), cache=CACHE, fastmath=FASTMATH, **STEP)
def ip_row(q, X, i):
    """Inner product of ``q`` (float32, (d,)) and row ``i`` of ``X`` (float32, (n, d))."""
    s = np.float32(0.0)
    for j in range(q.shape[0]):
        s += q[j] * X[i, j]
    return s


@callee((INT, VECTOR, DIST, VECTORS, VECTOR, INT), cache=CACHE, fastmath=FASTMATH, **STEP)
def distance(metric, q, q_inv_norm, X, inv_norms, i):
    """Distance (lower is better) from query ``q`` to stored row ``i``.

    Args:
        metric: EUCLIDEAN, DOT or COSINE.
        q: the query, float32 (d,), C-contiguous.
        q_inv_norm: float32, ``1/|q|`` under cosine (ignored otherwise).
        X: stored vectors, float32 (capacity, d), C-contiguous.
        inv_norms: float32 (capacity,), ``1/|x|`` per row under cosine (ignored otherwise).
        i: the row (slot).
    """
    if metric == EUCLIDEAN:
        return l2sq_row(q, X, i)
    s = ip_row(q, X, i)  # one call site: two inlined reduction loops are all LLVM vectorizes well
    if metric == DOT:
        return -s
    inv = cosine_scale(q_inv_norm, inv_norms[i])
    if inv > 0:
        return -(s * inv)
    return cosine_f64(q, X, i)
