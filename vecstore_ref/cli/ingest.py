"""`vecstore-ref ingest PATH SOURCE`: bulk loading from a file or a pipe, one atomic chunk at a time.

Sources:

- `.npy`: a 2-D array of numbers, memory-mapped, so only one chunk is in memory at a time. Ids and metadata come
  from `--metadata`, a JSONL file whose line i+1 is `{"id": ..., "metadata": {...}}` for row i (a line without
  `id` gets the row number); without it the ids are `"0"` to `"n-1"`.
- `.jsonl` / `.ndjson`: one record per line, `{"id": ..., "vector": [...], "metadata": {...}}` (`metadata` may
  be left out); `-` reads such lines from stdin. Read line by line, never whole; blank lines are skipped.

Each chunk of `--batch` records is one `upsert_many` call, which the store writes as one log record (the chunk
size is capped so that it fits one), so a kill leaves whole chunks only. A bad input line is reported with its
number. With `--on-error fail` (the default) the command stops there with exit status 1 and nothing of that chunk
is written (the chunks before it are); with `--on-error skip` the line is reported, counted and left out, and
the rest of its chunk is written. At the end the HNSW graph is linked before the store closes (and the store's
close saves it with a checkpoint), so that the next open loads the graph instead of linking again (`--no-link`
leaves the linking to whichever process next opens the store for writing).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidInputError,
    InvalidVectorError,
    InvalidVectorTypeError,
    VecStoreError,
)
from ..validation import validate_ttl
from .common import add_create_options, open_for_writing, positive_int, seconds, store_exists, strict_json
from .output import plural

if TYPE_CHECKING:
    from ..store import VecStore
    from ..types import Metadata

MAX_LINE_BYTES = 16 * 2**20  # 16 MiB: a 65,536-dim vector in JSON plus 64 KiB of metadata fits many times
RECORD_KEYS = frozenset({"id", "vector", "metadata"})
METADATA_KEYS = frozenset({"id", "metadata"})
_BOM = b"\xef\xbb\xbf"


@dataclass
class Chunk:
    """Up to ``--batch`` records read from the source, and the lines of that stretch that did not parse.

    ``pos[i]`` is what a report names for record i: its line number (from 1) in a JSONL source, its row number
    (from 0) in a `.npy`. ``bad`` holds ``(pos, error)`` pairs.
    """

    ids: list
    vectors: np.ndarray
    metadatas: list
    pos: list
    bad: list = field(default_factory=list)
    progress: int = 0  # units of the progress bar this chunk covers (bytes or rows)


# --- reading JSONL ------------------------------------------------------------------------------------------------

def iter_lines(f):
    """``(line number, bytes or None, bytes consumed)`` for each line of the binary file ``f``; a line over
    `MAX_LINE_BYTES` is read past in pieces and given as None, so memory stays bounded whatever the input."""
    number = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        used = len(raw)
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if used > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:
                more = f.readline(2**20)
                used += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield number, None, used
            continue
        yield number, raw, used


def parse_json_object(raw: bytes | None, keys: frozenset, what: str) -> dict:
    if raw is None:
        raise InvalidArgumentError(f"the line is longer than {MAX_LINE_BYTES // 2**20} MiB")
    try:
        obj = strict_json(raw)
    except ValueError as exc:  # also UnicodeDecodeError: not UTF-8
        raise InvalidArgumentError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"expected a JSON object {what}, got {type(obj).__name__}")
    extra = obj.keys() - keys
    if extra:
        raise InvalidArgumentError(f"unknown field(s) {', '.join(map(repr, sorted(extra)))}; a line holds {what}")
    return obj


def read_jsonl(f, batch: int, dim: int | None):
    """Chunks of ``{"id", "vector", "metadata"}`` lines from the binary file ``f``. The first good line fixes
    ``dim`` when the store has none yet; ``batch`` is then capped by `chunk_rows`."""
    what = "{\"id\", \"vector\", \"metadata\"}"
    ids: list[str]
    metas: list[Metadata | None]
    pos: list[int]
    bad: list[tuple[int, VecStoreError]]
    ids, metas, pos, bad = [], [], [], []
    if dim is not None:
        batch = chunk_rows(batch, dim)
    mat = None if dim is None else np.empty((batch, dim), dtype=np.float32)
    used = 0
    with np.errstate(over="ignore"):  # 1e39 becomes inf here and is refused by the store's finiteness check
        for number, raw, n in iter_lines(f):
            used += n
            if raw is not None and not raw.strip():
                continue
            try:
                obj = parse_json_object(raw, RECORD_KEYS, what)
                if "id" not in obj or "vector" not in obj:
                    got = ", ".join(sorted(obj)) or "nothing"
                    raise InvalidArgumentError(f"a line needs \"id\" and \"vector\"; got {got}")
                vector = obj["vector"]
                if not isinstance(vector, list) or not set(map(type, vector)) <= {int, float}:
                    raise InvalidVectorTypeError("\"vector\" must be a JSON list of numbers")
                if not vector:
                    raise DimensionMismatchError("\"vector\" is empty")
                if dim is None:
                    dim = len(vector)
                    batch = chunk_rows(batch, dim)
                    mat = np.empty((batch, dim), dtype=np.float32)
                if len(vector) != dim:
                    raise DimensionMismatchError(f"\"vector\" has {len(vector)} values; the store's dimension "
                                                 f"is {dim}")
                try:
                    mat[len(ids)] = vector  # type: ignore[index]  # made once dim is known
                except OverflowError:  # an integer too large for any float
                    raise InvalidVectorError("\"vector\" holds a number too large for float32") from None
            except VecStoreError as exc:
                bad.append((number, exc))
                continue
            ids.append(obj["id"])
            metas.append(obj.get("metadata"))
            pos.append(number)
            if len(ids) == batch:
                yield Chunk(ids, mat, metas, pos, bad, used)  # type: ignore[arg-type]
                ids, metas, pos, bad, used = [], [], [], [], 0
                mat = np.empty((batch, dim), dtype=np.float32)
    if ids or bad:
        yield Chunk(ids, mat[: len(ids)] if mat is not None else np.empty((0, 1), np.float32), metas, pos, bad,
                    used)


# --- reading .npy (+ metadata JSONL) ------------------------------------------------------------------------------

def load_npy(path: str) -> np.ndarray:
    """The array of a .npy file, memory-mapped; never unpickled. It must be a regular file: a FIFO is refused at
    once (a memory map needs a file, and opening a FIFO would wait for a writer)."""
    from .._fs import open_regular_file

    try:
        os.close(open_regular_file(path))
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidArgumentError(f"{path} is not a readable .npy file: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DimensionMismatchError(f"{path} holds an array of shape {arr.shape}; expected (rows, dim), dim >= 1")
    if arr.dtype.kind not in "fiu":
        raise InvalidVectorTypeError(f"{path} holds {arr.dtype} values; expected real numbers")
    return arr


def count_lines(path: str) -> int:
    """Lines in a text file (a last line without a newline counts), read in 1 MiB pieces."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(2**20), b""):
            n += piece.count(b"\n")
            last = piece[-1:]
    return n + (last != b"\n")


