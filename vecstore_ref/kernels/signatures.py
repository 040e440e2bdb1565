"""The types every kernel is compiled for, and the options it is compiled with. No kernels here.

Each kernel is declared with an explicit signature built from the names below, so Numba compiles it exactly once,
when its module is imported, for the one set of types the library passes (C-contiguous, writable arrays of exact
dtypes; every integer scalar int64). A call with other types converts the scalars and rejects the arrays (a
``TypeError``, never a silent second compile), and the compiled code is cached under that one signature. The kernels
of one code path share a module, so a path compiles only what it runs:

======================  ======================================================  ================================
module                  kernels                                                 compiled by
======================  ======================================================  ================================
``query_steps``         a query vector's check; its results' scores and texts    every query
``id_hash``             the id -> slot hash table over the ids' bytes           writes, ``get``, ``in``
``heap``                binary heaps (max-heap ``W``, min-heap ``C``)           every search and build path
``cosine``              the cosine's float64 fallback for extreme norms        every cosine search
``distances``           the flat index's distance                               flat searches, filtered scans
``flat_search``         top-k of one query; ties at a distance                  flat query, filtered scan
``flat_batch``          top-k of many queries, one thread's share               flat ``query_batch``
``flat_blas``           the BLAS shortlist merge and its exact rescore          flat ``query_batch`` (big)
``hnsw_walk``           greedy descent and SEARCH-LAYER                         HNSW search and build
``hnsw_search``         K-NN-SEARCH for one query                               HNSW query
``hnsw_scan``           the exact parts of a query (unlinked slots, sparse      HNSW and filtered queries
                        masks); internal kernels only
``hnsw_exact``          the exact scan of a sparse mask's nodes                 HNSW query, few nodes allowed
``hnsw_batch``          K-NN-SEARCH for many queries, one thread's share        HNSW ``query_batch``
``filtered_search``     the filtered walk and the scan of matching rows         filtered query
``filtered_batch``      both for many queries, one thread's share               filtered ``query_batch``
``hnsw_build``          batched INSERT (plan, write, connect back)              HNSW linking
``hnsw_repair``         layer-0 reachability and its repair                     HNSW linking, ``verify``
``handoff``             the GIL hand-off between query threads (steps)          every HNSW query
``fanout_wait``         a bounded wait for a shard's task or result             ``ShardedStore`` on threads
======================  ======================================================  ================================

Only the kernels the index calls (the entry points: ``knn_search``, ``topk_masked``, ``plan_links`` ...) can be
called from Python; the steps and internal kernels they call are marked ``STEP`` or ``INTERNAL`` below.

Batch kernels are serial and release the GIL: the index runs one copy per core on Python threads (each over its
own share of the rows, see `vecstore_ref.index.parallel`) instead of compiling a ``prange`` kernel, whose
parallel lowering costs more compile time than the rest of the kernel.
"""

import os

from numba import config, njit, types

from ..jit import cache_enabled, use_kernel_sources_stamp

# Metric codes: keep in step with vecstore_ref.config.METRIC_CODES (the distances are in kernels.distances).
EUCLIDEAN = 0
DOT = 1
COSINE = 2

# Inner loops may reassociate and contract, which lets LLVM vectorize the reductions (see kernels.distances).
FASTMATH = {"reassoc", "contract", "nsz"}

# Kernels that allocate nothing are compiled without Numba's reference counting of arrays (NRT): otherwise every
# array a compiled function receives costs an atomic increment and decrement, which measured at a third of the
# search time. Such a kernel must not create or return an array.
NO_REFCOUNT = {"_nrt": False}

# Kernels called only by other kernels are compiled without the wrapper that lets Python call them (converting
# every argument to and from Python objects): generating it was a third of their compile time. Calling one of them
# from Python crashes the interpreter; to step through them, run with NUMBA_DISABLE_JIT=1.
INTERNAL = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}

# The small steps of the hot loops: LLVM inlines them into their callers (``alwaysinline``). Numba's own IR inlining
# (``inline="always"``) gives the same speed and costs several times the compile time.
STEP = {"forceinline": True, **NO_REFCOUNT, **INTERNAL}



def callee(signature, **options):
    """``numba.njit(signature, **options)`` for a kernel that only other kernels call (``STEP``, ``INTERNAL``),
    compiled for that one signature when a caller's compile first needs it rather than when its module imports.

    A cached caller carries the machine code of its callees, so a process whose kernels all load from the cache
    never needs them: loading them anyway was most of a warm process's kernel loading (14 of the 15 kernels a
    first HNSW query loaded, each a few milliseconds). When a caller compiles, the callee compiles (or loads) its
    signature and stops compiling: calls with other argument types (a literal 0, an int32 slot) convert to it, as
    they would with ``njit(signature)``, instead of compiling a specialization each.
    """
    def declare(py_func):
        dispatcher = njit(**options)(py_func)
        standard = getattr(dispatcher, "get_call_template", None)
        if standard is None:  # NUMBA_DISABLE_JIT=1: njit returned the Python function itself
            return dispatcher

        def get_call_template(args, kws):  # what Numba asks when it types a call from another kernel
            if not dispatcher.overloads:
                dispatcher.compile(signature)
                dispatcher.disable_compile()
            return standard(args, kws)

        dispatcher.get_call_template = get_call_template
        return dispatcher

    return declare


def probe():
    """Stands in for the kernels of this directory when vecstore_ref.jit looks for their cache directory."""


# Kernels load from Numba's on-disk cache; False only when no cache directory is writable (see vecstore_ref.jit).
# A cached kernel is stale once any kernel source changes, not only its own file (it inlines steps from others).
if not config.DISABLE_JIT:
    use_kernel_sources_stamp(os.path.dirname(os.path.abspath(__file__)))
CACHE = cache_enabled(probe)

INT = types.int64  # every integer scalar: metric code, counts, sizes, levels, thread numbers, slots as scalars
DIST = types.float32  # a distance, or a 1/|q|
SLOT = types.int32  # a slot stored in an array

VECTOR = types.float32[::1]  # one vector (d,); also per-slot or per-query float32 columns
FLOATS = types.float32[::1]
VECTORS = types.float32[:, ::1]  # (n, d) vectors; also (rows, k) distance results
SLOTS = types.int32[::1]
SLOT_ROWS = types.int32[:, ::1]  # links0, links_up, (rows, k) slot results
MASK = types.boolean[::1]  # allowed[slot]
FLAGS = types.uint8[::1]  # deleted[slot], is_new[i]
LEVELS = types.int8[::1]
EPOCHS = types.uint16[::1]  # one thread's visited array
EPOCH_ROWS = types.uint16[:, ::1]  # (threads, capacity)
COUNTS = types.int64[::1]  # tags per thread, counters per query, offsets

# The arguments of knn_search (the walk) and of exact_knn_search (the scan that replaces it for a sparse mask).
KNN_SEARCH = (INT, VECTOR, VECTORS, FLOATS, SLOT_ROWS, SLOT_ROWS, SLOTS, LEVELS, FLAGS, MASK, INT, INT, INT, INT, EPOCHS,
              COUNTS, INT, FLOATS, SLOTS, SLOTS, FLAGS, INT)
EXACT_KNN_SEARCH = (INT, VECTOR, VECTORS, FLOATS, LEVELS, FLAGS, MASK, INT, EPOCHS, COUNTS, INT, FLOATS, SLOTS, SLOTS)
FOLD_UNLINKED = (INT, VECTOR, VECTORS, FLOATS, MASK, SLOTS, FLOATS, SLOTS, INT, INT, INT, INT)
