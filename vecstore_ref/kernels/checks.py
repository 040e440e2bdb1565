"""A query vector's sum of squares in one pass, or -1 for a value that is not finite.

The store's query path checks a float32 vector of the right shape with this instead of with numpy, which would need
an ``np.errstate`` block (about 3 us) to keep a float32 overflow from warning. The sum runs in float64, as SPEC
section 1 asks for the norm; the caller compares it with the limits of its metric and sends anything outside them
to the full check, which raises the precise error.
"""

import numpy as np
from numba import njit

from .signatures import CACHE, NO_REFCOUNT, VECTOR


@njit((VECTOR,), cache=CACHE, nogil=True, **NO_REFCOUNT)
def squared_norm(q):
    """Sum of squares of ``q`` (float32 (d,)) in float64, or -1.0 if a value is NaN or infinite."""
    s = 0.0
    for j in range(q.shape[0]):
        v = np.float64(q[j])
        if not np.isfinite(v):
            return -1.0
        s += v * v
    return s
