"""Hypothesis state machine: namespaces and backups against a plain-dict model (SPEC sections 7 and 11).

Rules: create a namespace (with or without a vector quota), write (upsert, a small upsert_many, delete, soft
delete, restore a record), back up, restore a backup, delete a backup, export a backup as a tar archive and import
it into any namespace, delete a namespace, and reopen the manager. The model is a dict per namespace plus, per
backup, a frozen copy of that dict. Invariants after every step (numbered as in docs/testing.md):

- N1: the namespaces listed equal the model's;
- N2: each namespace's records equal the model's: ids, vectors byte for byte, metadata, soft-deleted flags
  (SPEC section 11, invariants 1 and 9);
- N3: every restore gives the model's state at that backup (SPEC section 11, invariant 8), also after an
  export/import round trip;
- N4: the backups listed equal the model's: names and counts, newest first;
- N5: a quota is never exceeded: a write or a restore that would pass it raises QuotaExceededError and changes
  nothing.

Run it longer with ``--hypothesis-profile thorough`` (profiles in tests/conftest.py; see docs/testing.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import hypothesis.strategies as st
import numpy as np
from conftest import examples
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import vecstore_ref as vs

DIM = 2
NAMESPACES = st.sampled_from(["alpha", "beta", "gamma"])
BACKUP_NAMES = st.sampled_from(["b1", "b2", "nightly", "v1.0"])
IDS = st.sampled_from([f"r{i}" for i in range(8)])
VECTORS = st.tuples(st.integers(1, 3), st.integers(-3, 3)).map(list)  # never the zero vector
METADATA = st.one_of(st.none(), st.fixed_dictionaries({"g": st.integers(0, 2)}, optional={"s": st.sampled_from(
    ["a", "b"])}))
QUOTAS = st.sampled_from([None, None, 2, 4])


@dataclass
class Rec:
    vector: bytes  # float32 bytes, compared exactly
    metadata: dict | None
    soft: bool = False


@dataclass
class NsModel:
    max_vectors: int | None
    records: dict[str, Rec] = field(default_factory=dict)
    backups: dict[str, dict[str, Rec]] = field(default_factory=dict)  # name -> the records at backup time
    backup_order: list[str] = field(default_factory=list)  # oldest first

    def held(self, records: dict[str, Rec] | None = None) -> int:
        return len(self.records if records is None else records)  # visible and soft-deleted alike

    def allows(self, held: int) -> bool:
        return self.max_vectors is None or held <= self.max_vectors


def _copy(records: dict[str, Rec]) -> dict[str, Rec]:
    return {k: Rec(r.vector, None if r.metadata is None else dict(r.metadata), r.soft) for k, r in records.items()}


def _vec(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


class NamespaceMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="vs-ns-sm-")
        self.root = os.path.join(self.dir, "root")
        self.mgr = vs.NamespaceManager(self.root)
        self.model: dict[str, NsModel] = {}
        self.archives = 0

    def teardown(self):
        self.mgr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def store(self, ns: str) -> vs.VecStore:
        return self.mgr.get_namespace(ns)

    # --- namespaces -----------------------------------------------------------------------------------------------

    @initialize(max_vectors=QUOTAS)
    def two_namespaces(self, max_vectors):
        """Start with "alpha", without a quota, and "beta", perhaps with one: backups move between them."""
        self.create("alpha", None)
        self.create("beta", max_vectors)

    @rule(ns=NAMESPACES, max_vectors=QUOTAS)
    def create(self, ns, max_vectors):
        if ns in self.model:
            try:
                self.mgr.create_namespace(ns, dim=DIM)
            except vs.AlreadyExistsError:
                return
            raise AssertionError(f"create_namespace({ns!r}) twice did not raise")
        self.mgr.create_namespace(ns, quotas=vs.Quotas(max_vectors=max_vectors), dim=DIM, metric="euclidean",
                                  index="flat", durability="none")
        self.model[ns] = NsModel(max_vectors)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_namespace(self, data):
        ns = data.draw(st.sampled_from(sorted(self.model)))
        self.mgr.delete_namespace(ns)
        del self.model[ns]

    @rule()
    def reopen(self):
        self.mgr.close()
        self.mgr = vs.NamespaceManager(self.root)

    # --- writes ---------------------------------------------------------------------------------------------------

    def _write(self, ns: str, new_records: dict[str, Rec], call) -> None:
        """Run ``call``; it must succeed exactly when the model's quota allows ``new_records``."""
        m = self.model[ns]
        if m.allows(m.held(new_records)):
            call()
            m.records = new_records
        else:
            try:
                call()
            except vs.QuotaExceededError:
                return
            raise AssertionError(f"a write past the quota of {m.max_vectors} in {ns!r} did not raise")

    @precondition(lambda self: self.model)
    @rule(data=st.data(), id_=IDS, vector=VECTORS, metadata=METADATA)
    def upsert(self, data, id_, vector, metadata):
        ns = data.draw(st.sampled_from(sorted(self.model)))
        new = _copy(self.model[ns].records)
        new[id_] = Rec(_vec(vector).tobytes(), metadata)
        self._write(ns, new, lambda: self.store(ns).upsert(id_, vector, metadata))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), ids=st.lists(IDS, min_size=1, max_size=4, unique=True), vector=VECTORS)
    def upsert_many(self, data, ids, vector):
        ns = data.draw(st.sampled_from(sorted(self.model)))
        new = _copy(self.model[ns].records)
        for i, id_ in enumerate(ids):
            new[id_] = Rec(_vec([vector[0] + i, vector[1]]).tobytes(), {"g": i})
        self._write(ns, new, lambda: self.store(ns).upsert_many(
            ids, [[vector[0] + i, vector[1]] for i in range(len(ids))], [{"g": i} for i in range(len(ids))]))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), id_=IDS)
    def delete(self, data, id_):
        ns = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[ns]
        if id_ in m.records:
            self.store(ns).delete(id_)
            del m.records[id_]
        else:
            try:
                self.store(ns).delete(id_)
            except vs.NotFoundError:
                return
            raise AssertionError(f"delete of a missing id {id_!r} did not raise")

    @precondition(lambda self: self.model)
    @rule(data=st.data(), id_=IDS, soft=st.booleans())
    def soft_delete_or_restore(self, data, id_, soft):
        ns = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[ns]
        call = self.store(ns).soft_delete if soft else self.store(ns).restore
        if id_ not in m.records:
            try:
                changed = call(id_)
            except vs.NotFoundError:
                return
            raise AssertionError(f"{call.__name__}({id_!r}) of a missing id returned {changed}")
        changed = call(id_)
        assert changed == (m.records[id_].soft != soft)
        m.records[id_].soft = soft

    # --- backups --------------------------------------------------------------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data(), name=BACKUP_NAMES)
    def backup(self, data, name):
        ns = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[ns]
        if name in m.backups:
            try:
                self.mgr.backup_namespace(ns, name)
            except vs.AlreadyExistsError:
                return
            raise AssertionError(f"a second backup {name!r} of {ns!r} did not raise")
        info = self.mgr.backup_namespace(ns, name)
        assert (info.namespace, info.name, info.count) == (ns, name, m.held())
        m.backups[name] = _copy(m.records)
        m.backup_order.append(name)

    @precondition(lambda self: any(m.backups for m in self.model.values()))
    @rule(data=st.data())
    def restore(self, data):
        ns = data.draw(st.sampled_from(sorted(n for n, m in self.model.items() if m.backups)))
        m = self.model[ns]
        name = data.draw(st.sampled_from(sorted(m.backups) + ["never-made"]))
        if name not in m.backups:
            try:
                self.mgr.restore_namespace(ns, name)
            except vs.NotFoundError:
                return
            raise AssertionError(f"restoring a missing backup {name!r} did not raise")
        saved = m.backups[name]
        if m.allows(m.held(saved)):
            self.mgr.restore_namespace(ns, name)
            m.records = _copy(saved)
            self.check_records(ns)  # N3: the restored state is the state at backup time
        else:
            try:
                self.mgr.restore_namespace(ns, name)
            except vs.QuotaExceededError:
                return
            raise AssertionError(f"restoring {len(saved)} records into {ns!r} (quota {m.max_vectors}) did not raise")

    @precondition(lambda self: any(m.backups for m in self.model.values()))
    @rule(data=st.data())
    def delete_backup(self, data):
        ns = data.draw(st.sampled_from(sorted(n for n, m in self.model.items() if m.backups)))
        m = self.model[ns]
        name = data.draw(st.sampled_from(sorted(m.backups)))
        self.mgr.delete_namespace_backup(ns, name)
        del m.backups[name]
        m.backup_order.remove(name)

    @precondition(lambda self: any(m.backups for m in self.model.values()))
    @rule(data=st.data(), new_name=BACKUP_NAMES)
    def export_import(self, data, new_name):
        src = data.draw(st.sampled_from(sorted(n for n, m in self.model.items() if m.backups)))
        name = data.draw(st.sampled_from(sorted(self.model[src].backups)))
        dst = data.draw(st.sampled_from(sorted(self.model)))
        self.archives += 1
        archive = os.path.join(self.dir, f"archive-{self.archives}.tar")
        self.mgr.export_backup(src, name, archive)
        target = self.model[dst]
        if new_name in target.backups:
            try:
                self.mgr.import_backup(dst, archive, new_name)
            except vs.AlreadyExistsError:
                return
            raise AssertionError(f"importing over the backup {new_name!r} of {dst!r} did not raise")
        info = self.mgr.import_backup(dst, archive, new_name)
        assert info.count == len(self.model[src].backups[name])
        target.backups[new_name] = _copy(self.model[src].backups[name])
        target.backup_order.append(new_name)

    # --- invariants -----------------------------------------------------------------------------------------------

    def check_records(self, ns: str) -> None:
        """N2 for one namespace."""
        store, m = self.store(ns), self.model[ns]
        visible = {i for i, r in m.records.items() if not r.soft}
        assert set(store.ids()) == visible
        assert len(store) == len(visible)
        for id_, r in m.records.items():
            got = store.get(id_, include_deleted=True)
            assert got.vector.tobytes() == r.vector, id_
            assert got.metadata == r.metadata, id_
            assert got.deleted == r.soft, id_
        stats = store.stats()
        assert (stats.visible, stats.soft_deleted) == (len(visible), len(m.records) - len(visible))

    @invariant()
    def namespaces_listed(self):  # N1
        assert self.mgr.list_namespaces() == sorted(self.model)

    @invariant()
    def records_match(self):  # N2
        for ns in self.model:
            self.check_records(ns)

    @invariant()
    def backups_listed(self):  # N4
        for ns, m in self.model.items():
            listed = self.mgr.list_namespace_backups(ns)
            assert {name: count for name, _, count in listed} == {n: len(r) for n, r in m.backups.items()}
            times = [created for _, created, _ in listed]
            assert times == sorted(times, reverse=True)
            assert all(t.tzinfo is not None and t.utcoffset().total_seconds() == 0 for t in times)

    @invariant()
    def quota_never_exceeded(self):  # N5
        for ns, m in self.model.items():
            if m.max_vectors is not None:
                s = self.store(ns)
                assert len(s) + s.stats().soft_deleted <= m.max_vectors


