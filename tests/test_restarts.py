"""Restarts that rebuild nothing: a reopened store keeps its graph, and an update never damages a neighbourhood.

The defect behind ``shared/fixtures/hnsw-after-crash``: relinking a node in place when its vector changed left the
nodes that linked to it (and that it linked to) with neighbourhoods made for where it used to be. After a bulk
update of most records, records that were *not* updated could no longer be found by their own vectors. A changed
vector now gets a new slot (a new node); the old node stays as a tombstone with its old vector, so every link in
the graph still means what it meant when it was made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vecstore_ref as vs

PARAMS = vs.HNSWParams(m=8, ef_construction=64, ef_search=32, seed=1)


def self_query_misses(store, ids) -> int:
    return sum(1 for i in ids if (r := store.query(store.get(i).vector, k=1, ef=256)) == [] or r[0].id != i)


def test_a_bulk_update_leaves_the_records_it_did_not_touch_findable(tmp_path):
    rng = np.random.default_rng(3)
    kept = [f"m{i}" for i in range(800)]
    moved = [f"b{i}" for i in range(5000)]
    with vs.VecStore.open(tmp_path / "s", dim=16, hnsw=PARAMS, durability="none") as s:
        s.upsert_many(kept + moved, rng.normal(size=(5800, 16)).astype(np.float32))
        s.flush_index()
        for _ in range(3):  # new vectors for most records, three times (relinking in place missed 36 of 800)
            s.upsert_many(moved, rng.normal(size=(5000, 16)).astype(np.float32))
            s.flush_index()
        assert self_query_misses(s, kept) == 0
        assert self_query_misses(s, moved[::10]) == 0
        st = s.stats()
        assert st.superseded == 15000 and st.deleted_count == 0 and st.visible == 5800
        assert s.compact() == 0  # old versions are reclaimed, but they were not records
        assert s.stats().superseded == 0 and s.stats().slots == 5800
        assert self_query_misses(s, kept[::4]) == 0


def test_an_upsert_with_the_same_vector_keeps_its_slot(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=3, index="hnsw") as s:
        s.upsert("a", [1, 2, 3], {"v": 1})
        slot = s._state.lookup("a")
        s.upsert("a", [1, 2, 3], {"v": 2}, ttl=100)
        assert s._state.lookup("a") == slot and s.stats().superseded == 0
        assert s.get("a").metadata == {"v": 2} and s.get("a").expires_at is not None
        s.upsert("a", [1, 2, 4])
        assert s._state.lookup("a") != slot and s.stats().superseded == 1
        assert s.get("a").metadata is None and s.query([1, 2, 4], k=1)[0].id == "a"


def test_close_and_reopen_links_nothing_again(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    with vs.VecStore.open(tmp_path / "s", dim=16, hnsw=PARAMS) as s:
        s.upsert_many([f"d{i}" for i in range(3000)], x, [{"i": i} for i in range(3000)])
        s.flush_index()
    with vs.VecStore.open(tmp_path / "s") as s:  # no snapshot() was called: close() checkpointed
        assert s.recovery_report.records_replayed == 0 and s.recovery_report.snapshot is not None
        st = s.stats()
        assert st.unindexed == 0 and st.log_bytes_since_checkpoint == 0 and st.last_checkpoint_at is not None
        assert s._state.index.linked_count == 0 and s._state.index.n_nodes == 3000
        assert s.query(x[17], k=1)[0].id == "d17"
        assert [h.id for h in s.query(x[5], k=1, filter="i = 5")] == ["d5"]
        assert s.get("d2999").metadata == {"i": 2999}


def test_snapshot_links_first_and_close_saves_what_was_linked_after_a_checkpoint(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    # snapshot() right after a bulk load (no flush_index()): the snapshot holds the whole graph.
    for durability in ("none", "fsync"):
        path = tmp_path / durability
        with vs.VecStore.open(path, dim=16, hnsw=PARAMS, durability=durability) as s:
            s.upsert_many([f"d{i}" for i in range(2000)], x)
            s.snapshot()
        with vs.VecStore.open(path) as s:
            assert s.stats().unindexed == 0 and s.recovery_report.records_replayed == 0
            assert s._state.index.n_nodes == 2000
    # A checkpoint taken while vectors wait (an automatic one does not link first), then linking and no new
    # write: close() still saves the graph, although the log holds nothing since the checkpoint.
    path = tmp_path / "auto"
    with vs.VecStore.open(path, dim=16, hnsw=PARAMS) as s:
        s._state.index.pause_linking()
        s.upsert_many([f"d{i}" for i in range(2000)], x)
        with s._ckpt_lock:
            s._checkpoint()
        s._state.index.resume_linking()
        assert s.stats().log_bytes_since_checkpoint == 0
        s.flush_index()
    with vs.VecStore.open(path) as s:
        assert s.stats().unindexed == 0 and s._state.index.n_nodes == 2000
        assert s.query(x[7], k=1)[0].id == "d7"


def _writer_child(path: str, ready: str) -> None:
    s = vs.VecStore.open(path, dim=16, hnsw=PARAMS)
    rng = np.random.default_rng(5)
    kept, moved = [f"m{i}" for i in range(600)], [f"b{i}" for i in range(4000)]
    s.upsert_many(kept + moved, rng.normal(size=(4600, 16)).astype(np.float32))
    s.flush_index()
    s.snapshot()
    for i in range(40):
        s.upsert(f"m{i}", rng.normal(size=16).astype(np.float32))
        s.delete(f"b{i}")
    s.soft_delete("m100")
    s.restore("m100")
    s.upsert_many(moved[40:], rng.normal(size=(3960, 16)).astype(np.float32))  # then killed while linking
    open(ready, "w").close()
    time.sleep(60)


@pytest.mark.parametrize("wait", [0.0, 0.5])
def test_kill9_during_linking_then_every_record_is_found(tmp_path, wait):
    path, ready = str(tmp_path / "s"), str(tmp_path / "ready")
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"from test_restarts import _writer_child; _writer_child({path!r}, {ready!r})")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(ready):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(wait)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    with vs.VecStore.open(path, hnsw=PARAMS) as s:
        ids = s.ids()
        assert len(ids) == 4600 - 40
        sample = [ids[j] for j in np.random.default_rng(0).choice(len(ids), 400, replace=False)]
        assert self_query_misses(s, sample) == 0  # as recovered: linked nodes from the snapshot, the rest exact
        s.flush_index()
        assert self_query_misses(s, sample) == 0
        assert s._state.index.check_integrity() == []


LINKED_CHILD = r"""
import os, signal, sys, time
import numpy as np
import vecstore_ref as vs
path, how = sys.argv[1], sys.argv[2]
from vecstore_ref.checkpoint import GRAPH_CHECKPOINT_MIN_NODES
N = 2000 + GRAPH_CHECKPOINT_MIN_NODES + 200
s = vs.VecStore.open(path, dim=16, metric="cosine", hnsw=vs.HNSWParams(m=8, ef_construction=64, seed=1))
x = np.random.default_rng(5).normal(size=(N, 16)).astype(np.float32)
s.upsert_many([f"a{i}" for i in range(2000)], x[:2000])
s.snapshot()  # a graph of 2,000 on disk; then more linked after it (past GRAPH_CHECKPOINT_MIN_NODES)
s.upsert_many([f"a{i}" for i in range(2000, N)], x[2000:])
if how == "flush_index":
    s.flush_index()
