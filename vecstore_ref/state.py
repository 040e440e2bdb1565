"""The in-memory state of a store: records by slot, the id map, visibility, metadata columns and the index.

Every change reaches the state as a list of *effects* (the payload of one log record, see
`vecstore_ref.storage.records`), applied by `StoreState.apply`. The same method serves a live write and the replay
of the log on open, so what a store holds after a crash is, by construction, what it held before.

Slots are handed out at the end of the table and never reused until compaction renumbers them. **A slot's vector
never changes**: an upsert that gives a record a new vector puts the new version in a new slot and retires the old
one. The graph therefore never holds a node whose links were made for another vector (relinking in place leaves the
neighbours of unchanged nodes pointing at vectors that moved away, which is how recall decays under updates), and
readers and checkpoints can rely on every vector, id and graph node below a slot count staying what it was. An
upsert that repeats a record's vector keeps its slot. A slot is in one of three states:

- ``FREE``: never used, hard-deleted, tombstoned by the TTL sweep, or an old version (dead, reclaimable);
- ``LIVE``: a record, visible unless its TTL has passed;
- ``SOFT``: a soft-deleted record, invisible but restorable.

Invariants: ``id_map.lookup(id) == s`` iff slot ``s`` holds ``id`` and ``state[s] != FREE``;
``id_map.n == table.n_slots``; ``n_live + n_soft + n_dead + n_superseded == n_slots`` (holes left by a batch that
wrote a record twice count as superseded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .columns import MetadataColumns, encode_row
from .errors import CorruptLogError, CorruptSnapshotError
from .ids import IdMap
from .index.base import DTYPE_SLOT, DTYPE_VEC, VectorTable
from .snapshot_checks import check_header, check_vectors
from .storage import memory

FREE = np.uint8(0)
LIVE = np.uint8(1)
SOFT = np.uint8(2)
NO_EXPIRY = np.inf  # expires_at of a record without TTL
STATE_FORMAT = 2  # the layout of the state part of a snapshot (storage-format.md, "snapshot contents")


class StoreState:
    """Records, visibility and index of one store. Not thread-safe: the store serializes writers and keeps
    readers out while a writer applies (see `vecstore_ref.rwlock`)."""

    def __init__(self, dim: int | None, metric: str, index_factory):
        self.metric = metric
        self.dim: int | None = None
        self._index_factory = index_factory  # VectorTable -> Index
        self.table: VectorTable = None  # type: ignore[assignment]  # None only until set_dim: no record before
        self.index: Any = None  # a FlatIndex or HNSWIndex, made with the table (optional methods: getattr)
        self.id_map = IdMap(self._mapped)
        self.state = np.zeros(0, dtype=np.uint8)
        self.live = np.zeros(0, dtype=bool)  # state == LIVE, kept in step for queries
        self.expires = np.zeros(0, dtype=np.float64)
        self.columns = MetadataColumns(16)
        self.n_live = 0
        self.n_soft = 0
        self.n_dead = 0  # FREE slots of deleted or expired records: reclaimable by compaction
        self.n_superseded = 0  # FREE slots of replaced versions: reclaimable too, but not "deleted records"
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

    def _mapped(self, n: int) -> np.ndarray:
        return self.state[:n] != FREE

    def _grow(self, capacity: int) -> None:
        old = self.state.shape[0]
        if capacity <= old:
            return

        def grown(arr, fill):
            out = np.full(capacity, fill, dtype=arr.dtype)
            out[:old] = arr
            return out

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
        # Tighten the lower bound to the true minimum, so the scan stops once the sweep has run. (Readers may do
        # this at the same time: each writes the same true minimum.)
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

    def counts(self, now: float) -> dict[str, int]:
        """visible, soft_deleted, expired_pending, hard_deleted_pending, deleted_count, superseded."""
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
            "superseded": self.n_superseded,
        }

    # --- effects ----------------------------------------------------------------------------------------------

    def lookup(self, id_: str) -> int:
        """The slot of a mapped id, or -1."""
        return self.id_map.lookup(id_)

    def id_of(self, slot: int) -> str:
        return self.id_map.id_at(slot)

    def apply(self, ops: list[dict], vectors: np.ndarray | None, dim: int | None, seq: int | None = None,
              rows: list | None = None) -> None:
        """Apply the effects of one log record (already validated, or read back from a CRC-checked record).

        Phase 1 walks the ops in order over the id map and flags; phase 2 writes vectors, metadata columns and the
        index in bulk, so a batch of 10k upserts costs one index pass. ``rows`` (aligned with ``ops``) are the
        metadata rows the caller already encoded (`vecstore_ref.columns.encode_row`), if any.
        """
        if dim is not None and self.dim is None:
            self.set_dim(dim)
        if len(ops) > 1 and self._insert_new(ops, vectors, rows):  # type: ignore[arg-type]  # upserts: vectors
            return
        new_rows: dict[int, int] = {}  # slot created by this record -> row of `vectors`
        md_set: dict[int, tuple] = {}  # slot -> (metadata, row text, created by this record)
        retired: list[int] = []  # slots from before this record that leave the index
        id_map = self.id_map
        for i, op in enumerate(ops):
            kind = op["op"]
            id_ = op["id"]
            slot = id_map.lookup(id_)
            if kind == "upsert":
                vec_row = op["row"]
                md = op["metadata"]
                text = rows[i] if rows is not None else encode_row(md)
                if slot >= 0 and self._same_vector(slot, vectors[vec_row],  # type: ignore[index]  # upserts: vectors
                                                   new_rows, vectors):  # type: ignore[arg-type]
                    self._unmark(slot)  # the same vector: the record keeps its slot and its place in the graph
                    self.state[slot] = LIVE
                    self.live[slot] = True
                    self.n_live += 1
                    self._set_expiry(slot, op["expires_at"])
                    md_set[slot] = (md, text, slot in new_rows)
                    continue
                if slot >= 0:
                    self._retire(slot, id_)
                    self.n_superseded += 1
                    md_set.pop(slot, None)
                    if new_rows.pop(slot, None) is None:
                        retired.append(slot)
                slot = self._allocate_one()
                id_map.append(slot, id_)
                self.state[slot] = LIVE
                self.live[slot] = True
                self.n_live += 1
                self._set_expiry(slot, op["expires_at"])
                new_rows[slot] = vec_row
                md_set[slot] = (md, text, True)
                continue
            if slot < 0:
                raise CorruptLogError("<replay>", -1, seq, f"{kind} of unknown id {id_!r}")
            if kind in ("delete", "expire"):
                self._retire(slot, id_)
                self.n_dead += 1
                md_set.pop(slot, None)
                if new_rows.pop(slot, None) is None:
                    retired.append(slot)
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
                md = op["metadata"]
                md_set[slot] = (md, rows[i] if rows is not None else encode_row(md), slot in new_rows)
            elif kind == "set_expiry":
                self._set_expiry(slot, op["expires_at"])
            else:
                raise CorruptLogError("<replay>", -1, seq, f"unknown op {kind!r}")

        if new_rows:
            slots = np.fromiter(new_rows.keys(), dtype=DTYPE_SLOT, count=len(new_rows))
            vec_rows = np.fromiter(new_rows.values(), dtype=np.int64, count=len(new_rows))
            self.table.write(slots, vectors[vec_rows])  # type: ignore[index]  # new rows: vectors
        for fresh in (True, False):
            picked = [(s, md, text) for s, (md, text, f) in md_set.items() if f is fresh]
            if picked:
                self.columns.set_many(np.array([p[0] for p in picked], dtype=np.int64), [p[1] for p in picked],
                                      [p[2] for p in picked], fresh=fresh)
        if retired and self.index is not None:
            self.index.remove(np.unique(np.asarray(retired, dtype=DTYPE_SLOT)))
        if new_rows:
            self.index.add(slots)

    def _same_vector(self, slot: int, vec: np.ndarray, new_rows: dict, vectors: np.ndarray) -> bool:
        src = vectors[new_rows[slot]] if slot in new_rows else self.table.vectors[slot]
        # Bytes, not values: -0.0 == 0.0, but `get` returns the vector as given, sign of zero included.
        return src.tobytes() == vec.tobytes()

    def _retire(self, slot: int, id_: str) -> None:
        """The record leaves ``slot`` (deleted, expired or replaced): FREE, unmapped, out of the counts."""
        self._unmark(slot)
        self._set_expiry(slot, None)
        self.state[slot] = FREE
        self.id_map.unmap(slot)

    def _insert_new(self, ops: list[dict], vectors: np.ndarray, rows: list | None) -> bool:
        """A bulk load's record: upserts of distinct ids the store does not hold, applied with array operations.

        Returns False (nothing changed) for any other record, which the general loop of `apply` handles.
        """
        if any(op["op"] != "upsert" for op in ops):
            return False
        ids = [op["id"] for op in ops]
        if not self.all_new(ids):
            return False
        metas = [op["metadata"] for op in ops]
        if rows is None:
            rows = [encode_row(md) for md in metas]
        vec_rows = np.fromiter((op["row"] for op in ops), dtype=np.int64, count=len(ops))
        expires = np.fromiter((NO_EXPIRY if op["expires_at"] is None else float(op["expires_at"]) for op in ops),
                              dtype=np.float64, count=len(ops))
        self.insert_rows(ids, vectors[vec_rows], metas, rows, expires)
        return True

    def all_new(self, ids: list[str]) -> bool:
        """Whether ``ids`` are distinct and none of them is mapped (what `insert_rows` needs)."""
        return len(set(ids)) == len(ids) and not (self.id_map.lookup_many(ids) >= 0).any()

    def insert_rows(self, ids: list[str], vectors: np.ndarray, metas: list, rows: list, expires: np.ndarray) -> None:
        """Append new records (ids distinct and not mapped, see `all_new`) with array operations: the bulk path.

        Args:
            ids: the records' ids; vectors: float32 (n, dim); metas: their metadata dicts (or None), rows the
            same as JSON (`encode_row`); expires: float64 (n,), ``inf`` for no expiry.
        """
        n = len(ids)
        slots = self._allocate(n)
        self.id_map.append_many(int(slots[0]), ids)
        self.state[slots] = LIVE
        self.live[slots] = True
        self.n_live += n
        self.expires[slots] = expires
        finite = np.isfinite(expires)
        if finite.any():
            self.n_ttl += int(finite.sum())
            self.min_expiry = min(self.min_expiry, float(expires[finite].min()))
        self.table.write(slots, vectors)
        self.columns.set_many(slots, metas, rows, fresh=True)
        self.index.add(slots)

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
        """A fresh dict (the caller may change it without changing the store)."""
        return self.columns.get(slot)

    # --- snapshots --------------------------------------------------------------------------------------------

    def capture(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The whole state as a JSON header plus named arrays, for a snapshot written *later*, while writes go on.

        Called with writers and readers kept out (a moment: nothing here is per record). Arrays that later writes
        can change (slot states, expiry times, metadata columns, deletion marks) are copied; those that only grow
        (vectors, inverse norms, ids, metadata rows) are views of stable bytes below the slot count. The graph's
        arrays are views too: the caller keeps the index's linker paused until the snapshot is written (see
        `vecstore_ref.checkpoint`).
        """
        n = self.n_slots
        header: dict = {"state_format": STATE_FORMAT, "dim": self.dim, "metric": self.metric, "n_slots": n}
        arrays: dict[str, np.ndarray] = {}
        if self.table is None:
            return header, arrays
        arrays["vectors"] = self.table.vectors[:n]
        arrays["inv_norms"] = self.table.inv_norms[:n]
        arrays["state"] = self.state[:n].copy()
        arrays["expires"] = self.expires[:n].copy()
        arrays["ids.blob"], arrays["ids.offsets"] = self.id_map.to_arrays(n)
        columns_meta, columns_arrays = self.columns.to_arrays(n)
        header["columns"] = columns_meta
        for name, arr in columns_arrays.items():
            arrays["meta." + name] = arr
        header["counts"] = {"superseded": self.n_superseded}
        index_meta, index_arrays = self.index.capture(n)
        header["index_kind"] = self.index.kind
        header["index_meta"] = index_meta
        for name, arr in index_arrays.items():
            arrays["index." + name] = arr
        return header, arrays

    def load_snapshot(self, header: dict, arrays: dict[str, np.ndarray], index_loader,
                      buffers: SnapshotBuffers | None = None) -> None:
        """Rebuild the state from a snapshot with array operations only (no work per record).

        ``index_loader(table, kind, meta, arrays, mapped, buffers)`` returns the index, or None to build it from
        the vectors. ``buffers``: the `SnapshotBuffers` the snapshot was read into, if any (its arrays are adopted
        with their room to grow). A snapshot written before the state format 2 (ids and metadata as per-slot
        JSON, no columns) is read by `_load_legacy`.
        """
        n, dim = check_header(header)
        if dim is None:
            if n:
                raise CorruptSnapshotError("snapshot has slots but no dimension")
            return
        if header.get("state_format") != STATE_FORMAT:
            return self._load_legacy(header, arrays, index_loader)
        try:
            vectors = arrays["vectors"]
            inv_norms = arrays["inv_norms"]
            state = arrays["state"]
            expires = arrays["expires"]
            ids_blob, ids_offsets = arrays["ids.blob"], arrays["ids.offsets"]
        except KeyError as exc:
            raise CorruptSnapshotError(f"snapshot lacks the array {exc}") from None
        if (vectors.shape != (n, dim) or inv_norms.shape != (n,) or state.shape != (n,) or expires.shape != (n,)
                or ids_offsets.shape != (n + 1,)):
            raise CorruptSnapshotError("snapshot arrays do not match its slot count")
        if vectors.dtype != DTYPE_VEC or inv_norms.dtype != DTYPE_VEC or state.dtype != np.uint8:
            raise CorruptSnapshotError("snapshot arrays have the wrong dtypes")
        if not np.isin(state, (FREE, LIVE, SOFT)).all():
            raise CorruptSnapshotError("snapshot holds an unknown slot state")
        check_vectors(vectors, inv_norms, self.metric, free=state == FREE)
        self.dim = dim
        full_v = buffers.full(vectors) if buffers is not None else None
        full_i = buffers.full(inv_norms) if buffers is not None else None
        if full_v is None or full_i is None:
            full_v, full_i = _room_for(vectors, n, 0.0), _room_for(inv_norms, n, 1.0)
        self.table = VectorTable.adopt(dim, self.metric, full_v, full_i, n)
        self.index = self._index_factory(self.table)
        self.state = _with_room(state, self.table.capacity, FREE)
        self.live = self.state == LIVE
        self.expires = _with_room(np.where(state != FREE, expires, NO_EXPIRY), self.table.capacity, NO_EXPIRY)
        self.n_live = int(np.count_nonzero(self.live))
        self.n_soft = int(np.count_nonzero(state == SOFT))
        counts = header.get("counts") or {}  # a dict: check_header
        superseded = counts.get("superseded", 0)
        if type(superseded) is not int or not 0 <= superseded <= n - self.n_live - self.n_soft:
            raise CorruptSnapshotError("snapshot counts are inconsistent")
        self.n_superseded = superseded
        self.n_dead = n - self.n_live - self.n_soft - superseded
        finite = np.isfinite(self.expires[:n])
        self.n_ttl = int(np.count_nonzero(finite))
        self.min_expiry = float(self.expires[:n][finite].min()) if self.n_ttl else NO_EXPIRY
        self.id_map = IdMap.from_arrays(ids_blob, ids_offsets, self._mapped)
        columns_arrays = {k[len("meta."):]: v for k, v in arrays.items() if k.startswith("meta.")}
        self.columns = MetadataColumns.from_arrays(header.get("columns"), columns_arrays)  # type: ignore[arg-type]
        if self.columns.capacity < n:
            raise CorruptSnapshotError("snapshot metadata does not cover its slots")
        self.columns.reserve(self.table.capacity)
        index_arrays = {k[len("index."):]: v for k, v in arrays.items() if k.startswith("index.")}
        index_buffers = {}
        if buffers is not None:
            index_buffers = {name: buffers.full(arr) for name, arr in index_arrays.items()}
        mapped = state != FREE
        index = index_loader(self.table, header.get("index_kind"), header.get("index_meta") or {}, index_arrays,
                             mapped, index_buffers)
        if index is None:
            if mapped.any():
                self.index.add(np.flatnonzero(mapped).astype(DTYPE_SLOT))
        else:
            self.index = index

    def _load_legacy(self, header: dict, arrays: dict[str, np.ndarray], index_loader) -> None:
        """Snapshots of format 1: ids and metadata JSON per slot (``ids.*``, ``meta.blob/offsets``), no inverse
        norms and no columns. Decoded record by record, once; the next checkpoint writes format 2."""
        import json

        from .storage.snapshot import unpack_strings

        n, dim = check_header(header)
        try:
            vectors = arrays["vectors"]
            state = arrays["state"]
            expires = arrays["expires"]
            ids = unpack_strings(arrays["ids.blob"], arrays["ids.offsets"])
            metas = unpack_strings(arrays["meta.blob"], arrays["meta.offsets"])
        except KeyError as exc:
            raise CorruptSnapshotError(f"snapshot lacks the array {exc}") from None
        if vectors.shape != (n, dim) or state.shape != (n,) or expires.shape != (n,) or len(ids) != n or len(metas) != n:
            raise CorruptSnapshotError("snapshot arrays do not match its slot count")
        if not np.isin(state, (FREE, LIVE, SOFT)).all():
            raise CorruptSnapshotError("snapshot holds an unknown slot state")
        if vectors.dtype.kind != "f":
            raise CorruptSnapshotError("snapshot vectors have the wrong dtype")
        with np.errstate(over="ignore"):
            check_vectors(vectors.astype(DTYPE_VEC), None, self.metric, free=state == FREE)
        self.set_dim(dim, capacity=max(1024, n))  # type: ignore[arg-type]  # slots: a dim (load_snapshot)
        self._allocate(n)
        mapped = np.flatnonzero(state != FREE)
        self.table.vectors[:n] = vectors
        self.table.write(mapped.astype(DTYPE_SLOT), vectors[mapped])
        self.id_map.append_many(0, ids, mapped=False)
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
            mds = [json.loads(metas[s]) for s in mapped.tolist()]
        except (ValueError, TypeError, RecursionError) as exc:
            raise CorruptSnapshotError(f"snapshot metadata does not parse: {exc}") from None
        if any(not ids[s] for s in mapped.tolist()):
            raise CorruptSnapshotError("a snapshot slot has an empty id")
        if len(set(self.id_map.array()[mapped].tolist())) != mapped.size:
            raise CorruptSnapshotError("snapshot slots repeat an id")
        if mapped.size:
            self.columns.set_many(mapped, mds, fresh=True)
        index_arrays = {k[len("index."):]: v for k, v in arrays.items() if k.startswith("index.")}
        index = index_loader(self.table, header.get("index_kind"), header.get("index_meta") or {}, index_arrays,
                             state != FREE, {})
        if index is None:
            if mapped.size:
                self.index.add(mapped.astype(DTYPE_SLOT))
        else:
            self.index = index

    # --- compaction -------------------------------------------------------------------------------------------

    def compacted(self, now: float) -> tuple[StoreState, int]:
        """A new state holding only the visible records, renumbered in slot order, with a fresh index (its vectors
        queued for linking).

        Returns the new state and the number of records removed for good (soft-deleted, expired, hard-deleted;
        replaced versions are dropped too but are not records, so they are not counted).
        """
        n = self.n_slots
        new = StoreState(self.dim, self.metric, self._index_factory)
        if self.table is None:
            return new, 0
        keep = np.flatnonzero(self.live[:n] & (self.expires[:n] > now)).astype(DTYPE_SLOT)
        removed = n - keep.size - self.n_superseded
        new.set_dim(self.dim, capacity=max(1024, keep.size))  # type: ignore[arg-type]  # a table: a dim
        if keep.size:
            slots = new._allocate(keep.size)
            new.table.write(slots, self.table.vectors[keep])
            new.id_map = self.id_map.take(keep, new._mapped)
            new.state[: keep.size] = LIVE
            new.live[: keep.size] = True
            new.expires[: keep.size] = self.expires[keep]
            new.n_live = int(keep.size)
            finite = np.isfinite(new.expires[: keep.size])
            new.n_ttl = int(finite.sum())
            new.min_expiry = float(new.expires[: keep.size][finite].min()) if new.n_ttl else NO_EXPIRY
            new.columns = self.columns.take(keep)
            new.columns.reserve(new.table.capacity)
            new.index.add(slots)
        return new, int(removed)


