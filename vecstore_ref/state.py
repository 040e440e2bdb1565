"""The in-memory state of a store: records by slot, the id map, visibility, metadata columns and the index.

Every change reaches the state as a list of *effects* (the payload of one log record, see
:mod:`vecstore_ref.storage.records`), applied by :meth:`StoreState.apply`. The same method serves a live write and
the replay of the log on open, so what a store holds after a crash is, by construction, what it held before.

Slots are handed out at the end of the table and never reused until compaction renumbers them. A slot is in one
of three states:

- ``FREE``: never used, hard-deleted or tombstoned by the TTL sweep (dead, reclaimable);
- ``LIVE``: a record, visible unless its TTL has passed;
- ``SOFT``: a soft-deleted record, invisible but restorable.

Invariant: ``slot_of[id] == s`` iff ``ids[s] == id`` and ``state[s] != FREE``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .errors import CorruptLogError, CorruptSnapshotError
from .index.base import DTYPE_SLOT, VectorTable
from .metadata import MetadataColumns

FREE = np.uint8(0)
LIVE = np.uint8(1)
SOFT = np.uint8(2)
NO_EXPIRY = np.inf  # expires_at of a record without TTL


class StoreState:
    """Records, visibility and index of one store. Not thread-safe: the store serializes access."""

    def __init__(self, dim: int | None, metric: str, index_factory):
        self.metric = metric
        self.dim: int | None = None
        self._index_factory = index_factory  # VectorTable -> Index
        self.table: VectorTable | None = None
        self.index = None
        self.slot_of: dict[str, int] = {}
        self.ids = np.empty(0, dtype=object)
        self.meta = np.empty(0, dtype=object)  # dict | None by slot, as returned to users
        self.state = np.zeros(0, dtype=np.uint8)
        self.live = np.zeros(0, dtype=bool)  # state == LIVE, kept in step for queries
        self.expires = np.zeros(0, dtype=np.float64)
        self.columns = MetadataColumns(16)
        self.n_live = 0
        self.n_soft = 0
        self.n_dead = 0  # FREE slots below n_slots: reclaimable by compaction
        self.n_ttl = 0  # mapped records with a finite expires_at
        self.min_expiry = NO_EXPIRY  # a lower bound of expires_at over mapped records
        if dim is not None:
            self.set_dim(dim)

    # --- shape ------------------------------------------------------------------------------------------------

    def set_dim(self, dim: int, capacity: int = 1024) -> None:
        self.dim = int(dim)
        self.table = VectorTable(self.dim, self.metric, capacity)
        self.index = self._index_factory(self.table)
        self._grow(self.table.capacity)

    @property
    def n_slots(self) -> int:
        return 0 if self.table is None else self.table.n_slots

    def _grow(self, capacity: int) -> None:
        old = self.state.shape[0]
        if capacity <= old:
            return

        def grown(arr, fill):
            out = np.full(capacity, fill, dtype=arr.dtype)
            out[:old] = arr
            return out

        self.ids = grown(self.ids, None)
        self.meta = grown(self.meta, None)
        self.state = grown(self.state, FREE)
        self.live = grown(self.live, False)
        self.expires = grown(self.expires, NO_EXPIRY)
        self.columns.reserve(capacity)

    def _allocate(self, n: int) -> np.ndarray:
        slots = self.table.allocate(n)
        self._grow(self.table.capacity)
        return slots

    def _allocate_one(self) -> int:
        """One fresh slot; the cheap path of a batch's loop (the arrays grow only when the table is full)."""
        t = self.table
        if t.n_slots < t.capacity:
            t.n_slots += 1
            return t.n_slots - 1
        return int(self._allocate(1)[0])

    # --- visibility -------------------------------------------------------------------------------------------

    def has_expired(self, now: float) -> bool:
        """Whether any mapped record may have expired by ``now`` (cheap: no scan unless it might)."""
        return self.n_ttl > 0 and now >= self.min_expiry

    def visible_mask(self, now: float) -> np.ndarray:
        """bool (capacity,): LIVE and not expired. Returns the shared ``live`` array when nothing can have expired,
        so callers must not write to it."""
        if not self.has_expired(now):
            return self.live
        n = self.n_slots
        mask = self.live.copy()
        mask[:n] &= self.expires[:n] > now
        # Tighten the lower bound to the true minimum, so the scan stops once the sweep has run.
        held = self.expires[:n][self.state[:n] != FREE]
        self.min_expiry = float(held.min()) if held.size else NO_EXPIRY
        return mask

    def expired_slots(self, now: float) -> np.ndarray:
        """Mapped (LIVE or SOFT) slots whose time has passed, ascending."""
        n = self.n_slots
        if not self.has_expired(now):
            return np.zeros(0, dtype=DTYPE_SLOT)
        return np.flatnonzero((self.state[:n] != FREE) & (self.expires[:n] <= now)).astype(DTYPE_SLOT)

    def is_expired(self, slot: int, now: float) -> bool:
        return bool(self.expires[slot] <= now)

    def counts(self, now: float) -> dict:
        """visible, soft_deleted, expired_pending, hard_deleted_pending, deleted_count."""
        expired = self.expired_slots(now)
        n_exp_live = int((self.state[expired] == LIVE).sum()) if expired.size else 0
        n_exp_soft = expired.size - n_exp_live
        visible = self.n_live - n_exp_live
        soft = self.n_soft - n_exp_soft
        return {
            "visible": visible,
            "soft_deleted": soft,
            "expired_pending": int(expired.size),
            "hard_deleted_pending": self.n_dead,
            "deleted_count": soft + int(expired.size) + self.n_dead,
        }

    # --- effects ----------------------------------------------------------------------------------------------

    def lookup(self, id_: str) -> int:
        """The slot of a mapped id, or -1."""
        return self.slot_of.get(id_, -1)

    def apply(self, ops: list[dict], vectors: np.ndarray | None, dim: int | None, seq: int | None = None) -> None:
        """Apply the effects of one log record (already validated, or read back from a CRC-checked record).

        Phase 1 walks the ops in order over the id map and flags; phase 2 writes vectors, metadata columns and the
        index in bulk, so a batch of 10k upserts costs one index pass.
        """
        if dim is not None and self.dim is None:
            self.set_dim(dim)
        if len(ops) > 1 and self._insert_new(ops, vectors):
            return
        n_before = self.n_slots
        written: dict[int, int] = {}  # slot -> row of `vectors`
        meta_changed: set[int] = set()
        killed: list[int] = []
        for op in ops:
            kind = op["op"]
            id_ = op["id"]
            slot = self.slot_of.get(id_, -1)
            if kind == "upsert":
                if slot < 0:
                    slot = self._allocate_one()
                    self.slot_of[id_] = slot
                    self.ids[slot] = id_
                else:
                    self._unmark(slot)
                self.state[slot] = LIVE
                self.live[slot] = True
                self.n_live += 1
                self.meta[slot] = op["metadata"]
                self._set_expiry(slot, op["expires_at"])
                written[slot] = op["row"]
                meta_changed.add(slot)
                continue
            if slot < 0:
                raise CorruptLogError("<replay>", -1, seq, f"{kind} of unknown id {id_!r}")
            if kind in ("delete", "expire"):
                self._unmark(slot)
                self._set_expiry(slot, None)
                self.state[slot] = FREE
                self.ids[slot] = None
                self.meta[slot] = None
                del self.slot_of[id_]
                self.n_dead += 1
                killed.append(slot)
                written.pop(slot, None)
                meta_changed.add(slot)
            elif kind == "soft_delete":
                if self.state[slot] == LIVE:
                    self.state[slot] = SOFT
                    self.live[slot] = False
                    self.n_live -= 1
                    self.n_soft += 1
            elif kind == "restore":
                if self.state[slot] == SOFT:
                    self.state[slot] = LIVE
                    self.live[slot] = True
                    self.n_soft -= 1
                    self.n_live += 1
            elif kind == "update_metadata":
                self.meta[slot] = op["metadata"]
                meta_changed.add(slot)
            elif kind == "set_expiry":
                self._set_expiry(slot, op["expires_at"])
            else:
                raise CorruptLogError("<replay>", -1, seq, f"unknown op {kind!r}")

        if written:
            slots = np.fromiter(written.keys(), dtype=DTYPE_SLOT, count=len(written))
            rows = np.fromiter(written.values(), dtype=np.int64, count=len(written))
            order = np.argsort(slots, kind="stable")
            slots, rows = slots[order], rows[order]
            self.table.write(slots, vectors[rows])
            self.index.add(slots)
        if meta_changed:
            slots = np.fromiter(sorted(meta_changed), dtype=DTYPE_SLOT, count=len(meta_changed))
            self.columns.set_many(slots, [self.meta[s] for s in slots])
        old_killed = [s for s in killed if s < n_before or s in written]
        if old_killed and self.index is not None:
            self.index.remove(np.asarray(sorted(set(old_killed)), dtype=DTYPE_SLOT))

    def _insert_new(self, ops: list[dict], vectors: np.ndarray) -> bool:
        """A bulk load's record: upserts of distinct ids the store does not hold, applied with array operations.

        Returns False (nothing changed) for any other record, which the general loop of :meth:`apply` handles.
        """
        if any(op["op"] != "upsert" for op in ops):
            return False
        ids = [op["id"] for op in ops]
        slot_of = self.slot_of
        if len(set(ids)) != len(ids) or any(i in slot_of for i in ids):
            return False
        n = len(ops)
        slots = self._allocate(n)
        rows = np.fromiter((op["row"] for op in ops), dtype=np.int64, count=n)
        metas = [op["metadata"] for op in ops]
        slot_of.update(zip(ids, slots.tolist()))
        self.ids[slots] = ids
        self.meta[slots] = metas
        self.state[slots] = LIVE
        self.live[slots] = True
        self.n_live += n
        expires = np.fromiter((NO_EXPIRY if op["expires_at"] is None else float(op["expires_at"]) for op in ops),
                              dtype=np.float64, count=n)
        self.expires[slots] = expires
        finite = np.isfinite(expires)
        if finite.any():
            self.n_ttl += int(finite.sum())
            self.min_expiry = min(self.min_expiry, float(expires[finite].min()))
        self.table.write(slots, vectors[rows])
        self.index.add(slots)
        self.columns.set_many(slots, metas)
        return True

    def _unmark(self, slot: int) -> None:
        """Take a mapped slot out of the live/soft counts (before it changes state)."""
        st = self.state[slot]
        if st == LIVE:
            self.n_live -= 1
            self.live[slot] = False
        elif st == SOFT:
            self.n_soft -= 1

    def _set_expiry(self, slot: int, expires_at: float | None) -> None:
        had = math.isfinite(self.expires[slot])
        value = NO_EXPIRY if expires_at is None else float(expires_at)
        has = math.isfinite(value)
        self.expires[slot] = value
        self.n_ttl += int(has) - int(had)
        if has and value < self.min_expiry:
            self.min_expiry = value

    # --- reading records --------------------------------------------------------------------------------------

    def vector(self, slot: int) -> np.ndarray:
        return self.table.vectors[slot].copy()

    def metadata(self, slot: int) -> dict | None:
        md = self.meta[slot]
        return None if md is None else copy_metadata(md)

    # --- snapshots --------------------------------------------------------------------------------------------

    def to_snapshot(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The whole state as a JSON header plus named arrays (no pickle)."""
        from .storage.snapshot import pack_strings

        n = self.n_slots
        arrays: dict[str, np.ndarray] = {}
        header: dict = {"dim": self.dim, "metric": self.metric, "n_slots": n}
        if self.table is None:
            return header, arrays
        ids = ["" if i is None else i for i in self.ids[:n]]
        metas = ["" if self.state[s] == FREE else json.dumps(self.meta[s], ensure_ascii=False, allow_nan=False)
                 for s in range(n)]
        arrays["vectors"] = self.table.vectors[:n]
        arrays["state"] = self.state[:n]
        arrays["expires"] = self.expires[:n]
        arrays["ids.blob"], arrays["ids.offsets"] = pack_strings(ids)
        arrays["meta.blob"], arrays["meta.offsets"] = pack_strings(metas)
        index_meta, index_arrays = self.index.to_arrays()
        header["index_kind"] = self.index.kind
        header["index_meta"] = index_meta
        for name, arr in index_arrays.items():
            arrays["index." + name] = arr
        return header, arrays

    def load_snapshot(self, header: dict, arrays: dict[str, np.ndarray], index_loader) -> None:
        """Rebuild the state from :meth:`to_snapshot` output; ``index_loader(table, kind, meta, arrays)`` returns
        the index, or None to rebuild it from the vectors."""
        from .storage.snapshot import unpack_strings

        n = int(header.get("n_slots", 0))
        if header.get("dim") is None:
            if n:
                raise CorruptSnapshotError("snapshot has slots but no dimension")
            return
        try:
            vectors = arrays["vectors"]
            state = arrays["state"]
            expires = arrays["expires"]
            ids = unpack_strings(arrays["ids.blob"], arrays["ids.offsets"])
            metas = unpack_strings(arrays["meta.blob"], arrays["meta.offsets"])
        except KeyError as exc:
            raise CorruptSnapshotError(f"snapshot lacks the array {exc}") from None
        dim = int(header["dim"])
        if vectors.shape != (n, dim) or state.shape != (n,) or expires.shape != (n,) or len(ids) != n or len(metas) != n:
            raise CorruptSnapshotError("snapshot arrays do not match its slot count")
        if not np.isin(state, (FREE, LIVE, SOFT)).all():
            raise CorruptSnapshotError("snapshot holds an unknown slot state")
        self.set_dim(dim, capacity=max(1024, n))
        self.table.n_slots = n
        self.table.vectors[:n] = vectors
        mapped = np.flatnonzero(state != FREE)
        self.table.write(mapped.astype(DTYPE_SLOT), vectors[mapped])
        self.state[:n] = state
        self.live[:n] = state == LIVE
        self.expires[:n] = np.where(state != FREE, expires, NO_EXPIRY)
        self.n_live = int((state == LIVE).sum())
        self.n_soft = int((state == SOFT).sum())
        self.n_dead = n - self.n_live - self.n_soft
        finite = np.isfinite(self.expires[:n])
        self.n_ttl = int(finite.sum())
        self.min_expiry = float(self.expires[:n][finite].min()) if self.n_ttl else NO_EXPIRY
        try:
            for s in mapped.tolist():
                id_ = ids[s]
                if not id_ or id_ in self.slot_of:
                    raise CorruptSnapshotError(f"snapshot slot {s} has an empty or repeated id")
                self.slot_of[id_] = s
                self.ids[s] = id_
                self.meta[s] = json.loads(metas[s])
        except (ValueError, TypeError) as exc:
            raise CorruptSnapshotError(f"snapshot metadata does not parse: {exc}") from None
        if mapped.size:
            self.columns.set_many(mapped.astype(DTYPE_SLOT), [self.meta[s] for s in mapped.tolist()])
        index_arrays = {k[len("index."):]: v for k, v in arrays.items() if k.startswith("index.")}
        index = index_loader(self.table, header.get("index_kind"), header.get("index_meta") or {}, index_arrays)
        if index is None:
            live_or_soft = mapped.astype(DTYPE_SLOT)
            if live_or_soft.size:
                self.index.add(live_or_soft)
        else:
            self.index = index

    # --- compaction -------------------------------------------------------------------------------------------

    def compacted(self, now: float) -> tuple[StoreState, int]:
        """A new state holding only the visible records, renumbered in slot order, with a freshly built index.

        Returns the new state and the number of records removed for good (soft-deleted, expired, hard-deleted).
        """
        n = self.n_slots
        new = StoreState(self.dim, self.metric, self._index_factory)
        if self.table is None:
            return new, 0
        keep = np.flatnonzero(self.live[:n] & (self.expires[:n] > now)).astype(DTYPE_SLOT)
        removed = n - keep.size
        new.set_dim(self.dim, capacity=max(1024, keep.size))
        if keep.size:
            slots = new._allocate(keep.size)
            new.table.write(slots, self.table.vectors[keep])
            new.ids[: keep.size] = self.ids[keep]
            new.meta[: keep.size] = self.meta[keep]
            new.state[: keep.size] = LIVE
            new.live[: keep.size] = True
            new.expires[: keep.size] = self.expires[keep]
            new.slot_of = {id_: i for i, id_ in enumerate(new.ids[: keep.size].tolist())}
            new.n_live = int(keep.size)
            finite = np.isfinite(new.expires[: keep.size])
            new.n_ttl = int(finite.sum())
            new.min_expiry = float(new.expires[: keep.size][finite].min()) if new.n_ttl else NO_EXPIRY
            new.columns.set_many(slots, list(new.meta[: keep.size]))
            new.index.add(slots)
        return new, int(removed)


def copy_metadata(md: dict) -> dict:
    """A copy a caller may change without changing the store (values are scalars or lists of scalars)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in md.items()}
