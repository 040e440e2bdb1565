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
computed in float64 instead (`cosine_f64`): a few comparisons per distance, on the inverse norms the kernels
already read.

The inner loops are compiled with ``reassoc``/``contract`` so that LLVM vectorizes the reductions (about 2.7x
faster than strict IEEE order at 128 dimensions). The result is deterministic for a given build, and the flat and
HNSW indexes call these very functions, so they agree on every distance. ``nnan``/``ninf`` stay off: inputs are
finite, but sums can overflow and comparisons with ``inf`` must stay correct.
"""

import numpy as np
from numba import njit

# Metric codes: keep in step with vecstore_ref.config.METRIC_CODES.
EUCLIDEAN = 0
DOT = 1
COSINE = 2

FASTMATH = {"reassoc", "contract", "nsz"}

# The float32 cosine is used while 1 / (|q| |x|) (the product of the two inverse norms) lies in this range, and
# neither inverse norm is subnormal (a norm above ~8.5e37 would keep only part of its digits).
COSINE_F32_MIN_INV = np.float32(1e-30)
COSINE_F32_MAX_INV = np.float32(1e30)
FLOAT32_MIN_NORMAL = np.float32(np.finfo(np.float32).tiny)


@njit(cache=True, fastmath=FASTMATH)
def l2sq_row(q, X, i):
    """Squared L2 distance between ``q`` (float32, (d,)) and row ``i`` of ``X`` (float32, (n, d))."""
    s = np.float32(0.0)
    for j in range(q.shape[0]):
        t = q[j] - X[i, j]
        s += t * t
    return s


@njit(cache=True, fastmath=FASTMATH)
def ip_row(q, X, i):
    """Inner product of ``q`` (float32, (d,)) and row ``i`` of ``X`` (float32, (n, d))."""
    s = np.float32(0.0)
    for j in range(q.shape[0]):
        s += q[j] * X[i, j]
    return s


@njit(cache=True, fastmath=FASTMATH)
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


@njit(cache=True, fastmath=FASTMATH)
def distance_between_rows(metric, X, inv_norms, a, b):
    """Distance between two stored rows ``a`` and ``b`` (used while linking the HNSW graph)."""
    if metric == EUCLIDEAN:
        return l2sq_row(X[a], X, b)
    s = ip_row(X[a], X, b)
    if metric == DOT:
        return -s
    inv = cosine_scale(inv_norms[a], inv_norms[b])
    if inv > 0:
        return -(s * inv)
    return cosine_f64(X[a], X, b)


@njit(cache=True, inline="always")
def cosine_scale(q_inv, x_inv):
    """``q_inv * x_inv`` = 1 / (|q| |x|) when the float32 cosine of the pair is exact enough (see the module
    docstring), else 0: the caller then computes it with `cosine_f64`."""
    if q_inv < FLOAT32_MIN_NORMAL or x_inv < FLOAT32_MIN_NORMAL:
        return np.float32(0.0)
    inv = q_inv * x_inv
    if inv < COSINE_F32_MIN_INV or inv > COSINE_F32_MAX_INV:
        return np.float32(0.0)
    return inv


@njit(cache=True)
def cosine_f64(q, X, i):
    """Cosine distance ``-<q, x> / (|q| |x|)`` of ``q`` (float32 (d,)) and row ``i`` of ``X``, summed in float64:
    for vectors whose norms are too large or too small for the float32 form (see the module docstring). Every
    product of two float32 values is exact in float64, so nothing here can overflow or underflow."""
    dot = 0.0
    qq = 0.0
    xx = 0.0
    for j in range(q.shape[0]):
        a = np.float64(q[j])
        b = np.float64(X[i, j])
        dot += a * b
        qq += a * a
        xx += b * b
    return np.float32(-(dot / (np.sqrt(qq) * np.sqrt(xx))))
