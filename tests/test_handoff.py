"""The GIL hand-off hint between query threads (vecstore_ref.handoff): a query leaves no flag set on any path, a
flag left set by someone else only delays a query (bounded), and a forked child starts with no flags."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref.handoff import FLAGS, IN_PYTHON, current_slot

DIM = 8


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    with vs.VecStore.open(tmp_path / "s", dim=DIM, durability="none") as s:
        s.upsert_many([f"r{i}" for i in range(300)], rng.standard_normal((300, DIM)).astype(np.float32),
                      [{"g": i % 3} for i in range(300)])
        s.flush_index()
        yield s


def _queries(store):
    q = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    yield lambda: store.query(q, k=5)
    yield lambda: store.query(q, k=5, filter="g = 1")
    yield lambda: store.query(q.astype(np.float64), k=5, ef=50)
    yield lambda: store.query(vs.Query(q, k=3))
    yield lambda: store.query_batch(np.stack([q, q]), k=5)


def test_no_query_path_leaves_a_flag_set(store):
    for run in _queries(store):
        run()
        assert not IN_PYTHON.any()
    for bad in (lambda: store.query(np.full(DIM, np.nan, dtype=np.float32)),
                lambda: store.query(np.ones(DIM, dtype=np.float32), k=0),
                lambda: store.query(np.ones(DIM, dtype=np.float32), filter="g = ")):
        with pytest.raises(vs.VecStoreError):
            bad()
        assert not IN_PYTHON.any()


def test_a_query_with_a_backlog_leaves_no_flag_set(tmp_path):
    rng = np.random.default_rng(2)
    with vs.VecStore.open(tmp_path / "s", dim=DIM, durability="none") as s:
        s.upsert_many([f"r{i}" for i in range(200)], rng.standard_normal((200, DIM)).astype(np.float32))
        s.flush_index()
        s.upsert_many([f"n{i}" for i in range(50)], rng.standard_normal((50, DIM)).astype(np.float32))
        got = s.query(rng.standard_normal(DIM).astype(np.float32), k=5)  # unlinked records may be folded in
        assert len(got) == 5
        assert not IN_PYTHON.any()


def test_a_flag_left_set_by_another_thread_only_delays_a_query(store):
    """A slot that stays set (a thread stopped inside its query's Python) must not hold other queries up for
    longer than the bounded spin: the query still answers, with the same results."""
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    expected = store.query(q, k=5)
    other = (current_slot() + 1) % len(FLAGS)
    FLAGS[other] = 1
    try:
        results = []
        th = threading.Thread(target=lambda: results.extend(store.query(q, k=5) for _ in range(50)))
        th.start()
        th.join(timeout=60)
        assert not th.is_alive()
        assert all(r == expected for r in results) and len(results) == 50
    finally:
        FLAGS[other] = 0


def test_threads_querying_at_once_see_the_results_of_one(store):
    qs = np.random.default_rng(4).standard_normal((40, DIM)).astype(np.float32)
    expected = [store.query(q, k=7) for q in qs]
    got: dict = {}

    def run(t):
        got[t] = [store.query(q, k=7) for q in qs for _ in range(5)][::5]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(got[t] == expected for t in range(4))
    assert not IN_PYTHON.any()


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_a_forked_child_starts_with_no_flags_set():
    slot = (current_slot() + 7) % len(FLAGS)
    FLAGS[slot] = 1
    try:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            os._exit(0 if not IN_PYTHON.any() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        FLAGS[slot] = 0


def test_a_wait_in_microseconds_becomes_rounds_measured_on_this_machine():
    from vecstore_ref.jit import load

    rounds_for = load("fanout_wait").rounds_for

    short, long = rounds_for(10.0), rounds_for(1000.0)
    assert 1 <= short < long  # longer waits are more rounds, and none is zero
    assert rounds_for(0.0) == 1
    assert 50 <= long // max(short, 1) <= 150  # the same length of round for both
