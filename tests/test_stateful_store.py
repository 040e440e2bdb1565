"""Hypothesis state machines: the store against a plain-dict model (SPEC section 11; issues 2 and 4).

Vectors come from a small integer grid so that float32 and float64 agree exactly and ties are real: the flat index
must then return exactly the model's top-k, ties broken by id. The clock is injected and jumps around.
"""

from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
import numpy as np
from conftest import FakeClock, examples
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from invariants import Model, ModelRecord, query_equals_brute_force, state_equals_model

import vecstore_ref as vs

DIM = 3
IDS = st.sampled_from([f"id{i}" for i in range(12)] + ["é", "e\u0301", "日本"])
GRID = st.lists(st.integers(-2, 2), min_size=DIM, max_size=DIM).filter(lambda v: any(v))
METADATA = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "g": st.integers(0, 3),
        "s": st.sampled_from(["a", "b", "ab"]),
        "f": st.sampled_from([0.5, 1, 2.5]),
        "t": st.lists(st.sampled_from(["x", "y", 1]), max_size=3),
        "n": st.none(),
    }),
)
TTL = st.one_of(st.none(), st.sampled_from([1.0, 5.0, 50.0]))
FILTERS = ["g = 1", "g >= 2 OR s = 'a'", "NOT s = 'ab'", "t CONTAINS 'x'", "s CONTAINS 'a' AND f < 2",
           "g IN (0, 3)", "n = null", "g NOT IN (1, 2)"]