def spool_to_file(path: str) -> str:
    """Copy what a pipe or FIFO at ``path`` holds to a temporary file (removed when the process ends) and return
    that file's path: the metadata lines are counted before the load and read again by it."""
    import atexit
    import shutil
    import tempfile

    if not os.path.exists(path):
        raise InvalidArgumentError(f"no file {path}")
    fd, copy = tempfile.mkstemp(prefix="vecstore-ref-metadata-", suffix=".jsonl")

    def remove() -> None:
        if os.path.exists(copy):
            os.unlink(copy)

    atexit.register(remove)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 2**20)
    return copy


def read_npy(arr: np.ndarray, metadata_file, batch: int):
    """Chunks of rows of ``arr``, with ids and metadata from the lines of ``metadata_file`` (binary) if given.
    Records are named by row (from 0); a metadata line that does not parse says its line number too."""
    what = "{\"id\", \"metadata\"}"
    batch = chunk_rows(batch, arr.shape[1])
    lines = iter_lines(metadata_file) if metadata_file is not None else None
    for start in range(0, arr.shape[0], batch):
        end = min(arr.shape[0], start + batch)
        if lines is None:
            yield Chunk([str(i) for i in range(start, end)], arr[start:end], [None] * (end - start),
                        list(range(start, end)), [], end - start)
            continue
        ids, metas, pos, bad, keep = [], [], [], [], []
        for row in range(start, end):
            number, raw, _ = next(lines, (None, None, 0))
            if number is None:
                raise InvalidArgumentError(f"the metadata file ended at row {row}; it needs a line per row")
            try:
                obj = parse_json_object(raw, METADATA_KEYS, what)
            except VecStoreError as exc:
                bad.append((row, type(exc)(f"metadata line {number}: {exc}")))
                continue
            ids.append(obj.get("id", str(row)))
            metas.append(obj.get("metadata"))
            pos.append(row)
            keep.append(row - start)
        vectors = arr[start:end] if len(keep) == end - start else arr[start:end][keep]
        yield Chunk(ids, vectors, metas, pos, bad, end - start)


