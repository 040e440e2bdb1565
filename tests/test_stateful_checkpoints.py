"""A state machine for checkpoints: writes, snapshots, automatic checkpoints, checkpoints that fail part way, and
crashes and power cuts at any moment, against a dict model (SPEC sections 6, 11 and 13).

Every store here is opened with ``durability="fsync"`` over a `FaultFS`, so that a simulated power cut
(``drop_unsynced``: every byte and directory change not yet fsynced is lost) must still keep every acknowledged
write. A *crash* abandons the store without closing it, as kill -9 does (the page cache survives); a *power cut*
does the same and then drops what was not made durable. Failures are injected in the middle of a checkpoint, at
the n-th file operation of a kind; whatever happens, the store either commits the checkpoint or goes on with its
old files, and reopening gives the model's state.
"""

from __future__ import annotations

import errno
import shutil
import tempfile

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import vecstore_ref as vs
from vecstore_ref._fs import FaultFS

DIM = 4
IDS = st.sampled_from([f"r{i}" for i in range(10)])
VEC = st.lists(st.integers(-3, 3), min_size=DIM, max_size=DIM).filter(any)
META = st.one_of(st.none(), st.fixed_dictionaries({"g": st.integers(0, 2)}))


def abandon(store: vs.VecStore) -> None:
    """What kill -9 leaves: no close, no fsync, no final checkpoint; the process's files and lock just go."""
    store._stop_checkpoint_thread()
    store._closed = True
    store._flush_stop.set()
    close = getattr(store._state.index, "close", None)
    if close is not None:
        close()
    if store._writer is not None:
        store._writer.close()
    if store._dir_lock is not None:
        store._dir_lock.release()


class CheckpointMachine(RuleBasedStateMachine):
    index = "flat"

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="vs-ckpt-")
        self.path = self.dir + "/store"
        self.model: dict[str, tuple[bytes, dict | None]] = {}
        self.fs = FaultFS()
        self.store = self._open()

    def _open(self) -> vs.VecStore:
        s = vs.VecStore.open(self.path, dim=DIM, metric="euclidean", index=self.index, fs=self.fs)
        s.set_checkpoint_config(vs.CheckpointConfig(enabled=False))  # checkpoints only when a rule says so
        return s

    def teardown(self):
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _reopen(self) -> None:
        self.fs = FaultFS()
        self.store = self._open()

    # --- writes -------------------------------------------------------------------------------------------------

    @rule(id_=IDS, vec=VEC, md=META)
    def upsert(self, id_, vec, md):
        v = np.asarray(vec, dtype=np.float32)
        self.store.upsert(id_, v, md)
        self.model[id_] = (v.tobytes(), md)

    @rule(id_=IDS)
    def delete(self, id_):
        if id_ in self.model:
            self.store.delete(id_)
            del self.model[id_]

    @rule(rows=st.lists(st.tuples(IDS, VEC), min_size=1, max_size=6))
    def bulk(self, rows):
        ids = [r[0] for r in rows]
        if len(set(ids)) != len(ids):
            return
        vecs = np.asarray([r[1] for r in rows], dtype=np.float32)
        self.store.upsert_many(ids, vecs)
        for id_, v in zip(ids, vecs):
            self.model[id_] = (v.tobytes(), None)

    # --- checkpoints --------------------------------------------------------------------------------------------

    @rule()
    def snapshot(self):
        self.store.snapshot()

    @rule()
    def automatic_checkpoint(self):
        """What the checkpoint thread does when the log passed its thresholds (run here, in the test's thread)."""
        self.store._checkpoint_config = vs.CheckpointConfig(min_log_bytes=0, min_log_fraction=0.0)
        try:
            self.store._run_auto_checkpoint()
        finally:
            self.store._checkpoint_config = vs.CheckpointConfig(enabled=False)

    @rule(op=st.sampled_from(["write", "fsync", "fsync_dir", "replace", "unlink", "open"]),
          nth=st.integers(1, 6))
    def checkpoint_that_fails(self, op, nth):
        """A checkpoint whose n-th file operation of a kind fails: either the checkpoint is committed, or it
        raises a typed error and the store goes on with its old files (or, if the manifest could not be
        replaced, refuses writes until reopened)."""
        self.fs.fail(op, nth=nth, err=errno.EIO)
        try:
            self.store.snapshot()
        except (vs.StorageError, vs.ReadOnlyError):
            pass
        finally:
            self.fs.clear_faults()
        if self.store.stats().read_only:
            self.store.close()
            self._reopen()

    # --- crashes ------------------------------------------------------------------------------------------------

    @rule(op=st.sampled_from(["write", "fsync", "replace", "fsync_dir"]), nth=st.integers(1, 6),
          power=st.booleans(), mode=st.sampled_from(["truncate", "random_prefix", "zeros", "garbage"]))
    def crash_during_checkpoint(self, op, nth, power, mode):
        """The process dies at the n-th file operation of a checkpoint (the failure stands for the kill), with or
        without a power cut after it."""
        self.fs.fail(op, nth=nth, err=errno.EIO, forever=True)
        try:
            self.store.snapshot()
        except (vs.StorageError, vs.ReadOnlyError):
            pass
        abandon(self.store)
        self.fs.clear_faults()
        if power:
            self.fs.drop_unsynced(mode)
        self._reopen()

    @rule(power=st.booleans())
    def crash(self, power):
        abandon(self.store)
        if power:
            self.fs.drop_unsynced("random_prefix")
        self._reopen()

    @rule()
    def reopen(self):
        self.store.close()
        self._reopen()

    # --- the invariant ------------------------------------------------------------------------------------------

    @invariant()
    def equals_model(self):
        s = self.store
        assert set(s.ids()) == set(self.model)
        for id_, (vec, md) in self.model.items():
            rec = s.get(id_)
            assert rec.vector.tobytes() == vec and rec.metadata == md
        for id_, (vec, _) in list(self.model.items())[:3]:
            hit = s.query(np.frombuffer(vec, dtype=np.float32), k=len(self.model))
            assert id_ in {h.id for h in hit}


class HNSWCheckpointMachine(CheckpointMachine):
    index = "hnsw"


SETTINGS = settings(max_examples=40, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestCheckpointMachine = CheckpointMachine.TestCase
TestCheckpointMachine.settings = SETTINGS
TestHNSWCheckpointMachine = HNSWCheckpointMachine.TestCase
TestHNSWCheckpointMachine.settings = settings(SETTINGS, max_examples=25)
