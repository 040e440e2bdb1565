"""The small steps of a single query around its graph walk, each one call of a small kernel.

- `squared_norm`: a query vector's sum of squares in one pass, or -1 for a value that is not finite. The store's
  query path checks a float32 vector of the right shape with this instead of with numpy, which would need an
  ``np.errstate`` block (about 3 us) to keep a float32 overflow from warning. The sum runs in float64, as SPEC
  section 1 asks for the norm; the caller compares it with the limits of its metric and sends anything outside
  them to the full check, which raises the precise error.
- `scores_of`: the results' scores, and whether two of them tie (settled by id).
- `gather_texts`: the results' metadata JSON, read from ten random rows with the loads in flight together.

Each replaces a few numpy calls or a Python loop, whose fixed cost of a microsecond or so per call was a large part
of a query at small ``ef``. None releases the GIL (no ``nogil``): each takes well under a microsecond, and
releasing the GIL around it would hand the interpreter to another querying thread and then wait to get it back, a
round trip that costs more than the work (two query threads ran about 10 % slower with it). The query's one
release is its graph walk.
"""

import numpy as np
from numba import njit

from .prefetch import prefetch_row
from .signatures import CACHE, COUNTS, FLAGS, FLOATS, INT, NO_REFCOUNT, SLOTS, VECTOR


@njit((VECTOR,), cache=CACHE, **NO_REFCOUNT)
def squared_norm(q):
    """Sum of squares of ``q`` (float32 (d,)) in float64, or -1.0 if a value is NaN or infinite."""
    s = 0.0
    for j in range(q.shape[0]):
        v = np.float64(q[j])
        if not np.isfinite(v):
            return -1.0
        s += v * v
    return s


TIE_INSIDE = 1  # two of the scores written are equal
TIE_AT_K = 2  # the result after the last one written is at the same distance


@njit(INT(INT, FLOATS, FLOATS), cache=CACHE, **NO_REFCOUNT)
def scores_of(euclidean, dists, out):
    """Users' scores of the first ``len(out)`` results of a list ordered by distance: ``out[i] =
    -sqrt(max(dists[i], 0))`` if ``euclidean`` else ``-dists[i]``, in float32 as numpy computes them.

    Returns the ties the caller settles by id: ``TIE_INSIDE`` if two scores written are equal (being in
    order, they are neighbours), plus ``TIE_AT_K`` if ``dists`` holds a further result at the distance of the
    last one written."""
    ties = 0
    zero = np.float32(0.0)
    k = out.shape[0]
    for i in range(k):
        d = dists[i]
        s = -np.sqrt(max(d, zero)) if euclidean else -d
        out[i] = s
        if i > 0 and s == out[i - 1]:
            ties |= TIE_INSIDE
    if 0 < k < dists.shape[0] and dists[k] == dists[k - 1]:
        ties |= TIE_AT_K
    return ties


BAD_ROW = -(1 << 62)  # gather_texts: a row's offsets point outside the text buffer


@njit(INT(SLOTS, FLAGS, COUNTS, SLOTS, FLAGS, FLAGS, COUNTS), cache=CACHE, **NO_REFCOUNT)
def gather_texts(slots, row_state, start, length, data, out, where):
    """The metadata JSON of a few result rows, copied one after the other into ``out`` (uint8).

    ``row_state``, ``start``, ``length`` and ``data`` are the metadata columns' arrays (`vecstore_ref.columns`):
    row ``s`` holds text when ``row_state[s] == 2``, at ``data[start[s] : start[s] + length[s]]``. Writes
    ``where[i]`` (offset in ``out``) and ``where[k + i]`` (length, -1 for a row without text) for each of the
    ``k`` slots, and returns the bytes written, or minus the size ``out`` needs if it is too small (nothing is
    then copied), or ``BAD_ROW`` for a row whose text would lie outside ``data`` (nothing is read: the caller's
    Python path reads it instead, as it would without this kernel). The rows' entries are all requested first (a
    software prefetch), so their cache misses overlap where a Python loop would wait for each in turn."""
    k = slots.shape[0]
    cap = min(row_state.shape[0], start.shape[0], length.shape[0])
    for i in range(k):  # ask for every row's three entries at once: the misses overlap instead of queueing
        s = slots[i]
        if 0 <= s < cap:
            prefetch_row(row_state, s)
            prefetch_row(start, s)
            prefetch_row(length, s)
    total = 0
    for i in range(k):
        s = slots[i]
        if 0 <= s < cap and row_state[s] == 2:
            if start[s] < 0 or length[s] < 0 or start[s] + length[s] > data.shape[0]:
                return BAD_ROW  # a kernel reads without bounds checks: never past the buffer
            prefetch_row(data, start[s])  # and each text's first line, while the others are looked up
            where[k + i] = length[s]
            total += length[s]
        else:
            where[k + i] = -1
    if total > out.shape[0]:
        return -total
    pos = 0
    for i in range(k):
        n = where[k + i]
        where[i] = pos
        if n > 0:
            a = start[slots[i]]
            for j in range(n):
                out[pos + j] = data[a + j]
            pos += n
    return pos