# --- writing ------------------------------------------------------------------------------------------------------

def find_bad_records(chunk: Chunk, dim: int | None, metric: str, upto: float = float("inf")) -> list:
    """``(pos, error)`` of each record of ``chunk`` (before position ``upto``) that the store would refuse,
    checked one by one with the store's own validators."""
    from ..metadata import validate_metadata
    from ..validation import validate_id, validate_vector

    bad = []
    for i, p in enumerate(chunk.pos):
        if p >= upto:
            break
        try:
            validate_id(chunk.ids[i])
            validate_metadata(chunk.metadatas[i])
            validate_vector(chunk.vectors[i], dim, metric)
        except VecStoreError as exc:
            bad.append((p, exc))
    return bad


class Loader:
    """Writes chunks to the store, one `upsert_many` each, and keeps the counts and the reports.

    A new store is created only when the first chunk is written, so that an input that fails at once leaves no
    store behind. ``dim`` and ``metric`` are what records are checked against when a chunk is refused.
    """

    store: VecStore | None

    def __init__(self, open_store, out, *, on_error: str, ttl: float | None, label: str, dim, metric,
                 path: str = ""):
        self._open_store, self.store, self.path = open_store, None, path
        self.out, self.on_error, self.ttl, self.label = out, on_error, ttl, label
        self.dim, self.metric = dim, metric
        self.written = self.skipped = self.chunks = 0
        self._in_flight = (0, 0)  # (the store's last sequence number before a chunk's write, its rows)

    def _upsert(self, ids, vectors, metadatas) -> None:
        new = self.store is None
        there = NewStoreSite(self.path) if new else None  # what was there before the store was made
        store: VecStore = self._open_store() if self.store is None else self.store
        self._in_flight = (store._last_seq, len(ids))  # an interrupt may land after the write, before the count
        try:
            store.upsert_many(ids, vectors, metadatas, ttl=self.ttl)
        except BaseException:
            if new and store._last_seq == self._in_flight[0] and not len(store):
                discard_new_store(store, there)  # refused before anything was written: no store is left behind
            elif new:
                self.store = store
            raise
        self.store = store
        self.dim = vectors.shape[1]

    def settle_interrupted(self) -> None:
        """Count the chunk an interrupt stopped if it was written all the same (the store's sequence moved on)."""
        seq, n = self._in_flight
        if self.store is not None and n and self.store._last_seq != seq:
            self.written += n
            self.chunks += 1
        self._in_flight = (0, 0)

    def write(self, chunk: Chunk) -> None:
        bad = sorted(chunk.bad, key=lambda b: b[0])
        if bad and self.on_error == "fail":  # report the first bad line, whether it failed parsing or checks
            self.fail((find_bad_records(chunk, self.dim, self.metric, upto=bad[0][0]) or bad)[0])
        try:
            if chunk.ids:
                self._upsert(chunk.ids, chunk.vectors, chunk.metadatas)
        except InvalidInputError:
            refused = find_bad_records(chunk, self.dim, self.metric)
            if not refused:
                raise  # not a per-record problem: upsert_many wrote nothing
            if self.on_error == "fail":
                self.fail(refused[0])
            bad = sorted(bad + refused, key=lambda b: b[0])
            drop = {p for p, _ in refused}
            keep = [i for i, p in enumerate(chunk.pos) if p not in drop]
            if keep:
                self._upsert([chunk.ids[i] for i in keep], chunk.vectors[keep], [chunk.metadatas[i] for i in keep])
            n = len(keep)
        else:
            n = len(chunk.ids)
        self.written += n  # counted with the write, before anything an interrupt could stop
        self.chunks += 1
        self._in_flight = (0, 0)
        for p, exc in bad:
            self.skipped += 1
            self.out.note({"event": "skipped", self.label: p, "type": type(exc).__name__, "error": str(exc)},
                          f"{self.label} {p}: skipped: {type(exc).__name__}: {exc}")
        self.out.note({"event": "chunk", "chunks": self.chunks, "written": self.written, "skipped": self.skipped},
                      None)

    def fail(self, bad) -> None:
        p, exc = bad
        message = (f"{self.label} {p}: {exc} ({plural(self.written, 'record')} in {plural(self.chunks, 'whole chunk')} "
                   "written before it; nothing of its chunk)")
        try:
            error = type(exc)(message)
        except TypeError:  # an error class that takes other arguments
            error = InvalidArgumentError(message)
        raise error from None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _entries(path: str) -> set[str] | None:
    """The names in directory ``path``, or None if there is no directory there."""
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


