"""Fixed-capacity binary heaps on parallel arrays ``(dist float32[cap], slot int32[cap])``.

Heaps are tuples of arrays plus a size held by the caller (as in pynndescent): no objects, no allocation inside
the kernels. Entries are ordered by ``(dist, slot)`` so that equal distances resolve the same way every time.
Every operation is a step of a hot loop, compiled once for ``(float32[::1], int32[::1], int64 size, float32, int64
slot)`` and inlined by LLVM into its callers (``STEP`` in `.signatures`): a call would cost more than the
operation.

- A *max-heap* keeps the best ``cap`` entries seen so far with the worst of them at index 0: the result list of a
  top-k scan, the ``W`` set of HNSW's search layer.
- A *min-heap* hands out the closest entry first: HNSW's candidate set ``C``.
"""

import numpy as np

from .signatures import CACHE, DIST, FLOATS, INT, SLOTS, STEP, callee


@callee((DIST, INT, DIST, INT), cache=CACHE, **STEP)
def worse(d1, s1, d2, s2):
    """True if entry 1 ranks after entry 2 (larger distance, then larger slot)."""
    return d1 > d2 or (d1 == d2 and s1 > s2)


@callee((FLOATS, SLOTS, INT, DIST, INT), cache=CACHE, **STEP)
def max_heap_replace_top(dists, slots, size, d, s):
    """Put ``(d, s)`` at the top of a non-empty max-heap and sift it down."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        right = left + 1
        child = left
        if right < size and worse(dists[right], slots[right], dists[left], slots[left]):
            child = right
        if worse(dists[child], slots[child], d, s):
            dists[i] = dists[child]
            slots[i] = slots[child]
            i = child
        else:
            break
    dists[i] = d
    slots[i] = s


@callee((FLOATS, SLOTS, INT, DIST, INT), cache=CACHE, **STEP)
def max_heap_push(dists, slots, size, d, s):
    """Offer ``(d, s)`` to a max-heap of capacity ``dists.shape[0]``; returns the new size.

    While the heap has room the entry is added; once full it replaces the top (the worst) only if it is better.
    """
    cap = dists.shape[0]
    if size < cap:
        i = size
        size += 1
        while i > 0:  # sift up
            parent = (i - 1) >> 1
            if worse(d, s, dists[parent], slots[parent]):
                dists[i] = dists[parent]
                slots[i] = slots[parent]
                i = parent
            else:
                break
        dists[i] = d
        slots[i] = s
        return size
    if not worse(dists[0], slots[0], d, s):
        return size
    max_heap_replace_top(dists, slots, size, d, s)
    return size


@callee((FLOATS, SLOTS, INT), cache=CACHE, **STEP)
def max_heap_pop(dists, slots, size):
    """Remove the top (worst) entry; returns the new size. The removed entry is not returned."""
    size -= 1
    if size > 0:
        max_heap_replace_top(dists, slots, size, dists[size], slots[size])
    return size


@callee((FLOATS, SLOTS, INT), cache=CACHE, **STEP)
def heap_sort_ascending(dists, slots, size):
    """Sort the first ``size`` entries of a max-heap in place, best (smallest ``(dist, slot)``) first."""
    n = size
    while n > 1:
        d = dists[0]
        s = slots[0]
        n = max_heap_pop(dists, slots, n)
        dists[n] = d
        slots[n] = s


@callee((FLOATS, SLOTS, INT, DIST, INT), cache=CACHE, **STEP)
def min_heap_push(dists, slots, size, d, s):
    """Push onto a min-heap; the caller guarantees ``size < dists.shape[0]``. Returns the new size."""
    i = size
    size += 1
    while i > 0:
        parent = (i - 1) >> 1
        if worse(dists[parent], slots[parent], d, s):
            dists[i] = dists[parent]
            slots[i] = slots[parent]
            i = parent
        else:
            break
    dists[i] = d
    slots[i] = s
    return size


@callee((FLOATS, SLOTS, INT), cache=CACHE, **STEP)
def min_heap_pop(dists, slots, size):
    """Pop the closest entry of a non-empty min-heap; returns ``(dist, slot, new_size)``."""
    d_top = dists[0]
    s_top = slots[0]
    size -= 1
    if size > 0:
        d = dists[size]
        s = slots[size]
        i = 0
        while True:
            left = 2 * i + 1
            if left >= size:
                break
            right = left + 1
            child = left
            if right < size and worse(dists[left], slots[left], dists[right], slots[right]):
                child = right
            if worse(d, s, dists[child], slots[child]):
                dists[i] = dists[child]
                slots[i] = slots[child]
                i = child
            else:
                break
        dists[i] = d
        slots[i] = s
    return d_top, s_top, size


def new_heap(cap: int):
    """Allocate an empty heap of capacity ``cap``: ``(+inf float32[cap], -1 int32[cap])``."""
    return np.full(cap, np.inf, dtype=np.float32), np.full(cap, -1, dtype=np.int32)