class SnapshotBuffers:
    """Where the snapshot reader puts the big arrays: buffers with room to grow, so that each is read once, in
    place, and adopted by the table and the graph (``read_snapshot(..., destination=buffers)``)."""

    FILLS = {"vectors": 0.0, "inv_norms": 1.0, "index.levels": -1, "index.links0": None, "index.up_offset": -1,
             "index.deleted": 0}

    def __init__(self) -> None:
        self._full: list[np.ndarray] = []

    @staticmethod
    def capacity_for(n: int) -> int:
        return max(1024, n + n // 2)

    def __call__(self, name: str, dtype: np.dtype, shape: tuple) -> np.ndarray | None:
        if name not in self.FILLS or not shape:
            return None
        fill = self.FILLS[name]  # None: rows outside the graph are never read (index/hnsw.py)
        full_shape = (self.capacity_for(shape[0]),) + tuple(shape[1:])
        buf = memory.buffer(full_shape, dtype, fill=fill, ready_rows=shape[0])  # the room's pages cost nothing
        self._full.append(buf)
        return buf[: shape[0]]

    def full(self, view: np.ndarray) -> np.ndarray | None:
        """The buffer ``view`` was read into (with its room), or None."""
        for buf in self._full:
            if buf.shape[1:] == view.shape[1:] and buf.dtype == view.dtype and np.shares_memory(buf, view):
                return buf
        return None


def _room_for(arr: np.ndarray, n: int, fill) -> np.ndarray:
    out = np.full((SnapshotBuffers.capacity_for(n),) + arr.shape[1:], fill, dtype=arr.dtype)
    out[:n] = arr
    return out


def _with_room(arr: np.ndarray, capacity: int, fill) -> np.ndarray:
    out = np.full(capacity, fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def copy_metadata(md: dict) -> dict:
    """A copy a caller may change without changing the store (values are scalars or lists of scalars)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in md.items()}