TestNamespaceMachine = NamespaceMachine.TestCase
TestNamespaceMachine.settings = settings(max_examples=examples(60), stateful_step_count=25, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])


def test_restore_of_an_imported_backup_past_the_quota_is_refused(tmp_path):
    """N5 for restore: a backup imported from a namespace without quota may hold more than this one allows."""
    with vs.NamespaceManager(str(tmp_path / "root")) as mgr:
        big = mgr.create_namespace("big", dim=DIM)
        small = mgr.create_namespace("small", dim=DIM, quotas=vs.Quotas(max_vectors=3))
        big.upsert_many([f"r{i}" for i in range(5)], [[1, i] for i in range(5)])
        small.upsert("only", [1, 1])
        mgr.backup_namespace("big", "all")
        mgr.export_backup("big", "all", str(tmp_path / "all.tar"))
        mgr.import_backup("small", str(tmp_path / "all.tar"), "all")
        before = sorted(os.listdir(tmp_path / "root" / "small"))
        try:
            mgr.restore_namespace("small", "all")
        except vs.QuotaExceededError as exc:
            assert "allows 3" in str(exc)
        else:
            raise AssertionError("a restore past the quota did not raise")
        assert mgr.get_namespace("small").ids() == ["only"]
        assert sorted(os.listdir(tmp_path / "root" / "small")) == before  # no staging directory left
