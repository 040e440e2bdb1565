"""Big buffers that fill at memory speed: the arrays a snapshot is read into.

Opening a store reads every snapshot array into fresh memory, and the first touch of each page of that memory
costs a page fault. numpy asks for transparent huge pages on every large array (``madvise(MADV_HUGEPAGE)``), and
with Linux's usual ``defrag=madvise`` setting such a fault may first wait for the kernel to compact memory into a
free 2 MiB page. On the benchmark VM faulting in 200 MB of a fresh numpy array took anywhere from 0.03 s to 3 s
for that reason, and it was most of the time an open took (reading 67 MB from the page cache: 0.1-0.55 s).

So the snapshot buffers come from a private anonymous mapping of their own: the pages that are about to be read
into are faulted in by the kernel in one call (``MADV_POPULATE_WRITE``, Linux 5.14), as ordinary pages, which took
0.06-0.2 s for the same 200 MB every time; then the whole buffer is marked for huge pages, so that the kernel's
background collapsing and the faults of rows added later still give the searches their TLB reach. Elsewhere
(another OS, an old kernel) the buffers are plain numpy arrays and nothing else changes.
"""

from __future__ import annotations

import mmap
import sys

import numpy as np

# Below this the fault cost does not matter, and a mapping per array would waste address space and a syscall.
MIN_MAPPED_BYTES = 4 << 20
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14; the constant appeared in Python 3.13
_populate_works = sys.platform.startswith("linux")


def buffer(shape: tuple[int, ...], dtype: np.dtype, *, fill: float | int | None, ready_rows: int) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` whose first ``ready_rows`` rows are faulted in, the rest left to fault
    on first write. ``fill``: the value of every element (0 costs nothing: anonymous memory is zero), or None to
    leave the rows after ``ready_rows`` unwritten (zero in practice, but callers must not rely on it)."""
    global _populate_works
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if not _populate_works or nbytes < MIN_MAPPED_BYTES:
        return _numpy_buffer(shape, dtype, fill)
    try:
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError, AttributeError):
        return _numpy_buffer(shape, dtype, fill)
    row_bytes = nbytes // shape[0] if shape and shape[0] else nbytes
    ready = min(nbytes, max(0, ready_rows) * row_bytes)
    if fill not in (None, 0):
        ready = nbytes  # every page gets written below anyway
    if ready:
        try:
            region.madvise(MADV_POPULATE_WRITE, 0, ready - ready % mmap.PAGESIZE or ready)
        except OSError:  # EINVAL before Linux 5.14: stop trying, fault page by page as numpy would
            _populate_works = False
    try:
        region.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, AttributeError):
        pass
    out = np.frombuffer(region, dtype=dtype, count=count).reshape(shape)  # keeps the mapping alive
    if fill not in (None, 0):
        out.fill(fill)
    return out


def _numpy_buffer(shape: tuple[int, ...], dtype: np.dtype, fill: float | int | None) -> np.ndarray:
    if fill is None:
        return np.empty(shape, dtype=dtype)
    if fill == 0:
        return np.zeros(shape, dtype=dtype)
    return np.full(shape, fill, dtype=dtype)
