"""Scale-out: N stores behind one API, each record on the shard a stable hash of its id picks (SPEC section 12).

::

    path/
      SHARDS.json        {"format": 1, "n_shards": N, "hash": "blake2b-8"}
      shard-0000/ ...    one VecStore directory per shard

Routing is ``blake2b(id as UTF-8, 8 bytes) mod N``: the same in every process and on every machine (Python's
``hash()`` is salted per process, so it cannot be used). A single-record call goes to its shard; a batch is split
by shard, each part runs as one atomic batch on its shard, and the per-operation results are mapped back to the
caller's indexes; a query asks every shard for its top k and merges them. Every shard's top k holds every global
top-k record that lives on it, so with the flat index the merge is exact.

The fan-out runs on an executor: anything with ``submit(fn, *args) -> Future`` (``concurrent.futures``). The
default is a thread pool with one thread per shard; the store kernels release the GIL, so shards search in
parallel. ``executor="ray"`` (the ``[ray]`` extra) puts each shard in its own Ray actor, which opens the shard's
directory and holds its lock (:mod:`vecstore_ref.ray_shards`); the thread pool then waits on the actors.

Not atomic across shards: a batch that touches several shards is one atomic record *per shard*. After a crash each
shard holds all or none of its part.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from .batch import check_bulk_rows, check_ops
from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidIdTypeError,
    StorageError,
    UnsupportedFormatError,
)
from .opening import check_open_options
from .types import BatchError, BatchQueryResult, BatchResult, CompactionResult, Neighbor, VerifyReport

FORMAT_VERSION = 1
SHARDS_FILE = "SHARDS.json"
MAX_SHARDS = 4096


def shard_of(id_: str, n_shards: int) -> int:
    """The shard of ``id_``: a stable hash of its UTF-8 bytes, modulo ``n_shards``."""
    if not isinstance(id_, str):
        raise InvalidIdTypeError(f"id must be a str, got {type(id_).__name__}")
    try:
        data = id_.encode("utf-8")
    except UnicodeEncodeError:
        data = id_.encode("utf-8", "surrogatepass")  # the shard refuses the id with the precise error
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") % n_shards


class ShardedStore:
    """Records spread over ``n_shards`` :class:`~vecstore_ref.store.VecStore` directories under ``path``."""

    def __init__(self, path, n_shards: int | None = None, *, executor: Executor | str | None = None,
                 **open_options):
        import time

        from .store import VecStore

        use_ray = executor == "ray"
        if isinstance(executor, str) and not use_ray:
            raise InvalidArgumentError(f"executor must be an Executor, None or 'ray', got {executor!r}")
        if use_ray:
            executor = None
        self._clock = open_options.get("clock") or time.time

        check_open_options(open_options)  # before anything is written
        self.path = os.path.abspath(os.fspath(path))
        cfg_path = os.path.join(self.path, SHARDS_FILE)
        if os.path.exists(cfg_path):
            try:
                with open(cfg_path, "rb") as f:
                    cfg = json.loads(f.read())
            except (OSError, ValueError) as exc:
                raise StorageError(f"{cfg_path} is unreadable: {exc}") from None
            if cfg.get("format") != FORMAT_VERSION:
                raise UnsupportedFormatError(f"{cfg_path}: unknown format {cfg.get('format')!r}")
            stored = cfg.get("n_shards")
            if n_shards is not None and n_shards != stored:
                raise InvalidArgumentError(f"the store at {self.path} has {stored} shards, not {n_shards}")
            n_shards = stored
        else:
            if n_shards is None:
                n_shards = 4
            if isinstance(n_shards, bool) or not isinstance(n_shards, int):
                raise InvalidArgumentTypeError("n_shards must be an int")
            if not 1 <= n_shards <= MAX_SHARDS:
                raise InvalidArgumentError(f"n_shards must be in [1, {MAX_SHARDS}], got {n_shards}")
            os.makedirs(self.path, exist_ok=True)
            data = json.dumps({"format": FORMAT_VERSION, "n_shards": n_shards, "hash": "blake2b-8"}).encode()
            from ._fs import get_fs

            get_fs().write_atomic(cfg_path, [data])
        self.n_shards = int(n_shards)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=self.n_shards,
                                                        thread_name_prefix="vecstore-shard")
        self.shards: list = []
        try:
            for i in range(self.n_shards):
                shard_path = os.path.join(self.path, f"shard-{i:04d}")
                if use_ray:
                    from .ray_shards import RayShard

                    self.shards.append(RayShard(shard_path, open_options))
                else:
                    self.shards.append(VecStore.open(shard_path, **open_options))
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path, n_shards: int | None = None, *, executor: Executor | None = None, **open_options):
        """Open (or create, with ``n_shards``, default 4) a sharded store; ``open_options`` as for
        :meth:`VecStore.open`, given to every shard."""
        return cls(path, n_shards, executor=executor, **open_options)

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _shard(self, id_):
        return self.shards[shard_of(id_, self.n_shards)]

    def _all(self, fn, *args):
        """``fn(shard, *args)`` on every shard through the executor; results in shard order."""
        futures = [self._executor.submit(fn, s, *args) for s in self.shards]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Close every shard (and the default executor). Idempotent."""
        for s in self.shards:
            s.close()
        if self._own_executor:
            self._executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- single records ---------------------------------------------------------------------------------------

    def upsert(self, id, vector, metadata=None, *, ttl=None) -> None:
        self._shard(id).upsert(id, vector, metadata, ttl=ttl)

    def upsert_with_ttl(self, id, vector, metadata, ttl) -> None:
        self._shard(id).upsert_with_ttl(id, vector, metadata, ttl)

    def get(self, id, *, include_deleted: bool = False):
        return self._shard(id).get(id, include_deleted=include_deleted)

    def delete(self, id) -> None:
        self._shard(id).delete(id)

    def soft_delete(self, id) -> bool:
        return self._shard(id).soft_delete(id)

    def restore(self, id) -> bool:
        return self._shard(id).restore(id)

    def update_metadata(self, id, metadata) -> None:
        self._shard(id).update_metadata(id, metadata)

    def set_ttl(self, id, ttl) -> None:
        self._shard(id).set_ttl(id, ttl)

    def __contains__(self, id) -> bool:
        return isinstance(id, str) and id in self._shard(id)

    def __len__(self) -> int:
        return sum(self._all(len))

    def __iter__(self):
        return iter(self.ids())

    def ids(self) -> list[str]:
        return [i for part in self._all(lambda s: s.ids()) for i in part]

    # --- bulk writes ------------------------------------------------------------------------------------------

    def upsert_many(self, ids, vectors, metadatas=None, *, ttl=None, progress=None) -> int:
        """Split the rows by shard and load each part on its shard (in parallel); returns the rows written.

        Every row is checked first (vectors, ids, metadata, the TTL), so a bad input fails before any shard is
        written; the shards check again what they receive.
        """
        from .validation import validate_ttl, validate_vectors

        if isinstance(ids, (str, bytes)):
            raise InvalidArgumentTypeError("ids must be a sequence of str, not a single str")
        ids = list(ids)
        first = self.shards[0].stats()
        mat = validate_vectors(vectors, first.dim, first.metric)  # every check for all shards: all or nothing
        if mat.shape[0] != len(ids):
            raise InvalidArgumentError(f"{len(ids)} ids but {mat.shape[0]} vectors")
        metadatas = check_bulk_rows(ids, metadatas)
        validate_ttl(ttl, allow_none=True)
        owner = np.fromiter((shard_of(i, self.n_shards) for i in ids), dtype=np.int64, count=len(ids))
        parts = [np.flatnonzero(owner == s) for s in range(self.n_shards)]

        def load(shard, rows):
            if rows.size == 0:
                return 0
            picked = rows.tolist()
            return shard.upsert_many([ids[r] for r in picked], mat[rows], [metadatas[r] for r in picked], ttl=ttl)

        futures = [self._executor.submit(load, s, rows) for s, rows in zip(self.shards, parts)]
        done = sum(f.result() for f in futures)
        if callable(progress):
            progress(done, len(ids))
        return done

    def batch_execute(self, ops) -> BatchResult:
        """Split ``ops`` by shard (order kept within each shard), run each part as one atomic batch on its shard,
        and report every error at the caller's index."""
        import time

        t0 = time.perf_counter()
        ops = check_ops(ops)
        by_shard: list[list[int]] = [[] for _ in self.shards]
        early: list[BatchError] = []
        for i, op in enumerate(ops):
            try:
                by_shard[shard_of(op.id, self.n_shards)].append(i)
            except InvalidIdTypeError as exc:
                early.append(BatchError(i, _describe(op), str(exc), type(exc).__name__))

        def run(shard, idx):
            return shard.batch_execute([ops[i] for i in idx]) if idx else None

        futures = [self._executor.submit(run, s, idx) for s, idx in zip(self.shards, by_shard)]
        errors = list(early)
        succeeded = 0
        for idx, f in zip(by_shard, futures):
            res = f.result()
            if res is None:
                continue
            succeeded += res.succeeded
            errors += [BatchError(idx[e.index], e.operation, e.error, e.type) for e in res.errors]
        errors.sort(key=lambda e: e.index)
        return BatchResult(succeeded, len(errors), errors, (time.perf_counter() - t0) * 1e3)

    # --- queries ----------------------------------------------------------------------------------------------

    def query(self, q, k: int = 10, filter=None, ef: int | None = None) -> list[Neighbor]:
        """The global top k: every shard's top k, merged by score (ties by id)."""
        parts = self._all(lambda s: s.query(q, k=k, filter=filter, ef=ef))
        merged = [n for part in parts for n in part]
        merged.sort(key=lambda n: (-n.score, n.id))
        return merged[: _k_of(q, k)]

    def query_batch(self, vectors, k: int = 10, filter=None, ef: int | None = None) -> BatchQueryResult:
        """The same for each row of ``vectors``: the shards' result matrices merged with array operations."""
        parts = self._all(lambda s: s.query_batch(vectors, k=k, filter=filter, ef=ef))
        ids = np.concatenate([p.ids for p in parts], axis=1)
        scores = np.concatenate([p.scores for p in parts], axis=1)
        keys = np.where(ids == None, "", ids).astype(str)  # noqa: E711 - elementwise test of an object array
        by_id = np.argsort(keys, axis=1, kind="stable")
        by_score = np.argsort(-np.take_along_axis(scores, by_id, axis=1), axis=1, kind="stable")
        order = np.take_along_axis(by_id, by_score, axis=1)[:, :k]
        out_ids = np.take_along_axis(ids, order, axis=1)
        out_scores = np.take_along_axis(scores, order, axis=1)
        n_found = np.sum([p.n_found for p in parts], axis=0)
        np.minimum(n_found, k, out=n_found)
        return BatchQueryResult(out_ids, out_scores, n_found)

    # --- maintenance ------------------------------------------------------------------------------------------

    def expire_ttl_records(self) -> int:
        return sum(self._all(lambda s: s.expire_ttl_records()))

    def deleted_count(self) -> int:
        return sum(self._all(lambda s: s.deleted_count()))

    def compact(self) -> int:
        return sum(self._all(lambda s: s.compact()))

    def maybe_compact(self) -> CompactionResult:
        """Each shard decides for itself; the result sums what ran."""
        results = self._all(lambda s: s.maybe_compact())
        ran = [r for r in results if r.triggered]
        reason = f"{len(ran)} of {self.n_shards} shards compacted: " + "; ".join(
            f"shard {i}: {r.reason}" for i, r in enumerate(results))
        return CompactionResult(bool(ran), sum(r.removed_count for r in ran), max((r.duration_ms for r in ran),
                                                                                 default=0.0), reason)

    def snapshot(self) -> None:
        self._all(lambda s: s.snapshot())

    def flush_index(self) -> int:
        return sum(self._all(lambda s: s.flush_index()))

    def verify(self) -> VerifyReport:
        reports = self._all(lambda s: s.verify())
        errors = [f"shard {i}: {e}" for i, r in enumerate(reports) for e in r.errors]
        return VerifyReport(all(r.ok for r in reports), sum(r.files_checked for r in reports),
                            sum(r.records_checked for r in reports), errors)

    def stats(self) -> dict:
        """Totals over the shards, and each shard's :class:`StoreStats` under ``"shards"``."""
        per = [s.stats() for s in self.shards]
        keys = ("visible", "soft_deleted", "expired_pending", "hard_deleted_pending", "deleted_count", "slots",
                "log_bytes", "snapshot_bytes", "reclaimable_bytes", "unindexed")
        out = {k: sum(getattr(p, k) for p in per) for k in keys}
        out.update({"n_shards": self.n_shards, "dim": next((p.dim for p in per if p.dim is not None), None),
                    "metric": per[0].metric, "index": per[0].index, "shards": [p.to_dict() for p in per]})
        return out

    # --- export and import ------------------------------------------------------------------------------------

    def export(self, path) -> dict:
        """Write every visible record to ``path``: ``vectors.npy``, ``records.jsonl``, ``manifest.json`` (see
        :func:`vecstore_ref.export.export_records`). Consistent: every shard's lock is held while it is read."""
        from .export import export_records

        return export_records(self.shards, path)

    def import_(self, path, *, batch_size: int = 10_000) -> int:
        """Upsert every record of an export at ``path``; returns how many."""
        from .export import read_export
        from .types import Upsert

        n = 0
        for ids, vectors, metadatas, expires in read_export(path, batch_size):
            ops = []
            now = self._clock()
            for i, id_ in enumerate(ids):
                ttl = None if expires[i] is None else expires[i] - now
                if ttl is not None and ttl <= 0:
                    continue  # expired since the export
                ops.append(Upsert(id_, vectors[i], metadatas[i], ttl))
            res = self.batch_execute(ops)
            if res.failed:
                raise InvalidArgumentError(f"import of {path} failed at record {res.errors[0].index}: "
                                           f"{res.errors[0].error}")
            n += res.succeeded
        return n


def _k_of(q, k) -> int:
    from .types import Query

    return q.k if isinstance(q, Query) else k


def _describe(op) -> str:
    try:
        return op.describe()
    except Exception:
        return type(op).__name__.lower()


__all__ = ["ShardedStore", "shard_of"]