class StoreMachine(RuleBasedStateMachine):
    metric = "euclidean"
    index = "flat"

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="vs-sm-")
        self.path = self.dir + "/store"
        self.clock = FakeClock()
        self.model = Model()
        self.store = vs.VecStore.open(self.path, dim=DIM, metric=self.metric, index=self.index,
                                      durability="none", clock=self.clock)

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def now(self):
        return self.clock.now

    # --- model transitions, shared by single calls and batches --------------------------------------------------

    def model_apply(self, op) -> bool:
        """Apply one op to the model; returns whether it succeeds (the store must agree)."""
        m, now = self.model, self.now
        if isinstance(op, vs.Upsert):
            m.records[op.id] = ModelRecord(np.asarray(op.vector, dtype=np.float32), op.metadata,
                                           None if op.ttl is None else now + op.ttl)
            return True
        if isinstance(op, vs.Delete):
            if not (m.visible(op.id, now) or (m.exists(op.id, now) and m.records[op.id].soft)):
                return False
            del m.records[op.id]
            m.dead += 1
            return True
        if isinstance(op, (vs.SoftDelete, vs.Restore)):
            if not m.exists(op.id, now):
                return False
            m.records[op.id].soft = isinstance(op, vs.SoftDelete)
            return True
        if isinstance(op, vs.UpdateMetadata):
            if not m.visible(op.id, now):
                return False
            m.records[op.id].metadata = op.metadata
            return True
        if isinstance(op, vs.SetTTL):
            if not m.visible(op.id, now):
                return False
            m.records[op.id].expires_at = None if op.ttl is None else now + op.ttl
            return True
        raise AssertionError(op)

    def single_call(self, op):
        s = self.store
        if isinstance(op, vs.Upsert):
            return s.upsert(op.id, op.vector, op.metadata, ttl=op.ttl)
        if isinstance(op, vs.Delete):
            return s.delete(op.id)
        if isinstance(op, vs.SoftDelete):
            return s.soft_delete(op.id)
        if isinstance(op, vs.Restore):
            return s.restore(op.id)
        if isinstance(op, vs.UpdateMetadata):
            return s.update_metadata(op.id, op.metadata)
        return s.set_ttl(op.id, op.ttl)

    # --- rules --------------------------------------------------------------------------------------------------

    ops = st.one_of(
        st.builds(vs.Upsert, IDS, GRID, METADATA, TTL),
        st.builds(vs.Delete, IDS),
        st.builds(vs.SoftDelete, IDS),
        st.builds(vs.Restore, IDS),
        st.builds(vs.UpdateMetadata, IDS, METADATA),
        st.builds(vs.SetTTL, IDS, TTL),
    )

    @rule(op=ops)
    def single(self, op):
        expect_ok = self.model_apply(op)
        try:
            self.single_call(op)
            ok = True
        except vs.NotFoundError:
            ok = False
        assert ok == expect_ok, op

    @rule(batch=st.lists(ops, max_size=8))
    def batch(self, batch):
        """Invariant 2: a batch equals the same ops applied one by one."""
        expected = [self.model_apply(op) for op in batch]
        result = self.store.batch_execute(batch)
        assert result.succeeded == sum(expected)
        assert result.failed == len(batch) - sum(expected)
        assert [e.index for e in result.errors] == [i for i, ok in enumerate(expected) if not ok]

    @rule(seconds=st.sampled_from([0.5, 2.0, 10.0, 100.0, -3.0]))
    def move_clock(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def expire(self):
        now = self.now
        expired = [i for i, r in self.model.records.items() if not self.model.exists(i, now)]
        assert self.store.expire_ttl_records() == len(expired)
        for i in expired:
            del self.model.records[i]
            self.model.dead += 1

    @rule()
    def compact(self):
        """Invariants 4 and 6: compaction changes nothing visible; soft-deleted records are gone for good."""
        before = {i: self.store.get(i) for i in self.store.ids()}
        removed = self.store.compact()
        assert removed == self.model.deleted_count(self.now)
        self.model.records = {i: r for i, r in self.model.records.items()
                              if self.model.visible(i, self.now)}
        self.model.dead = 0
        assert {i: self.store.get(i) for i in self.store.ids()} == before

    @rule()
    def maybe_compact(self):
        self.store.set_compaction_config(vs.CompactionConfig(True, 3, 0.5))
        d = self.model.deleted_count(self.now)
        result = self.store.maybe_compact()
        visible = len(self.model.visible_ids(self.now))
        assert result.triggered == (d > 0 and (d >= 3 or d / (visible + d) >= 0.5)), result
        if result.triggered:
            assert result.removed_count == d
            self.model.records = {i: r for i, r in self.model.records.items()
                                  if self.model.visible(i, self.now)}
            self.model.dead = 0

    @rule()
    def reopen(self):
        """Invariant 3: close + reopen gives the same state."""
        self.store.close()
        self.store = vs.VecStore.open(self.path, clock=self.clock, durability="none")

    @rule()
    def snapshot(self):
        self.store.snapshot()

    @precondition(lambda self: self.index == "flat")
    @rule(q=GRID, k=st.integers(1, 20), flt=st.one_of(st.none(), st.sampled_from(FILTERS)))
    def query(self, q, k, flt):
        predicate = None
        if flt is not None:
            predicate = vs.parse_filter(flt).matches
        query_equals_brute_force(self.store, self.model, np.asarray(q, dtype=np.float32), k, self.metric,
                                 self.now, flt, predicate)

    @precondition(lambda self: self.index == "hnsw")
    @rule(q=GRID)
    def query_recall(self, q):
        # Tiny graphs are searched exhaustively at ef=64, so recall must be perfect up to score ties.
        got = self.store.query(np.asarray(q, dtype=np.float32), k=5)
        want = self.model.brute_force(np.asarray(q, dtype=np.float32), 5, self.metric, self.now)
        assert [round(n.score, 4) for n in got] == [round(s, 4) for _, s in want]

    @invariant()
    def matches_model(self):
        state_equals_model(self.store, self.model, self.now)


class DotStoreMachine(StoreMachine):
    metric = "dot"


class HNSWStoreMachine(StoreMachine):
    metric = "euclidean"
    index = "hnsw"


SETTINGS = settings(max_examples=examples(100), stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = SETTINGS
TestDotStoreMachine = DotStoreMachine.TestCase
TestDotStoreMachine.settings = settings(SETTINGS, max_examples=examples(50))
TestHNSWStoreMachine = HNSWStoreMachine.TestCase
TestHNSWStoreMachine.settings = settings(SETTINGS, max_examples=examples(50))
