"""Vectors are linked into the HNSW graph after the write is acknowledged (issue 4: bulk writes do not wait for it).

Until a queued vector is linked, queries scan it exactly and merge it with the graph's results; these tests hold
the linker thread still (``paused``) to look at that state, then let it run.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_hnsw import all_allowed, clustered, exact_topk

import vecstore_ref as vs
from vecstore_ref.config import HNSWParams
from vecstore_ref.index import hnsw as hnsw_module
from vecstore_ref.index.base import VectorTable
from vecstore_ref.index.hnsw import HNSWIndex


@pytest.fixture
def paused(monkeypatch):
    """No linker thread starts: queued slots stay queued until ``link_queued`` is called."""

    def no_thread(index, queue):
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        return _Alive(t)

    monkeypatch.setattr(hnsw_module, "start_linker", no_thread)


class _Alive:
    """A finished thread that claims to be alive, so that ``add`` does not start another."""

    def __init__(self, t):
        self._t = t

    def is_alive(self):
        return True

    def join(self):
        self._t.join()


def table_with(x, metric="euclidean"):
    t = VectorTable(x.shape[1], metric, len(x))
    t.write(t.allocate(len(x)), x)
    return t


def test_queued_slots_are_found_exactly_before_they_are_linked(paused):
    x, qs = clustered(600, 16, seed=3)
    t = table_with(x)
    h = HNSWIndex(t, HNSWParams(m=8, ef_construction=64), background=True)
    h.add(np.arange(400, dtype=np.int32))
    h.link_queued()
    h.add(np.arange(400, 600, dtype=np.int32))
    assert h.n_unlinked == 200 and h.n_nodes == 400
    allowed = all_allowed(t)
    for q in qs[:10]:
        got, dists, stats = h.search(q, 10, allowed, ef=600)  # ef covers the whole graph: the walk is exact here
        assert got.tolist() == exact_topk(x, q, "euclidean", 10)
        assert stats.distance_computations >= 200  # the queued slots were scanned
    assert h.n_unlinked == 200 and (h.levels[400:600] == -1).all()
    assert h.link_queued() == 200
    assert h.n_unlinked == 0 and h.n_nodes == 600 and h.check_integrity() == []


def test_an_empty_graph_with_queued_slots_answers_exactly(paused):
    x, qs = clustered(50, 8, seed=4)
    t = table_with(x, "cosine")
    h = HNSWIndex(t, HNSWParams(m=4), background=True)
    h.add(np.arange(50, dtype=np.int32))
    assert h.n_nodes == 0
    for q in qs[:5]:
        assert h.search(q, 7, all_allowed(t))[0].tolist() == exact_topk(x, q, "cosine", 7)
    slots, _, _, _ = h.search_batch(qs[:5], 7, all_allowed(t))
    assert [r.tolist() for r in slots] == [exact_topk(x, q, "cosine", 7) for q in qs[:5]]


def test_a_relinked_node_is_returned_once_at_its_new_place(paused):
    x, _ = clustered(300, 8, seed=5)
    t = table_with(x)
    h = HNSWIndex(t, HNSWParams(m=8), background=True)
    h.add(np.arange(300, dtype=np.int32))
    h.link_queued()
    far = np.full(8, 50.0, dtype=np.float32)
    t.write(np.array([7], dtype=np.int32), far[None, :])  # slot 7 moves far away; its links are for the old place
    h.add(np.array([7], dtype=np.int32))
    assert h.n_unlinked == 1
    got, dists, _ = h.search(far, 5, all_allowed(t), ef=300)
    assert got[0] == 7 and dists[0] == 0.0
    got, _, _ = h.search(x[7], 300, all_allowed(t), ef=300)
    assert got.tolist().count(7) == 1  # never twice: the graph does not return it while it waits
    h.link_queued()
    assert h.search(far, 1, all_allowed(t), ef=300)[0].tolist() == [7] and h.check_integrity() == []


def test_removed_slots_leave_the_queue_and_are_never_returned(paused):
    x, qs = clustered(200, 8, seed=6)
    t = table_with(x)
    h = HNSWIndex(t, HNSWParams(m=8), background=True)
    h.add(np.arange(200, dtype=np.int32))
    gone = np.arange(0, 200, 3, dtype=np.int32)
    h.remove(gone)
    assert h.n_unlinked == 200 - gone.size
    allowed = all_allowed(t)
    for q in qs[:5]:
        assert not set(h.search(q, 20, allowed)[0].tolist()) & set(gone.tolist())
    h.link_queued()
    assert (h.levels[gone] == -1).all() and h.n_nodes == 200 - gone.size
    for q in qs[:5]:
        assert not set(h.search(q, 20, allowed)[0].tolist()) & set(gone.tolist())


def test_batch_search_equals_single_searches_with_a_queue(paused):
    x, qs = clustered(900, 16, seed=7)
    t = table_with(x, "cosine")
    h = HNSWIndex(t, HNSWParams(m=8, ef_construction=64), background=True)
    h.add(np.arange(700, dtype=np.int32))
    h.link_queued()
    h.add(np.arange(650, 900, dtype=np.int32))  # 50 relinks and 200 new slots
    allowed = all_allowed(t)
    allowed[::5] = False
    bs, bd, _, _ = h.search_batch(qs, 10, allowed, ef=40)
    for i, q in enumerate(qs):
        s, d, _ = h.search(q, 10, allowed, ef=40)
        assert bs[i, : len(s)].tolist() == s.tolist()
        assert np.array_equal(bd[i, : len(d)], d)


def test_a_write_beyond_the_limit_links_the_excess_itself(paused):
    x, _ = clustered(500, 8, seed=8)
    t = table_with(x)
    h = HNSWIndex(t, HNSWParams(m=8), background=True)
    h.max_unlinked = 100
    h.add(np.arange(300, dtype=np.int32))
    assert h.n_unlinked == 300 and h.n_nodes == 0  # add() only queues; the writer links the excess after it
    assert h.link_backlog() == 200
    assert h.n_unlinked == 100 and h.n_nodes == 200
    assert (h.levels[:200] >= 0).all() and (h.levels[200:300] == -1).all()  # the oldest were linked


def test_the_thread_links_everything_and_the_graph_is_sound():
    x, qs = clustered(3000, 16, seed=9)
    t = table_with(x)
    h = HNSWIndex(t, HNSWParams(m=8, ef_construction=64), background=True)
    for start in range(0, 3000, 500):
        h.add(np.arange(start, start + 500, dtype=np.int32))
    deadline = 60.0
    import time

    t0 = time.monotonic()
    while h.n_unlinked and time.monotonic() - t0 < deadline:
        time.sleep(0.01)
    assert h.n_unlinked == 0 and h.n_nodes == 3000
    assert h.check_integrity() == []
    hits = sum(len(set(h.search(q, 10, all_allowed(t))[0].tolist()) & set(exact_topk(x, q, "euclidean", 10)))
               for q in qs)
    assert hits / (10 * len(qs)) >= 0.9
    h.close()
    assert h._linker is None


def test_store_writes_are_visible_at_once_and_survive_close_before_linking(tmp_path, paused):
    x, qs = clustered(400, 16, seed=10)
    ids = [f"d{i}" for i in range(400)]
    with vs.VecStore.open(tmp_path / "s", dim=16) as s:
        s.upsert_many(ids, x)
        assert s.stats().unindexed == 400
        top = s.query(x[123], k=1)
        assert top[0].id == "d123"
        s.delete("d123")
        assert s.query(x[123], k=1)[0].id != "d123"
    with vs.VecStore.open(tmp_path / "s") as s:  # the log is replayed; the graph is linked again from it
        assert len(s) == 399 and "d123" not in s
        assert s.stats().unindexed == 399
        assert s.flush_index() == 399
        assert s.stats().unindexed == 0
        s.snapshot()
    with vs.VecStore.open(tmp_path / "s") as s:
        assert s.stats().unindexed == 0  # the snapshot holds the linked graph
        assert s.query(x[5], k=1)[0].id == "d5"


def test_a_snapshot_saves_the_graph_as_linked_and_a_reopen_links_only_the_rest(tmp_path, paused):
    x, _ = clustered(300, 8, seed=11)
    with vs.VecStore.open(tmp_path / "s", dim=8) as s:
        s.upsert_many([f"d{i}" for i in range(300)], x)
        assert s.stats().unindexed == 300
        assert s._state.index.link_queued(200) == 200
        with s._ckpt_lock:
            s._checkpoint()  # an automatic checkpoint: it does not wait for linking (snapshot() links first)
        assert s.stats().unindexed == 100
    with vs.VecStore.open(tmp_path / "s") as s:
        idx = s._state.index
        assert s.recovery_report.records_replayed == 0
        assert idx.n_nodes == 200 and idx.linked_count == 0  # the saved links are used as they are
        assert s.stats().unindexed == 100
        assert s.query(x[250], k=1)[0].id == "d250"  # an unlinked vector is found by the exact scan
        assert s.flush_index() == 100
        assert idx.check_integrity() == []
        assert all(s.query(x[i], k=1)[0].id == f"d{i}" for i in range(0, 300, 7))


def test_flat_store_has_nothing_to_link(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=4, index="flat") as s:
        s.upsert("a", [1, 2, 3, 4])
        assert s.flush_index() == 0 and s.stats().unindexed == 0


def test_concurrent_writers_and_readers_while_the_thread_links(tmp_path):
    x, qs = clustered(4000, 16, seed=12)
    errors = []
    with vs.VecStore.open(tmp_path / "s", dim=16, durability="none") as s:
        def writer():
            try:
                for start in range(0, 4000, 250):
                    s.upsert_many([f"d{i}" for i in range(start, start + 250)], x[start:start + 250])
                    s.delete(f"d{start}")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        w = threading.Thread(target=writer)
        w.start()
        while w.is_alive():
            for q in qs[:3]:
                res = s.query(q, k=5)
                assert len({n.id for n in res}) == len(res)
        w.join()
        assert not errors
        s.flush_index()
        idx = s._state.index
        assert idx.n_unlinked == 0 and idx.check_integrity() == []
        assert len(s) == 4000 - 16
        hits = 0
        for i in range(1, 4000, 97):
            if i % 250:
                hits += s.query(x[i], k=1)[0].id == f"d{i}"
        assert hits >= 0.95 * sum(1 for i in range(1, 4000, 97) if i % 250)


def test_a_chunk_whose_linking_fails_waits_again_and_stays_visible(paused, monkeypatch):
    x, qs = clustered(800, 8, seed=13)
    t = table_with(x)
    h = HNSWIndex(t, HNSWParams(m=8), background=True)
    h.add(np.arange(300, dtype=np.int32))
    h.link_queued()
    h.add(np.arange(300, 800, dtype=np.int32))
    real = HNSWIndex._insert_batch
    calls = []

    def failing(self, *a):
        calls.append(1)
        if len(calls) == 2:  # the first BUILD_BATCH is linked, the second fails
            raise MemoryError("injected")
        return real(self, *a)

    monkeypatch.setattr(HNSWIndex, "_insert_batch", failing)
    with pytest.raises(MemoryError):
        h.link_queued()
    assert h.n_unlinked == 500 and h.n_nodes == int((h.levels >= 0).sum())
    allowed = all_allowed(t)
    for q in qs[:10]:
        got = h.search(q, 10, allowed, ef=800)[0].tolist()
        assert got == exact_topk(x, q, "euclidean", 10)
    monkeypatch.setattr(HNSWIndex, "_insert_batch", real)
    assert h.link_queued() == 500
    assert h.n_nodes == 800 and h.check_integrity() == []
    meta, arrays = h.to_arrays()  # the saved graph passes every check of a load
    assert HNSWIndex.from_arrays(t, HNSWParams(m=8), meta, arrays).n_nodes == 800


def test_a_write_that_grows_the_graph_waits_for_one_chunk_not_the_whole_backlog(monkeypatch):
    """Linking a whole backlog (flush_index, snapshot) used to hold the graph lock for all of it, and a write that
    had to grow the graph's arrays waited for that lock while holding the store's write lock: every query stalled
    for seconds. The lock is now held for at most LINK_CHUNK nodes at a time, and a waiting writer goes first."""
    x, _ = clustered(12_000, 16, 0)
    t = VectorTable(16, "euclidean", len(x))
    slots = t.allocate(len(x))
    t.write(slots, x)
    h = HNSWIndex(t, HNSWParams(m=8, ef_construction=40))
    sizes: list[int] = []
    order: list[str] = []
    real_link = HNSWIndex._link

    def grow_the_table():
        t.allocate(t.capacity - t.n_slots + 1)  # one row more than the table holds: it grows
        h._grow_locked()
        order.append("grown")

    grower = threading.Thread(target=grow_the_table)

    def link(self, chunk):
        sizes.append(int(chunk.size))
        if len(sizes) == 1:
            grower.start()  # while the first chunk is being linked
        real_link(self, chunk)

    monkeypatch.setattr(HNSWIndex, "_link", link)
    h.add(slots)  # links the whole backlog in this thread, as flush_index does
    order.append("linked")
    grower.join(60)
    assert order == ["grown", "linked"]  # the grow did not wait for the whole backlog
    assert max(sizes) <= hnsw_module.LINK_CHUNK and sum(sizes) == len(x)
    assert h._cap >= t.capacity and h.check_integrity() == []
