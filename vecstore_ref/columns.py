"""Metadata columns: every slot's metadata, kept for reading back and laid out by field for vectorized filters.

`MetadataColumns` keeps the metadata of every slot twice: as its JSON text (the *row*, which `get` decodes, so
what comes back is exactly what was set) and, per field, one array per *kind* of value the
field has held, each indexed by slot and allocated on the first value of that kind:

=========  =================================================  ==================  ==============================
kind       array (capacity,)                                  "absent" sentinel   filters that read it
=========  =================================================  ==================  ==============================
``num``    float64 value (int and float alike)                NaN                 ``= != < <= > >=``, ``IN``
``str``    int32 code into the field's vocabulary             -1                  comparisons, ``CONTAINS``
``bool``   int8, 0 or 1                                       -1                  ``= !=``, ``IN``
``null``   bool: the field is present and set to null         False               ``= null``, ``!= null``
``list``   int64 version of the slot's current list           0                   ``CONTAINS``
=========  =================================================  ==================  ==============================

NaN can mark absence because it is never a valid metadata value. Integers are held as float64, so numbers compare
as doubles: integers beyond 2**53 round, and integers beyond the float range (up to 4,300 digits are accepted)
compare as +/-infinity. The filter's pure-Python evaluator applies the same rule, so both agree.

String codes index a per-field vocabulary in insertion order; an ordering comparison (``<`` ...) is evaluated once
per distinct string (object comparison, i.e. by code point) and gathered by code, and so is a substring test.

List items live in an inverted structure: parallel arrays ``pair_slot: int32``, ``pair_item: int32`` (a code for
the item's ``(kind, value)``, numbers as float so 1 and 1.0 are one item) and ``pair_version: int64``. Writing a
list gives the slot a fresh version; a pair is live only while ``list_version[pair_slot] == pair_version``, so
overwriting or clearing a slot makes its old pairs stale in O(1). Stale pairs are dropped once they outnumber the
live ones. ``CONTAINS`` is one vectorized scan of the pairs.

Memory: every (field, kind) pair a store has ever seen costs its array for every slot (8 bytes for numbers and
list versions, 4 for strings, 1 for booleans and nulls), plus 13 bytes per slot to find the row, and the row itself. A store of
1M records with 20 fields of one kind each holds about 100-200 MB of columns; thousands of sparse fields over
millions of slots would cost gigabytes, a documented limit of this layout (a sparse column would fix it).

Rows are compact UTF-8 JSON, packed one after the other in a `vecstore_ref.blob.ByteLog`: a store of a million
records holds its metadata as bytes rather than a million dicts, a snapshot writes the buffer as it is, and a store
opened from a snapshot uses the snapshot's buffer and column arrays directly, so opening costs no work per record
(see `to_arrays` / `from_arrays` and ``docs/concepts/storage-format.md``).
"""

from __future__ import annotations

import builtins
import json

import numpy as np

from .blob import ByteLog
from .errors import CorruptSnapshotError, InvalidMetadataError
from .metadata import _COLUMNS_SPEC as _COLUMNS
from .metadata import _where, as_float, item_key, kind_of, validate_metadata

_ATTR_OF_KIND = {kind: attr for attr, (_, kind, _) in _COLUMNS.items()}
_BUCKET_OF_TYPE = {str: 0, int: 1, float: 1, bool: 2, type(None): 3, list: 4}  # order of the put_* calls
_ROW_UNSET, _ROW_NONE, _ROW_TEXT = 0, 1, 2  # MetadataColumns._row_state
_TEXT_BUFFER = 4096  # bytes a query's results' texts are first gathered into (more: a second call)
_BAD_ROW = -(1 << 62)  # `gather_texts`: a row's offsets lie outside the buffer (the loop below reads it instead)


def _gather_texts(slots, row_state, start, length, data, out, where) -> int:
    """`vecstore_ref.kernels.query_steps.gather_texts`, loaded on first use (numba loads only when a query runs)."""
    global _gather_texts
    from .jit import load

    gather_texts = load("query_steps").gather_texts
    _gather_texts = gather_texts
    return gather_texts(slots, row_state, start, length, data, out, where)
_ITEM_KINDS = ("str", "num", "bool", "null")  # items.kind codes in a snapshot
_MAX_LIST_VERSION = 1 << 62  # list versions are int64: a snapshot's next_version leaves room for 2**62 more writes