class NewStoreSite:
    """What a directory held before this command made a store in it: its entries (None: no directory), and the
    first of its parents that did not exist either (the store's creation makes them all)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.entries = _entries(self.path)
        top = None
        here = self.path
        while not os.path.lexists(here):
            top, here = here, os.path.dirname(here)
            if here == top:
                break
        self.first_missing = top


def discard_new_store(store, there: set[str] | NewStoreSite | None) -> None:
    """Close a store this command created (it holds no record) and remove what creating it added: the directory
    if there was none, with the parents made for it (when they hold nothing else), else only the store files that
    were not there before; a user's own files in that directory are never touched."""
    from .._fs import get_fs
    from ..storage.format import LOCK_NAME, MANIFEST_NAME
    from ..storage.layout import is_segment_name, is_snapshot_name

    site, entries = (there, there.entries) if isinstance(there, NewStoreSite) else (None, there)
    path = store.path
    store.close()
    fs = get_fs()
    if entries is None:
        fs.rmtree(path)
        if site is not None and site.first_missing is not None:  # the empty parents made for it, innermost first
            here = os.path.dirname(path)
            while len(here) >= len(site.first_missing) and here.startswith(site.first_missing):
                try:
                    os.rmdir(here)  # only if empty: a file someone put there meanwhile keeps it
                except OSError:
                    break
                here = os.path.dirname(here)
        return
    for name in set(fs.listdir(path)) - entries:
        if name in (LOCK_NAME, MANIFEST_NAME) or is_segment_name(name) or is_snapshot_name(name):
            fs.unlink(os.path.join(path, name))


def finish(store, out, enabled: bool) -> dict:
    """Link every vector still waiting into the HNSW graph, so that the checkpoint the store writes when it closes
    holds the whole graph and the next open links nothing (writes return before linking; see `flush_index`)."""
    if not enabled or store is None:
        return {}
    waiting = store.stats().unindexed
    if waiting and out.interactive:  # it can take a while: say what the wait is for
        out.say(f"linking {plural(waiting, 'vector')} into the HNSW graph (--no-link returns without waiting)")
    t0 = time.perf_counter()
    linked = store.flush_index()
    return {"linked": linked, "link_seconds": time.perf_counter() - t0}


def finish_text(extra: dict) -> str:
    if not extra.get("linked"):
        return ""
    return f"; graph linked in {extra['link_seconds']:.2f} s"


