"""A warm process loads only what its calls need: the entry points of the paths it runs, without Numba's compiler
target, into snapshot buffers that are faulted in at once. And a sparse mask's exact scan compiles apart from the
walk. Each kernel case runs in a fresh interpreter; none of them measures time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref.storage import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Builds (first run) or opens (later runs) a small HNSW store, answers one query, and reports which kernels this
# process compiled or loaded, and whether Numba's implementation modules were imported.
CHILD = r"""
import json, sys
import numpy as np
import vecstore_ref as vs
rng = np.random.default_rng(0)
x = rng.normal(size=(300, 8)).astype(np.float32)
s = vs.VecStore.open(sys.argv[1], dim=8, metric="euclidean")
if len(s) == 0:
    s.upsert_many([f"v{i}" for i in range(300)], x)
    s.flush_index()
top = s.query(x[5] + 0.001, k=1)[0].id
s.close()
from vecstore_ref.kernels import heap, hnsw_search, hnsw_walk
print("RESULT " + json.dumps({
    "top": top,
    "heap_push_overloads": len(heap.max_heap_push.overloads),
    "search_layer_overloads": len(hnsw_walk.search_layer.overloads),
    "knn_search_overloads": len(hnsw_search.knn_search.overloads),
    "exact_loaded": "vecstore_ref.kernels.hnsw_exact" in sys.modules,
    "linalg_imported": "numba.np.linalg" in sys.modules,
}))
"""


def _child(store, cache) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["NUMBA_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, "-c", CHILD, str(store)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_a_warm_process_loads_entry_points_only_and_a_cold_one_compiles_each_callee_once(tmp_path):
    cold = _child(tmp_path / "store", tmp_path / "cache")
    assert cold["top"] == "v5"
    # Compiled for the build and the query: every caller's call converts to the callee's one signature (a literal
    # 0, an int32 slot), so there is one machine code per callee, not one per argument types seen.
    assert cold["heap_push_overloads"] == 1
    assert cold["search_layer_overloads"] == 1
    assert not cold["exact_loaded"]  # an unfiltered store never needs the sparse-mask scan
    warm = _child(tmp_path / "store", tmp_path / "cache")
    assert warm["top"] == "v5"
    assert warm["knn_search_overloads"] == 1  # the entry point, from the cache
    assert warm["heap_push_overloads"] == 0  # inside knn_search's cached code: never loaded on its own
    assert warm["search_layer_overloads"] == 0
    assert not warm["linalg_imported"]  # loading cached code skipped the compiler target's implementations


def test_a_sparse_mask_is_scanned_exactly_and_equals_the_flat_answer(tmp_path):
    """Few allowed nodes make knn_search hand the query to hnsw_exact's scan; the answer is the exact one."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    ids = [f"r{i}" for i in range(2000)]
    meta = [{"g": i % 200} for i in range(2000)]
    with vs.VecStore.open(tmp_path / "h", dim=16, metric="euclidean") as h, \
            vs.VecStore.open(tmp_path / "f", dim=16, metric="euclidean", index="flat") as f:
        for s in (h, f):
            s.upsert_many(ids, x, meta)
            s.flush_index()
        index = h._state.index
        for q in x[:20] + 0.01:
            allowed = np.zeros(index.table.capacity, dtype=np.bool_)
            allowed[np.arange(0, 2000, 200)] = True  # 10 of 2,000 nodes
            slots, dists, stats = index.search(q, 5, allowed)
            expect = np.argsort(((x[::200] - q) ** 2).sum(axis=1), kind="stable")[:5] * 200
            assert slots.tolist() == expect.tolist()
            # The scan ran, not a walk that happened to find them all: one distance per allowed node, no hop.
            assert (stats.distance_computations, stats.hops) == (10, 0)
            got = [n.id for n in h.query(q, k=5, filter="g = 0")]
            assert got == [n.id for n in f.query(q, k=5, filter="g = 0")]
        batch_slots, _, _, _ = index.search_batch(x[:20] + 0.01, 5, allowed)
        assert batch_slots[:, :5].tolist() == [index.search(q, 5, allowed)[0].tolist() for q in x[:20] + 0.01]


@pytest.mark.parametrize("fill", [None, 0, 1.0, -1])
def test_snapshot_buffers_have_the_shape_dtype_and_fill_asked_for(fill):
    dtype = np.float32 if fill == 1.0 else np.int32
    rows = (memory.MIN_MAPPED_BYTES // (16 * 4)) * 2  # big enough to come from a mapping where it can
    buf = memory.buffer((rows, 16), dtype, fill=fill, ready_rows=rows // 2)
    assert buf.shape == (rows, 16) and buf.dtype == dtype
    assert buf.flags.c_contiguous and buf.flags.writeable
    if fill is not None:
        assert (buf == fill).all()
    buf[rows - 1, 15] = 7
    buf[0, 0] = 5
    assert buf[rows - 1, 15] == 7 and buf[0, 0] == 5
    small = memory.buffer((4, 2), np.float64, fill=2.5, ready_rows=4)
    assert small.tolist() == [[2.5, 2.5]] * 4


def test_a_store_read_into_mapped_buffers_grows_and_reopens_intact(tmp_path):
    """Big enough that the vectors and the graph come from `memory.buffer`: writes after the open fill the room,
    then grow past it, and a reopen sees every record."""
    rng = np.random.default_rng(5)
    n = 12_000  # 12,000 x 128 float32 = 6 MB of vectors
    x = rng.normal(size=(n, 128)).astype(np.float32)
    with vs.VecStore.open(tmp_path / "s", dim=128, metric="euclidean") as s:
        s.upsert_many([f"a{i}" for i in range(n)], x)
        s.flush_index()
    more = rng.normal(size=(n, 128)).astype(np.float32)
    with vs.VecStore.open(tmp_path / "s") as s:
        assert s.recovery_report.records_replayed == 0
        s.upsert_many([f"b{i}" for i in range(n)], more)  # past the room of 1.5 n: the table grows
        s.flush_index()
        # Random 128-d vectors are hard for any graph (hnswlib misses 13 % of such self-queries at ef 64): a
        # wide search makes these exact.
        assert s.query(x[7], k=1, ef=1000)[0].id == "a7"
        assert s.query(more[9], k=1, ef=1000)[0].id == "b9"
    with vs.VecStore.open(tmp_path / "s") as s:
        assert len(s) == 2 * n
        assert s.query(more[11], k=1, ef=1000)[0].id == "b11"
        assert s.query(x[3], k=1, ef=1000)[0].id == "a3"
        assert s._state.index.check_integrity() == []
        assert s.verify().ok