def _grown(arr: np.ndarray | None, capacity: int, fill) -> np.ndarray | None:
    if arr is None or arr.shape[0] >= capacity:
        return arr
    out = np.full(capacity, fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def _present(attr: str, col: np.ndarray) -> np.ndarray:
    """bool, same shape: which entries of the column ``attr`` hold a value."""
    return ~np.isnan(col) if attr == "num" else col != _COLUMNS[attr][0]


def _floats(values: list) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond the float range
        return np.array([as_float(v) for v in values], dtype=np.float64)


# --- one field -------------------------------------------------------------------------------------------------


class FieldColumns:
    """The arrays of one metadata field (layout in the module docstring). Mask methods return fresh arrays."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.kinds: set[str] = set()
        self.num: np.ndarray | None = None  # float64 (capacity,), NaN = absent
        self.code: np.ndarray | None = None  # int32 (capacity,), -1 = absent
        self.code_of: dict[str, int] = {}  # vocabulary: str -> code, in code order
        self._vocab: np.ndarray = np.empty(0, dtype=object)  # object (len(code_of),), rebuilt lazily
        self.flag: np.ndarray | None = None  # int8 (capacity,), -1 = absent
        self.null: np.ndarray | None = None  # bool (capacity,)
        self.list_version: np.ndarray | None = None  # int64 (capacity,), 0 = no list
        self.item_of: dict[tuple, int] = {}  # item_key -> item code
        self.pair_slot = np.empty(0, dtype=np.int32)
        self.pair_item = np.empty(0, dtype=np.int32)
        self.pair_version = np.empty(0, dtype=np.int64)
        self.n_pairs = 0  # pairs in use (the arrays grow by doubling)
        self.n_stale = 0  # pairs whose slot moved on to another list or none
        self.next_version = 1

    # -- writing --

    def reserve(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for attr, (absent, _, _) in _COLUMNS.items():
            setattr(self, attr, _grown(getattr(self, attr), capacity, absent))
        self.capacity = capacity

    def _column(self, attr: str) -> np.ndarray:
        """The array ``attr``, allocated (all absent) on the first value of its kind."""
        arr = getattr(self, attr)
        if arr is None:
            absent, kind, dtype = _COLUMNS[attr]
            arr = np.full(self.capacity, absent, dtype=dtype)
            setattr(self, attr, arr)
            self.kinds.add(kind)
        return arr

    def clear(self, slots: np.ndarray, kind: str, n_items: int = 0) -> None:
        """Mark ``slots`` (int (m,)) absent in the ``kind`` array; ``n_items``: list items made stale."""
        attr = _ATTR_OF_KIND[kind]
        getattr(self, attr)[slots] = _COLUMNS[attr][0]
        if kind == "list":
            self.n_stale += n_items
            if self.n_stale > max(4096, self.n_pairs - self.n_stale):
                self._drop_stale_pairs()

    def put_nums(self, slots: np.ndarray, values: list) -> None:
        self._column("num")[slots] = _floats(values)

    def put_strs(self, slots: np.ndarray, values: list) -> None:
        code_of = self.code_of
        add = code_of.setdefault
        self._column("code")[slots] = [add(v, len(code_of)) for v in values]

    def put_bools(self, slots: np.ndarray, values: list) -> None:
        self._column("flag")[slots] = values

    def put_nulls(self, slots: np.ndarray, values: list) -> None:
        self._column("null")[slots] = True

    def put_lists(self, slots: np.ndarray, lists: list[list]) -> None:
        slots = slots.tolist()
        list_version = self._column("list_version")
        item_of = self.item_of
        add = item_of.setdefault
        pair_slots: list[int] = []
        pair_items: list[int] = []
        pair_versions: list[int] = []
        versions = range(self.next_version, self.next_version + len(slots))
        for slot, items, version in zip(slots, lists, versions):
            for item in items:
                pair_items.append(add(item_key(item), len(item_of)))
            pair_slots.extend([slot] * len(items))
            pair_versions.extend([version] * len(items))
        list_version[slots] = versions
        self.next_version += len(slots)
        self._append_pairs(np.array(pair_slots, dtype=np.int32), np.array(pair_items, dtype=np.int32),
                           np.array(pair_versions, dtype=np.int64))

    def _append_pairs(self, slots: np.ndarray, items: np.ndarray, versions: np.ndarray) -> None:
        need = self.n_pairs + slots.shape[0]
        if need > self.pair_slot.shape[0]:
            cap = max(need, 2 * self.pair_slot.shape[0], 256)
            for name in ("pair_slot", "pair_item", "pair_version"):
                old = getattr(self, name)
                new = np.empty(cap, dtype=old.dtype)
                new[: self.n_pairs] = old[: self.n_pairs]
                setattr(self, name, new)
        self.pair_slot[self.n_pairs: need] = slots
        self.pair_item[self.n_pairs: need] = items
        self.pair_version[self.n_pairs: need] = versions
        self.n_pairs = need

    def _live_pairs(self) -> np.ndarray:
        """bool (n_pairs,): which pairs belong to their slot's current list."""
        n = self.n_pairs
        return self.list_version[self.pair_slot[:n]] == self.pair_version[:n]  # type: ignore[index]  # pairs: lists

    def _drop_stale_pairs(self) -> None:
        live = self._live_pairs()
        for name in ("pair_slot", "pair_item", "pair_version"):
            setattr(self, name, getattr(self, name)[: self.n_pairs][live].copy())
        self.n_pairs = int(live.sum())
        self.n_stale = 0

    def vocab(self) -> np.ndarray:
        """object (n_codes,): the distinct strings of this field, indexed by code."""
        n_old = self._vocab.shape[0]
        if n_old < len(self.code_of):
            tail = np.empty(len(self.code_of) - n_old, dtype=object)
            tail[:] = list(self.code_of)[n_old:]
            self._vocab = np.concatenate([self._vocab, tail])
        return self._vocab

    # -- reading --

    def num_mask(self, op, value: float, m: int) -> np.ndarray:
        """bool (m,): slots holding a number ``x`` with ``op(x, value)``; ``op`` a numpy comparison ufunc."""
        if self.num is None:
            return np.zeros(m, dtype=bool)
        col = self.num[:m]
        out = op(col, value)
        if op is np.not_equal:
            out &= ~np.isnan(col)  # NaN marks absence, and NaN != value is true
        return out

    def str_mask(self, op, value: str, m: int) -> np.ndarray:
        """bool (m,): slots holding a string ``s`` with ``op(s, value)`` (code point order)."""
        if self.code is None:
            return np.zeros(m, dtype=bool)
        codes = self.code[:m]
        if op is np.equal or op is np.not_equal:
            c = self.code_of.get(value)
            if op is np.equal:
                return codes == c if c is not None else np.zeros(m, dtype=bool)
            return (codes >= 0) & (codes != c) if c is not None else codes >= 0
        hit = np.zeros(len(self.code_of) + 1, dtype=bool)  # the last entry answers code -1 (absent)
        hit[:-1] = op(self.vocab(), value)
        return hit[codes]

    def substring_mask(self, value: str, m: int) -> np.ndarray:
        """bool (m,): slots holding a string that contains ``value``; one test per distinct string."""
        if self.code is None:
            return np.zeros(m, dtype=bool)
        hit = np.zeros(len(self.code_of) + 1, dtype=bool)
        hit[:-1] = np.fromiter((value in s for s in self.code_of), dtype=bool, count=len(self.code_of))
        return hit[self.code[:m]]

    def bool_mask(self, value: bool, negate: bool, m: int) -> np.ndarray:
        """bool (m,): slots holding a boolean equal to ``value`` (or, with ``negate``, different from it)."""
        if self.flag is None:
            return np.zeros(m, dtype=bool)
        col = self.flag[:m]
        return (col >= 0) & (col != int(value)) if negate else col == int(value)

    def null_mask(self, m: int) -> np.ndarray:
        return np.zeros(m, dtype=bool) if self.null is None else self.null[:m].copy()

    def non_null_mask(self, m: int) -> np.ndarray:
        """bool (m,): slots where the field is present with any value but null (lists included)."""
        out = np.zeros(m, dtype=bool)
        for attr in ("num", "code", "flag", "list_version"):
            col = getattr(self, attr)
            if col is not None:
                out |= _present(attr, col[:m])
        return out

    def list_contains_mask(self, value, m: int) -> np.ndarray:
        """bool (m,): slots holding a list with an item equal to ``value`` (same kind; 1 equals 1.0)."""
        out = np.zeros(m, dtype=bool)
        if self.list_version is None:
            return out
        code = self.item_of.get(item_key(value))
        if code is None:
            return out
        n = self.n_pairs
        sel = np.flatnonzero(self.pair_item[:n] == code)
        slots = self.pair_slot[sel]
        live = self.list_version[slots] == self.pair_version[sel]
        slots = slots[live]
        out[slots[slots < m]] = True
        return out

    # -- compaction --

    def take(self, slots: np.ndarray, inverse: np.ndarray, capacity: int) -> FieldColumns | None:
        """This field for the new numbering (slot ``slots[i]`` becomes ``i``); None if nothing is left.

        Args:
            slots: int64 (k,), distinct, each < self.capacity.
            inverse: int64 (self.capacity,): new slot of each old slot, -1 if dropped.
            capacity: capacity of the new instance (>= k).
        """
        k = slots.shape[0]
        out = FieldColumns(capacity)
        for attr, (absent, kind, _) in _COLUMNS.items():
            arr = getattr(self, attr)
            if arr is None or not _present(attr, arr[slots]).any():
                continue
            col = np.full(capacity, absent, dtype=arr.dtype)
            col[:k] = arr[slots]
            setattr(out, attr, col)
            out.kinds.add(kind)
        if out.code is not None:  # keep only the strings still used, renumbered in their old order
            codes = out.code[:k]
            used = np.unique(codes[codes >= 0])
            remap = np.full(len(self.code_of) + 1, -1, dtype=np.int32)  # the last entry maps -1 to -1
            remap[used] = np.arange(used.size, dtype=np.int32)
            out.code[:k] = remap[codes]
            out.code_of = {s: i for i, s in enumerate(self.vocab()[used].tolist())}
        if out.list_version is not None:  # live pairs of kept slots, renumbered; versions and item codes kept
            n = self.n_pairs
            keep = self._live_pairs() & (inverse[self.pair_slot[:n]] >= 0)
            out.item_of = dict(self.item_of)
            out.next_version = self.next_version
            out._append_pairs(inverse[self.pair_slot[:n][keep]].astype(np.int32), self.pair_item[:n][keep],
                              self.pair_version[:n][keep])
        return out if out.kinds else None

    # -- persistence --

    def to_arrays(self, n: int, prefix: str, arrays: dict) -> dict:
        """Put this field's arrays for slots ``0 .. n-1`` into ``arrays`` under ``prefix``; returns its header."""
        from .storage.snapshot import pack_strings

        for attr in _COLUMNS:
            col = getattr(self, attr)
            if col is not None:
                arrays[prefix + attr] = col[:n].copy()  # a copy: later writes change values in place
        if self.code is not None:
            arrays[prefix + "vocab.blob"], arrays[prefix + "vocab.offsets"] = pack_strings(list(self.code_of))
        if self.list_version is not None:
            live = self._live_pairs()
            arrays[prefix + "pair_slot"] = self.pair_slot[: self.n_pairs][live]
            arrays[prefix + "pair_item"] = self.pair_item[: self.n_pairs][live]
            arrays[prefix + "pair_version"] = self.pair_version[: self.n_pairs][live]
            keys = list(self.item_of)
            kinds = np.array([_ITEM_KINDS.index(k) for k, _ in keys], dtype=np.uint8)
            nums = np.array([float(v) if k in ("num", "bool") else 0.0 for k, v in keys], dtype=np.float64)
            arrays[prefix + "items.kind"], arrays[prefix + "items.num"] = kinds, nums
            arrays[prefix + "items.str.blob"], arrays[prefix + "items.str.offsets"] = pack_strings(
                [v for k, v in keys if k == "str"])
        return {"kinds": sorted(self.kinds), "next_version": self.next_version}

    @classmethod
    def from_arrays(cls, meta: dict, prefix: str, arrays: dict, n: int) -> FieldColumns:
        """Rebuild a field from `to_arrays` output, checking every shape and code (capacity ``n``).

        Raises:
            CorruptSnapshotError: a missing or misshapen array, a code outside its vocabulary, a pair outside the
                slots.
        """
        from .storage.snapshot import unpack_strings

        f = cls(n)
        kinds = meta.get("kinds")
        if type(kinds) is not list or not all(type(k) is str and k in _ATTR_OF_KIND for k in kinds):
            raise CorruptSnapshotError(f"metadata field {prefix!r}: bad kinds {kinds!r:.80}")
        for kind in kinds:
            attr = _ATTR_OF_KIND[kind]
            col = _array(arrays, prefix + attr, _COLUMNS[attr][2], n)
            setattr(f, attr, col)
            f.kinds.add(kind)
        if f.code is not None:
            vocab = unpack_strings(_array(arrays, prefix + "vocab.blob", np.uint8),
                                   _array(arrays, prefix + "vocab.offsets", np.int64))
            f.code_of = dict(zip(vocab, range(len(vocab))))
            if len(f.code_of) != len(vocab) or (f.code.size and int(f.code.max(initial=-1)) >= len(vocab)):
                raise CorruptSnapshotError(f"metadata field {prefix!r}: string codes do not match the vocabulary")
        if f.list_version is not None:
            next_version = meta.get("next_version")
            if type(next_version) is not int or not 1 <= next_version <= _MAX_LIST_VERSION:
                raise CorruptSnapshotError(f"metadata field {prefix!r}: bad next_version")
            f.next_version = next_version
            slots = _array(arrays, prefix + "pair_slot", np.int32)
            items = _array(arrays, prefix + "pair_item", np.int32, slots.shape[0])
            versions = _array(arrays, prefix + "pair_version", np.int64, slots.shape[0])
            kinds_a = _array(arrays, prefix + "items.kind", np.uint8)
            nums = _array(arrays, prefix + "items.num", np.float64, kinds_a.shape[0])
            strs = unpack_strings(_array(arrays, prefix + "items.str.blob", np.uint8),
                                  _array(arrays, prefix + "items.str.offsets", np.int64))
            if (kinds_a >= len(_ITEM_KINDS)).any() or int((kinds_a == 0).sum()) != len(strs):
                raise CorruptSnapshotError(f"metadata field {prefix!r}: bad list item table")
            str_iter = iter(strs)
            keys = []
            for k, x in zip(kinds_a.tolist(), nums.tolist()):
                kind = _ITEM_KINDS[k]
                keys.append((kind, next(str_iter) if kind == "str" else bool(x) if kind == "bool"
                             else None if kind == "null" else x))
            f.item_of = dict(zip(keys, range(len(keys))))
            if slots.size and (int(slots.min()) < 0 or int(slots.max()) >= n or int(items.min()) < 0
                               or int(items.max()) >= len(keys)):
                raise CorruptSnapshotError(f"metadata field {prefix!r}: a list pair is out of bounds")
            f._append_pairs(slots, items, versions)
        return f


def _check_rows(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """The rows ``blob[starts[i] : starts[i] + lengths[i]]`` lie inside the blob, and each is UTF-8 text that
    begins with ``{`` and ends with ``}`` (what `encode_row` writes for a dict).

    Checked on load with array operations and one ``bytes.decode`` of the blob, so opening costs no work per row
    in Python: a valid UTF-8 blob cut only next to the ASCII braces gives valid UTF-8 rows. Whether a row is
    well-formed JSON is found out when it is decoded (`decode_row`), which turns a failure into
    `CorruptSnapshotError` too.

    Raises:
        CorruptSnapshotError: a row outside the blob, a blob that is not UTF-8, a row that is not braced.
    """
    if int(starts.min()) < 0 or int(lengths.min()) < 2 or (starts > blob.size - lengths.astype(np.int64)).any():
        raise CorruptSnapshotError("a metadata row lies outside the snapshot's blob")
    if (blob[starts] != ord("{")).any() or (blob[starts + lengths - 1] != ord("}")).any():
        raise CorruptSnapshotError("a metadata row of the snapshot is not a JSON object")
    try:
        blob.tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptSnapshotError(f"the snapshot's metadata rows are not UTF-8 (byte {exc.start})") from None


def decode_row(text: bytes) -> dict:
    """The dict of a stored row. Rows from the log were validated when written or replayed; a snapshot's rows
    are checked on load only as far as `_check_rows` goes (no JSON parsing per row at open), so a row that does
    not parse is reported here, when it is read, as `CorruptSnapshotError`."""
    try:
        md = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptSnapshotError(f"a stored metadata row does not parse: {exc}") from None
    if type(md) is not dict:
        raise CorruptSnapshotError("a stored metadata row is not a JSON object")
    return md


def _array(arrays: dict, name: str, dtype, length: int | None = None) -> np.ndarray:
    """The snapshot array ``name``, checked to be 1-D of ``dtype`` (and ``length`` entries when given)."""
    arr = arrays.get(name)
    if arr is None:
        raise CorruptSnapshotError(f"the snapshot lacks the metadata array {name!r}")
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1 or (length is not None and arr.shape[0] != length):
        raise CorruptSnapshotError(f"the snapshot's metadata array {name!r} has the wrong type or shape")
    return arr


# --- all fields ------------------------------------------------------------------------------------------------


def encode_row(md: dict | None) -> bytes | None:
    """The row of a metadata dict: compact UTF-8 JSON (None stays None)."""
    if md is None:
        return None
    return json.dumps(md, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class MetadataColumns:
    """Every slot's metadata: its row (JSON text) plus the columnar layout of the module docstring.

    ``set``/``set_many`` take dicts from `validate_metadata` (optionally with their rows already encoded);
    ``get`` decodes a fresh dict. Not thread-safe: the store's write lock serializes writers, and its readers
    never overlap a writer (see `vecstore_ref.rwlock`).

    Rows are appended to one `ByteLog`; a slot points at its row with ``(_start, _length)`` and says what it holds
    in ``_row_state`` (uint8): 0 = never set or cleared, 1 = set to None, 2 = JSON text. Replacing a row appends
    the new text; the old bytes stay until a snapshot finds the buffer mostly dead and gathers the live rows.
    """

    def __init__(self, capacity: int = 1024):
        self.capacity = max(1, int(capacity))
        self._fields: dict[str, FieldColumns] = {}
        self._bytes = ByteLog()
        self._start = np.zeros(self.capacity, dtype=np.int64)
        self._length = np.zeros(self.capacity, dtype=np.int32)
        self._row_state = np.zeros(self.capacity, dtype=np.uint8)
        self._any_text = False  # some slot ever held a dict (so get_many must look)

    def __len__(self) -> int:
        """Number of slots currently assigned (set and not cleared)."""
        return int(np.count_nonzero(self._row_state))

    def reserve(self, capacity: int) -> None:
        """Make room for slots ``0 .. capacity-1`` (grows every column; amortize by doubling)."""
        capacity = int(capacity)
        if capacity <= self.capacity:
            return
        for f in self._fields.values():
            f.reserve(capacity)
        self._start = _grown(self._start, capacity, 0)  # type: ignore[assignment]  # an array in: an array out
        self._length = _grown(self._length, capacity, 0)  # type: ignore[assignment]
        self._row_state = _grown(self._row_state, capacity, _ROW_UNSET)  # type: ignore[assignment]
        self.capacity = capacity

    # -- rows --

    def text(self, slot: int) -> bytes | None:
        """The JSON text of what was set at ``slot`` (None if it was set to None or never set)."""
        if not 0 <= slot < self.capacity or self._row_state[slot] != _ROW_TEXT:
            return None
        return self._bytes.get(int(self._start[slot]), int(self._length[slot]))

    def get(self, slot: int) -> dict | None:
        """A fresh dict of what was set at ``slot`` (None if nothing was)."""
        text = self.text(int(slot))
        return None if text is None else decode_row(text)

    @property
    def any_text(self) -> bool:
        """Whether some slot ever held a dict (if not, every slot's metadata is None)."""
        return self._any_text

    def get_many(self, slots: list[int]) -> list[dict | None]:
        """`get` for a few slots (a query's results); no work at all in a store that never held a dict."""
        if not self._any_text:
            return [None] * len(slots)
        return [self.get(s) for s in slots]

    def texts_of(self, slots: list[int], slot_array: np.ndarray | None = None) -> list[bytes | None]:
        """The JSON text at each of a few slots (a query's results), None where nothing was set; no work at all
        in a store that never held a dict.

        With ``slot_array`` (the same slots, int32), one small kernel gathers the rows' texts into one buffer
        (`vecstore_ref.kernels.query_steps.gather_texts`): the rows' four arrays are read with the loads in flight
        together, and Python only cuts the buffer. Without it, or where the bytes are a read-only array (a
        kernel takes writable ones), a Python loop reads them.
        """
        if not self._any_text:
            return [None] * len(slots)
        data_arr = self._bytes.buf
        if slot_array is not None and data_arr.flags.writeable:
            k = len(slots)
            where = np.empty(2 * k, dtype=np.int64)
            out = np.empty(_TEXT_BUFFER, dtype=np.uint8)
            total = _gather_texts(slot_array, self._row_state, self._start, self._length, data_arr, out, where)
            if _BAD_ROW < total < 0:
                out = np.empty(-total, dtype=np.uint8)
                total = _gather_texts(slot_array, self._row_state, self._start, self._length, data_arr, out, where)
            if total >= 0:
                blob = out[:total].tobytes()
                return [blob[a:a + n] if n >= 0 else None for a, n in zip(where[:k].tolist(), where[k:].tolist())]
        # Memoryviews index as plain Python ints, without a numpy scalar per access; a few random rows are read
        # faster this way than by numpy's gathers, whose fixed cost is a microsecond each.
        state, start, length = self._row_state.data, self._start.data, self._length.data  # memoryviews
        data = data_arr.data  # entries never change: a slice of the buffer of now is the text
        cap = self.capacity
        texts: list[bytes | None] = []
        for s in slots:
            if 0 <= s < cap and state[s] == _ROW_TEXT:
                a = start[s]
                texts.append(bytes(data[a:a + length[s]]))
            else:
                texts.append(None)
        return texts

    def _old_dicts(self, slots: list[int]) -> list[tuple[int, dict]]:
        """(slot, dict) for the slots among ``slots`` that hold a dict now (what a new value must clear)."""
        st = self._row_state
        return [(s, decode_row(self.text(s)))  # type: ignore[arg-type]  # a text row: bytes
                for s in slots if s < self.capacity and st[s] == _ROW_TEXT]

    def _clear_values(self, old: list[tuple[int, dict]]) -> None:
        """Remove what the ``(slot, dict)`` pairs hold from the columns (rows are left to the caller)."""
        groups: dict[tuple[str, str], list[int]] = {}
        stale: dict[str, int] = {}
        try:  # a row is what its columns hold, unless a snapshot lied (its rows and columns are stored apart)
            for s, md in old:
                for key, value in md.items():
                    kind = kind_of(value)
                    groups.setdefault((key, kind), []).append(s)
                    if kind == "list":
                        stale[key] = stale.get(key, 0) + len(value)
            for (key, kind), group in groups.items():
                self._fields[key].clear(np.array(group, dtype=np.int64), kind, stale.get(key, 0))
        except (InvalidMetadataError, KeyError, TypeError) as exc:
            raise CorruptSnapshotError(f"a stored metadata row does not match its columns: {exc!r:.80}") from None

    def set(self, slot: int, md: dict | None) -> None:
        """Replace the metadata of ``slot`` entirely (``md`` from `validate_metadata`, or None)."""
        self.set_many(np.array([int(slot)], dtype=np.int64), [md])

    def set_many(self, slots: np.ndarray, mds: list, rows: list | None = None, fresh: bool = False) -> None:
        """Replace the metadata of many slots at once: the bulk-load path (one Python pass over the values).

        Args:
            slots: int (m,), each >= 0; a slot given twice keeps its last metadata.
            mds: m dicts (from `validate_metadata`) or None.
            rows: their rows (`encode_row`), if the caller has them already; encoded here otherwise.
            fresh: the caller promises the slots hold nothing yet (new slots): nothing is cleared first.
        """
        slot_list = np.asarray(slots, dtype=np.int64).tolist()
        mds = list(mds)
        if len(slot_list) != len(mds) or (rows is not None and len(rows) != len(mds)):
            raise InvalidMetadataError(f"{len(slot_list)} slots but {len(mds)} metadata entries")
        if not slot_list:
            return
        if min(slot_list) < 0:
            raise InvalidMetadataError("slots must be >= 0")
        top = max(slot_list) + 1
        if top > self.capacity:
            self.reserve(max(top, 2 * self.capacity))
        if len(set(slot_list)) != len(slot_list):  # a repeated slot keeps its last metadata
            latest = {s: i for i, s in enumerate(slot_list)}
            keep = sorted(latest.values())
            slot_list = [slot_list[i] for i in keep]
            mds = [mds[i] for i in keep]
            rows = None if rows is None else [rows[i] for i in keep]
        # One pass over every value, bucketed by field and kind, before anything changes (a value of an unknown
        # type raises here and leaves the columns as they were). Per field: 5 lists of slots (one per kind, in
        # _BUCKET_OF_TYPE order) then 5 lists of the matching values.
        buckets: dict[str, tuple[list, ...]] = {}
        for s, md in zip(slot_list, mds):
            if not md:
                continue
            for key, value in md.items():
                b = buckets.get(key)
                if b is None:
                    b = buckets[key] = ([], [], [], [], [], [], [], [], [], [])
                i = _BUCKET_OF_TYPE.get(type(value))
                if i is None:
                    raise InvalidMetadataError(f"{_where(key)} is a {type(value).__name__}; validate it first")
                b[i].append(s)
                b[i + 5].append(value)
        if rows is None:
            rows = [encode_row(md) for md in mds]
        if not fresh:
            self._clear_values(self._old_dicts(slot_list))
        idx = np.array(slot_list, dtype=np.int64)
        has = np.fromiter((r is not None for r in rows), dtype=bool, count=len(rows))
        texts = [r for r in rows if r is not None]
        self._row_state[idx] = np.where(has, _ROW_TEXT, _ROW_NONE).astype(np.uint8)
        if texts:
            self._any_text = True
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            self._start[idx[has]] = self._bytes.append_joined(b"".join(texts), lengths)
            self._length[idx[has]] = lengths
        for key, b in buckets.items():
            f = self._fields.get(key)
            if f is None:
                f = self._fields[key] = FieldColumns(self.capacity)
            for i, put in enumerate((f.put_strs, f.put_nums, f.put_bools, f.put_nulls, f.put_lists)):
                if b[i]:
                    put(np.array(b[i], dtype=np.int64), b[i + 5])

    def clear(self, slot: int) -> None:
        """Forget ``slot``: it holds no metadata and no filter matches it."""
        slot = int(slot)
        if 0 <= slot < self.capacity:
            self._clear_values(self._old_dicts([slot]))
            self._row_state[slot] = _ROW_UNSET

    def fields(self) -> dict[str, builtins.set[str]]:  # (in this class, `set` is the method above)
        """Field name -> the kinds (``str num bool null list``) it has held since the last `take`."""
        return {name: set(f.kinds) for name, f in self._fields.items()}

    def column(self, name: str) -> FieldColumns | None:
        """The columns of field ``name``, or None if no slot ever held it."""
        return self._fields.get(name)

    def assigned(self, n_slots: int) -> np.ndarray:
        """bool (n_slots,): slots that were set and not cleared (False beyond the capacity)."""
        out = np.zeros(n_slots, dtype=bool)
        m = min(n_slots, self.capacity)
        out[:m] = self._row_state[:m] != _ROW_UNSET
        return out

    # -- compaction --

    def take(self, slots: np.ndarray) -> MetadataColumns:
        """A compacted copy where slot ``i`` holds what ``slots[i]`` holds here (compaction renumbers slots).

        Args:
            slots: int (k,), distinct, each in ``[0, capacity)``.
        """
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        k = slots.shape[0]
        if k and (slots.min() < 0 or slots.max() >= self.capacity):
            raise InvalidMetadataError("take(): a slot is outside the columns")
        if np.unique(slots).shape[0] != k:
            raise InvalidMetadataError("take(): slots must be distinct")
        out = MetadataColumns(max(1, k))
        inverse = np.full(self.capacity, -1, dtype=np.int64)
        inverse[slots] = np.arange(k, dtype=np.int64)
        for name, f in self._fields.items():
            g = f.take(slots, inverse, out.capacity)
            if g is not None:
                out._fields[name] = g
        state = self._row_state[slots]
        out._row_state[:k] = state
        text = state == _ROW_TEXT
        if text.any():
            out._any_text = True
            src = slots[text]
            blob, starts, lengths = _gather(self._bytes.used(), self._start[src], self._length[src])
            out._bytes = ByteLog(blob)
            out._start[:k][text] = starts
            out._length[:k][text] = lengths
        return out

    # -- persistence --

    def to_arrays(self, n: int) -> tuple[dict, dict[str, np.ndarray]]:
        """The metadata of slots ``0 .. n-1`` as a JSON header and numeric arrays (for a snapshot).

        The rows' buffer is written as it is (a view) while most of it is live; otherwise the live rows are
        gathered into a new one with array operations. Nothing is decoded.
        """
        n = min(int(n), self.capacity)
        arrays: dict[str, np.ndarray] = {}
        state = self._row_state[:n].copy()
        text = np.flatnonzero(state == _ROW_TEXT)
        used = self._bytes.used()
        live = int(self._length[text].sum(dtype=np.int64))
        if 2 * live >= used.size:
            blob, starts, lengths = used, self._start[:n].copy(), self._length[:n].copy()
        else:
            blob, g_starts, g_lengths = _gather(used, self._start[text], self._length[text])
            starts = np.zeros(n, dtype=np.int64)
            lengths = np.zeros(n, dtype=np.int32)
            starts[text], lengths[text] = g_starts, g_lengths
        starts[state != _ROW_TEXT] = 0
        lengths[state != _ROW_TEXT] = 0
        arrays["rows.state"], arrays["rows.start"], arrays["rows.length"] = state, starts, lengths
        arrays["rows.blob"] = blob
        fields = []
        for i, (name, f) in enumerate(self._fields.items()):
            meta = f.to_arrays(n, f"f{i}.", arrays)
            fields.append({"name": name, **meta})
        return {"n": n, "fields": fields}, arrays

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> MetadataColumns:
        """Rebuild from `to_arrays` output without decoding a row (capacity = the slots saved).

        Raises:
            CorruptSnapshotError: anything missing, misshapen or out of bounds.
        """
        n = meta.get("n") if type(meta) is dict else None
        fields = meta.get("fields") if type(meta) is dict else None
        if type(n) is not int or n < 0 or type(fields) is not list:
            raise CorruptSnapshotError("the snapshot's metadata header is malformed")
        state = _array(arrays, "rows.state", np.uint8, n)  # before anything is allocated for n slots
        starts = _array(arrays, "rows.start", np.int64, n)
        lengths = _array(arrays, "rows.length", np.int32, n)
        blob = _array(arrays, "rows.blob", np.uint8)
        if (state > _ROW_TEXT).any():
            raise CorruptSnapshotError("the snapshot holds an unknown metadata row state")
        held = state == _ROW_TEXT
        if held.any():
            _check_rows(blob, starts[held], lengths[held])
        out = cls(max(1, n))
        out._row_state[:n] = state
        out._any_text = bool(held.any())
        out._start[:n], out._length[:n] = starts, lengths
        out._bytes = ByteLog(blob)
        names = set()
        for i, fmeta in enumerate(fields):
            name = fmeta.get("name") if type(fmeta) is dict else None
            if type(name) is not str or not name or name in names:
                raise CorruptSnapshotError("the snapshot's metadata field table is malformed")
            names.add(name)
            out._fields[name] = FieldColumns.from_arrays(fmeta, f"f{i}.", arrays, out.capacity)
        return out

    def to_json_list(self, n_slots: int) -> list[str | None]:
        """One JSON text per slot ``0 .. n_slots-1``: the metadata set there (``"null"`` for a slot set to None),
        or None for a slot never set or cleared."""
        out: list[str | None] = []
        for s in range(int(n_slots)):
            if s < self.capacity and self._row_state[s] != _ROW_UNSET:
                text = self.text(s)
                out.append("null" if text is None else text.decode("utf-8"))
            else:
                out.append(None)
        return out

    @classmethod
    def from_json_list(cls, texts: list) -> MetadataColumns:
        """Rebuild from `to_json_list` output; every entry is parsed and validated again.

        Raises:
            InvalidMetadataError: an entry that does not parse, or parses to invalid metadata (the caller turns
                this into its own corruption error).
        """
        out = cls(max(1, len(texts)))
        slots, mds = [], []
        for s, text in enumerate(texts):
            if text is None:
                continue
            try:
                md = json.loads(text, parse_constant=_refuse_constant)
            except (ValueError, TypeError, RecursionError) as exc:
                raise InvalidMetadataError(f"slot {s}: metadata is not JSON: {exc}") from None
            slots.append(s)
            mds.append(validate_metadata(md))
        out.set_many(np.array(slots, dtype=np.int64), mds, fresh=True)
        return out


def _gather(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Concatenate ``blob[starts[i] : starts[i] + lengths[i]]`` with array operations, in chunks of rows so that
    the index temporaries stay small.

    Returns ``(new blob uint8, new starts int64, lengths int32)``.
    """
    lengths = lengths.astype(np.int64)
    new_starts = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    out = np.empty(total, dtype=np.uint8)
    rows = starts.shape[0]
    step = max(1, rows * (1 << 20) // max(1, total))  # about 1 MiB of bytes per chunk
    for a in range(0, rows, step):
        b = min(rows, a + step)
        ln = lengths[a:b]
        n_bytes = int(ln.sum())
        if not n_bytes:
            continue
        first = int(new_starts[a])
        local = np.repeat(new_starts[a:b] - first, ln)
        src = np.repeat(starts[a:b].astype(np.int64), ln) + (np.arange(n_bytes, dtype=np.int64) - local)
        out[first : first + n_bytes] = blob[src]
    return out, new_starts, lengths.astype(np.int32)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")
