"""The cosine of two float32 vectors whatever their norms: the float32 form while it is exact enough, else float64.

Shared by the flat index's distance (`.distances`, where the range is explained) and the HNSW walk's copy of
it (`.hnsw_walk`), in a module of its own so that the HNSW path does not compile the flat distances.
"""

import numpy as np

from .signatures import CACHE, DIST, INT, INTERNAL, NO_REFCOUNT, STEP, VECTOR, VECTORS, callee

# The float32 cosine is used while 1 / (|q| |x|) (the product of the two inverse norms) lies in this range, and
# neither inverse norm is subnormal (a norm above ~8.5e37 would keep only part of its digits).
COSINE_F32_MIN_INV = np.float32(1e-30)
COSINE_F32_MAX_INV = np.float32(1e30)
FLOAT32_MIN_NORMAL = np.float32(np.finfo(np.float32).tiny)


@callee((DIST, DIST), cache=CACHE, **STEP)
def cosine_scale(q_inv, x_inv):
    """``q_inv * x_inv`` = 1 / (|q| |x|) when the float32 cosine of the pair is exact enough (see
    `.distances`), else 0: the caller then computes it with `cosine_f64`."""
    if q_inv < FLOAT32_MIN_NORMAL or x_inv < FLOAT32_MIN_NORMAL:
        return np.float32(0.0)
    inv = q_inv * x_inv
    if inv < COSINE_F32_MIN_INV or inv > COSINE_F32_MAX_INV:
        return np.float32(0.0)
    return inv


@callee((VECTOR, VECTORS, INT), cache=CACHE, **NO_REFCOUNT, **INTERNAL)
def cosine_f64(q, X, i):
    """Cosine distance ``-<q, x> / (|q| |x|)`` of ``q`` (float32 (d,)) and row ``i`` of ``X``, summed in float64:
    for vectors whose norms are too large or too small for the float32 form (see `.distances`). Every
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