def run_ingest(args, out) -> int:
    fmt = args.format or source_format(args.source)
    if args.metadata is not None and fmt != "npy":
        raise InvalidArgumentError("--metadata goes with a .npy SOURCE; JSONL lines carry their own metadata")
    validate_ttl(args.ttl, allow_none=True)
    dim = args.dim
    arr = None
    if fmt == "npy":
        arr = load_npy(args.source)
        if dim is not None and dim != arr.shape[1]:
            raise DimensionMismatchError(f"{args.source} holds vectors of dimension {arr.shape[1]}; --dim is {dim}")
        dim = arr.shape[1]
        if args.metadata is not None:
            given = args.metadata
            if not os.path.isfile(given):  # a pipe (``<(...)``) reads once: kept for the count and the load
                args.metadata = spool_to_file(given)
            n_lines = count_lines(args.metadata)
            if n_lines != arr.shape[0]:
                raise InvalidArgumentError(f"--metadata {given} has {plural(n_lines, 'line')}; {args.source} "
                                           f"has {plural(arr.shape[0], 'row')} (line i+1 describes row i)")
    elif args.source == "-":
        if sys.stdin is None:  # the process was started with stdin closed
            raise InvalidArgumentError("'-' reads records from stdin, which is closed")
    elif not os.path.exists(args.source) or os.path.isdir(args.source):  # a file, or a named pipe
        raise InvalidArgumentError(f"no file {args.source}")

    def open_store():
        return open_for_writing(args.path, create=True, dim=dim, metric=args.metric, index=args.index)

    metric = args.metric or "cosine"
    if store_exists(args.path):  # open it now: its dim and metric decide what a good record is
        existing = open_store()
        st = existing.stats()
        dim, metric = st.dim, st.metric
        opener = lambda: existing  # noqa: E731
    else:
        existing, opener = None, open_store
    label = "row" if fmt == "npy" else "line"
    loader = Loader(opener, out, on_error=args.on_error, ttl=args.ttl, label=label, dim=dim, metric=metric,
                    path=args.path)
    if existing is not None:
        loader.store = existing
    t0 = time.perf_counter()
    try:
        with open_source(args, fmt) as f:
            if fmt == "npy":
                total, unit, chunks = (arr.shape[0], "rec",  # type: ignore[union-attr]  # npy: an array
                                       read_npy(arr, f, args.batch))  # type: ignore[arg-type]
            else:
                size = os.path.getsize(args.source) if os.path.isfile(args.source) else None  # not a pipe
                total, unit, chunks = size, "B", read_jsonl(f, args.batch, dim)
            with out.progress(total, unit, enabled=args.progress) as bar:
                for chunk in chunks:
                    loader.write(chunk)
                    bar.update(chunk.progress)
        load_seconds = time.perf_counter() - t0
        extra = finish(loader.store, out, args.link and loader.written > 0)
    except KeyboardInterrupt:
        loader.settle_interrupted()
        out.say(f"interrupted: {plural(loader.written, 'record')} in {plural(loader.chunks, 'whole chunk')} "
                "written")
        raise
    finally:
        loader.close()
    summary = {"event": "done", "source": args.source, "written": loader.written, "skipped": loader.skipped,
               "chunks": loader.chunks, "seconds": load_seconds,
               "records_per_s": loader.written / load_seconds if load_seconds > 0 else None, **extra}
    text = (f"ingested {plural(loader.written, 'record')} from {args.source} ({plural(loader.chunks, 'chunk')}, "
            f"{load_seconds:.2f} s)" + (f"; skipped {plural(loader.skipped, 'bad ' + label)}" if loader.skipped else ""))
    out.result(summary, text + finish_text(extra))
    return 0


def chunk_rows(batch: int, dim: int) -> int:
    """``batch``, capped so that a chunk's vectors fit in one log record of `upsert_many` (one atomic write)."""
    from ..store import UPSERT_MANY_CHUNK_BYTES

    return max(1, min(batch, UPSERT_MANY_CHUNK_BYTES // (4 * dim)))


def source_format(source: str) -> str:
    if source == "-":
        return "jsonl"
    ext = os.path.splitext(source)[1].lower()
    if ext == ".npy":
        return "npy"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InvalidArgumentError(f"cannot tell the format of {source}: name it .npy, .jsonl or .ndjson, or give "
                               "--format")


class open_source:
    """The binary file to read lines from: the JSONL source, stdin, or the metadata file of a .npy (or None)."""

    def __init__(self, args, fmt: str):
        self.args, self.fmt, self.f = args, fmt, None

    def __enter__(self):
        a = self.args
        if self.fmt == "npy":
            self.f = open(a.metadata, "rb") if a.metadata is not None else None
        elif a.source == "-":
            return sys.stdin.buffer
        else:
            self.f = open(a.source, "rb")
        return self.f

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()


def register(sub, common) -> None:
    p = sub.add_parser("ingest", parents=[common], help="bulk-load records from .npy (+ --metadata JSONL), JSONL or "
                       "stdin (creates the store if missing)",
                       description="Bulk-load records, one atomic chunk at a time, with a progress bar on a "
                       "terminal. SOURCE is a .npy of vectors (ids and metadata from --metadata), a .jsonl/.ndjson "
                       "of {\"id\", \"vector\", \"metadata\"} lines, or - for such lines on stdin.")
    p.add_argument("path", metavar="PATH", help="the store directory")
    p.add_argument("source", metavar="SOURCE", help=".npy, .jsonl, .ndjson, or - for JSONL on stdin")
    p.add_argument("--metadata", metavar="M.jsonl", default=None,
                   help="with a .npy: line i+1 is {\"id\": ..., \"metadata\": {...}} for row i")
    p.add_argument("--format", choices=("npy", "jsonl"), default=None, help="when SOURCE's name does not tell")
    p.add_argument("--batch", type=positive_int, default=10_000,
                   help="records per chunk, each one atomic write (default 10000)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="at a bad line: stop (default), or report it and go on")
    p.add_argument("--ttl", type=seconds, default=None, help="every record expires after this many seconds")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar, even on a "
                   "terminal")
    p.add_argument("--no-link", dest="link", action="store_false",
                   help="return without waiting for the HNSW graph to link the new vectors")
    add_create_options(p)
    p.set_defaults(run=run_ingest, parser=p)