else:  # the background linker: its graph is saved once it is idle (the checkpoint thread looks every 5 s)
    deadline = time.monotonic() + 120
    while s.stats().unindexed or s._linked_since_checkpoint():
        assert time.monotonic() < deadline, s.stats()
        time.sleep(0.05)
print("LINKED", s.stats().unindexed, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["flush_index", "background"])
def test_vectors_linked_before_a_kill9_are_not_linked_again(tmp_path, how):
    """SPEC 13: a vector linked before a crash is not linked again at the next open (``unindexed`` 0), whether
    ``flush_index()`` linked it or the background linker did; the recovered graph answers as well as before."""
    path = str(tmp_path / "s")
    child = subprocess.run([sys.executable, "-c", LINKED_CHILD, path, how], capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["LINKED", "0"], (child.stdout, child.stderr)
    with vs.VecStore.open(path, hnsw=PARAMS) as s:
        from vecstore_ref.checkpoint import GRAPH_CHECKPOINT_MIN_NODES

        n = 2000 + GRAPH_CHECKPOINT_MIN_NODES + 200
        assert len(s) == n
        assert s.stats().unindexed == 0
        assert s._state.index.check_integrity() == []
        sample = [f"a{i}" for i in range(0, n, 50)]
        assert self_query_misses(s, sample) == 0


UNLINKED_SNAPSHOT_CHILD = r"""
import sys, time
import numpy as np
import vecstore_ref as vs
s = vs.VecStore.open(sys.argv[1], dim=16, metric="euclidean", durability="none",
                     hnsw=vs.HNSWParams(m=8, ef_construction=64, seed=0))
s.set_checkpoint_config(vs.CheckpointConfig(min_log_bytes=1, min_log_fraction=0.0))
s.upsert_many([f"a{i}" for i in range(400)], np.random.default_rng(0).normal(size=(400, 16)))
deadline = time.monotonic() + 60  # an automatic checkpoint, which saves what is not linked yet as unlinked
while s.stats().last_checkpoint_at is None:
    assert time.monotonic() < deadline
    time.sleep(0.001)
s.set_checkpoint_config(vs.CheckpointConfig(enabled=False))
for j in range(8 * 400):  # a log to replay after the snapshot, no new vectors (the linker works meanwhile)
    s.update_metadata(f"a{j % 400}", {"n": j})
print("ACK", flush=True)
time.sleep(60)
"""


def test_what_an_open_links_while_recovering_is_saved_by_the_next_close(tmp_path):
    """After a crash, the open queues the vectors its snapshot saved unlinked, and the linker may link them before
    the open returns; ``close()`` must still checkpoint them (it used to count them as saved), or every later
    open links them again."""
    path = str(tmp_path / "s")
    child = subprocess.Popen([sys.executable, "-c", UNLINKED_SNAPSHOT_CHILD, path], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ACK"
    finally:
        child.kill()
        child.wait(timeout=30)
    s = vs.VecStore.open(path)
    assert s.recovery_report.records_replayed > 0
    deadline = time.monotonic() + 60
    while s.stats().unindexed:  # the background linker finishes (flush_index() would checkpoint by itself)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    s.close()
    with vs.VecStore.open(path) as s:
        assert s.recovery_report.records_replayed == 0
        assert s.stats().unindexed == 0 and s._state.index.linked_count == 0
        assert len(s) == 400 and self_query_misses(s, [f"a{i}" for i in range(0, 400, 7)]) == 0


AUTO_CHILD = r"""
import sys
import numpy as np
import vecstore_ref as vs
path = sys.argv[1]
s = vs.VecStore.open(path, dim=8, metric="euclidean")
s.set_checkpoint_config(vs.CheckpointConfig(min_log_bytes=2000, min_log_fraction=0.0))
rng = np.random.default_rng(1)
for i in range(400):
    s.upsert(f"r{i}", rng.normal(size=8).astype(np.float32), {"i": i})
    if i % 7 == 3:
        s.delete(f"r{i - 1}")
    print(f"ACK {i}", flush=True)
s.close()
"""

CHECKPOINT_POINTS = ["snapshot.log_rotated", "snapshot.tmp_written", "snapshot.tmp_fsynced", "snapshot.renamed",
                     "snapshot.dir_fsynced", "snapshot.manifest_swapped", "snapshot.old_files_unlinked",
                     "manifest.renamed", "segment.created"]


@pytest.mark.parametrize("point", CHECKPOINT_POINTS)
@pytest.mark.parametrize("hit", [1, 3])
def test_kill9_inside_an_automatic_checkpoint_loses_nothing(tmp_path, point, hit):
    """The checkpoint thread dies at each step of its checkpoint (writes go on meanwhile): every acknowledged
    write is there after the reopen, and the store opens to a sound graph."""
    path = str(tmp_path / "s")
    env = dict(os.environ, VECSTORE_CRASH_AT=f"{point}:{hit}")
    out = subprocess.run([sys.executable, "-c", AUTO_CHILD, path], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode in (0, -9), out.stderr[-2000:]
    acked = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("ACK ")]
    n = max(acked) + 1 if acked else 0
    rng = np.random.default_rng(1)
    want, pending, may_go = {}, set(), set()
    for i in range(400):
        v = rng.normal(size=8).astype(np.float32)
        if i < n:
            want[f"r{i}"] = v
            if i % 7 == 3:
                want.pop(f"r{i - 1}", None)
        elif i == n:  # the iteration in flight: its upsert, and the delete after it, may or may not be there
            pending = {f"r{i}"}
            if i % 7 == 3:
                may_go = {f"r{i - 1}"}
    with vs.VecStore.open(path) as s:
        got = set(s.ids())
        assert set(want) - may_go <= got <= set(want) | pending
        for id_, v in want.items():
            if id_ in got:
                assert s.get(id_).vector.tobytes() == v.tobytes()
                assert s.get(id_).metadata == {"i": int(id_[1:])}
        assert s.verify().ok
        assert s._state.index is None or s._state.index.check_integrity() == []  # (killed while creating: empty)
        for id_, v in list(want.items())[::25]:
            assert id_ not in got or s.query(v, k=1)[0].id == id_


def test_maintenance_reclaims_old_versions_of_an_overwrite_only_store(tmp_path):
    rng = np.random.default_rng(9)
    with vs.VecStore.open(tmp_path / "s", dim=4, index="flat", durability="none") as s:
        s.set_compaction_config(vs.CompactionConfig(min_deleted_records=5))
        for _ in range(3):
            s.upsert_many([f"r{i}" for i in range(10)], rng.normal(size=(10, 4)).astype(np.float32))
        assert s.stats().superseded == 20 and s.deleted_count() == 0
        assert not s.maybe_compact().triggered  # it counts records (SPEC section 5)
        res = vs.Maintenance(s, interval_s=3600).run_once()
        assert res.triggered and res.removed_count == 0 and "old versions" in res.reason
        assert s.stats().superseded == 0 and s.stats().slots == 10 and len(s) == 10


def test_metadata_changed_while_a_checkpoint_is_written_survives_a_crash(tmp_path, monkeypatch):
    """Metadata changed while a checkpoint's file is being written is in the log after the snapshot: after a crash
    the record and the filter columns both show it."""
    import threading

    from vecstore_ref import checkpoint as ckpt

    writing, release = threading.Event(), threading.Event()
    real = ckpt.write_snapshot

    def slow_write(*args, **kw):
        writing.set()
        assert release.wait(60)
        return real(*args, **kw)

    monkeypatch.setattr(ckpt, "write_snapshot", slow_write)
    path = tmp_path / "s"
    s = vs.VecStore.open(path, dim=2, index="flat")
    s.upsert_many([f"r{i}" for i in range(10)], np.eye(2, dtype=np.float32)[[i % 2 for i in range(10)]],
                  [{"g": 1} for _ in range(10)])
    t = threading.Thread(target=s.snapshot)
    t.start()
    assert writing.wait(60)
    s.update_metadata("r3", {"g": 2})  # after the capture, before the file is written
    release.set()
    t.join(60)
    # what a crash right now would leave: the snapshot, then the log after it
    from test_stateful_checkpoints import abandon

    abandon(s)
    with vs.VecStore.open(path) as s2:
        assert s2.get("r3").metadata == {"g": 2}
        assert [h.id for h in s2.query([1, 0], k=10, filter="g = 2")] == ["r3"]
        assert len(s2.query([1, 0], k=10, filter="g = 1")) == 9


def test_automatic_checkpoints_while_a_writer_links_its_own_backlog_finish(tmp_path):
    """A write that finds too many vectors waiting links the excess itself, under the write lock; an automatic
    checkpoint pausing the linker meanwhile must not leave the two waiting for each other."""
    import threading

    rng = np.random.default_rng(9)
    x = rng.normal(size=(6000, 8)).astype(np.float32)
    s = vs.VecStore.open(tmp_path / "s", dim=8, hnsw=PARAMS)
    s._state.index.max_unlinked = 50  # every bulk write below links most of itself
    s.set_checkpoint_config(vs.CheckpointConfig(min_log_bytes=0, min_log_fraction=0.0))  # checkpoint at once
    done = []

    def load():
        for a in range(0, 6000, 300):
            s.upsert_many([f"d{i}" for i in range(a, a + 300)], x[a:a + 300])
        done.append(True)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(timeout=60)
    assert done, "the bulk load and the checkpoint thread wait for each other"
    s.close()
    with vs.VecStore.open(tmp_path / "s") as s:
        assert len(s) == 6000 and s.query(x[4321], k=1)[0].id == "d4321"


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("index", ["hnsw", "flat"])
@pytest.mark.parametrize("second", ["upsert", "delete"])
def test_a_batch_that_writes_one_id_twice_leaves_a_store_that_reopens(tmp_path, metric, index, second):
    """The batch's first write of the id leaves a free, zeroed slot in the snapshot; a free slot holds no record,
    so the cosine rule for a record's direction does not apply to it (it made the store unopenable)."""
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=3, metric=metric, index=index) as s:
        s.upsert("a", [1, 0, 0])
        then = vs.Upsert("b", [0, 0, 1]) if second == "upsert" else vs.Delete("b")
        assert s.batch_execute([vs.Upsert("b", [0, 1, 0]), then]).failed == 0
        s.snapshot()
    with vs.VecStore.open(path) as s:
        assert s.verify().ok
        expected = {"a", "b"} if second == "upsert" else {"a"}
        assert set(s) == expected
        if second == "upsert":
            assert s.get("b").vector.tolist() == [0, 0, 1]
        assert [h.id for h in s.query([1, 0, 0], k=1)] == ["a"]


def test_a_store_never_closed_is_closed_at_exit_without_hanging(tmp_path):
    """A script that opens a store at module level and ends without close(): the process exits (it hung in
    interpreter shutdown, where __del__ waited for a lock a frozen background thread held), and the store was
    closed cleanly (the graph was saved: the next open links nothing)."""
    # (the script waits for the background linker, so that what close() at exit must save does not depend on how
    # fast the machine is: close() itself does not wait for vectors still queued)
    script = ("import sys, time, numpy as np, vecstore_ref as vs\n"
              "store = vs.VecStore.open(sys.argv[1], dim=4)\n"
              "store.upsert_many([f'r{i}' for i in range(300)], np.random.default_rng(0).normal(size=(300, 4)))\n"
              "print(store.query([1, 0, 0, 0], k=1)[0].id)\n"
              "while store.stats().unindexed:\n"
              "    time.sleep(0.01)\n")
    path = str(tmp_path / "s")
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    with vs.VecStore.open(path) as s:
        assert len(s) == 300 and s.stats().unindexed == 0


def test_snapshot_and_flush_index_write_each_snapshot_once(tmp_path, monkeypatch):
    """snapshot() links first and checkpoints once (flush_index's own checkpoint would write it twice);
    flush_index() with nothing new linked writes nothing; close() after it has nothing left to save."""
    import vecstore_ref.checkpoint as checkpoint

    written = []
    real = checkpoint.write_snapshot
    monkeypatch.setattr(checkpoint, "write_snapshot", lambda *a, **k: written.append(1) or real(*a, **k))
    rng = np.random.default_rng(0)
    s = vs.VecStore.open(tmp_path / "s", dim=8, hnsw=PARAMS)
    s.upsert_many([f"a{i}" for i in range(2000)], rng.normal(size=(2000, 8)))
    s.snapshot()
    assert len(written) == 1
    s.upsert_many([f"b{i}" for i in range(50)], rng.normal(size=(50, 8)))
    assert s.flush_index() == 50 and len(written) == 2
    assert s.flush_index() == 0 and len(written) == 2
    s.close()
    assert len(written) == 2


def test_a_quiet_store_saves_what_the_background_linker_linked_once_relinking_costs_more_than_the_snapshot(
        tmp_path):
    """Below the eighth-of-the-graph rule, a store with no write for `GRAPH_CHECKPOINT_QUIET_S` saves its graph if
    relinking it after a crash would take longer than writing the snapshot (8,000 small vectors linked after a
    checkpoint were all linked again after a kill -9)."""
    from vecstore_ref.checkpoint import GRAPH_CHECKPOINT_QUIET_S

    with vs.VecStore.open(tmp_path / "s", dim=16, hnsw=vs.HNSWParams(m=8, ef_construction=32, seed=0)) as s:
        s.upsert_many([f"a{i}" for i in range(3000)], np.random.default_rng(0).normal(size=(3000, 16)))
        deadline = time.monotonic() + 120
        while s.stats().unindexed:  # the background linker (flush_index() would checkpoint by itself)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert 0 < s._linked_since_checkpoint() < 16_384
        s._seq_seen, s._seq_seen_at = s._last_seq, time.monotonic()
        assert not s._graph_checkpoint_due()  # just written: not quiet yet
        s._seq_seen_at = time.monotonic() - GRAPH_CHECKPOINT_QUIET_S - 1
        assert s._graph_checkpoint_due()  # quiet, and 3,000 relinks cost more than a 3,000-vector snapshot
        s._snapshot_bytes = 10**12  # a snapshot that would take far longer to write than the relinking
        assert not s._graph_checkpoint_due()
        s._snapshot_bytes = 0
        s.upsert("b", np.ones(16))  # a write: quiet again only after it
        assert not s._graph_checkpoint_due()
