"""Metadata: what a record may carry, and the columnar layout that filters run on.

A record's metadata is a flat ``dict[str, value]`` where a value is a str, int, finite float, bool, None, or a list
(at most 1,024 items) of those scalars (SPEC section 1). Nothing nests deeper than a list of scalars: that keeps
every filter total and every column one-dimensional. :func:`validate_metadata` enforces the rules and hands back a
copy the store owns.

:class:`MetadataColumns` keeps the metadata of every slot twice: the dicts themselves (shared, never copied, so
:meth:`MetadataColumns.get` can give back exactly what was set) and, per field, one array per *kind* of value the
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
list versions, 4 for strings, 1 for booleans and nulls), plus 8 bytes per slot for the row references. A store of
1M records with 20 fields of one kind each holds about 100-200 MB of columns; thousands of sparse fields over
millions of slots would cost gigabytes, a documented limit of this layout (a sparse column would fix it).
"""

from __future__ import annotations

import json
import math

import numpy as np

from .config import MAX_METADATA_BYTES, MAX_METADATA_KEY_CHARS, MAX_METADATA_LIST_ITEMS
from .errors import InvalidMetadataError

KINDS = ("str", "num", "bool", "null", "list")
_MAX_INT = 10**4300  # json.loads refuses ints of more than 4,300 digits (CPython's int_max_str_digits)
# Per-slot arrays of a field: attribute -> (the "absent" sentinel, the kind it holds, dtype).
_COLUMNS = {"num": (np.nan, "num", np.float64), "code": (-1, "str", np.int32), "flag": (-1, "bool", np.int8),
            "null": (False, "null", np.bool_), "list_version": (0, "list", np.int64)}
_ATTR_OF_KIND = {kind: attr for attr, (_, kind, _) in _COLUMNS.items()}
_BUCKET_OF_TYPE = {str: 0, int: 1, float: 1, bool: 2, type(None): 3, list: 4}  # order of the put_* calls

# --- validation ------------------------------------------------------------------------------------------------


def _key_repr(key: str) -> str:
    """``repr`` of a key for error messages: long keys cut, lone surrogates escaped."""
    return repr(key if len(key) <= 40 else key[:40] + "...")


def _where(key: str, index: int | None = None) -> str:
    """``metadata['key']``, or ``metadata['key'][3]`` for a list item."""
    return f"metadata[{_key_repr(key)}]" + ("" if index is None else f"[{index}]")


def _check_text(s: str, where) -> None:
    if not s.isascii():  # only non-ASCII text can hold a lone surrogate
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMetadataError(f"{where()} holds a lone surrogate at index {exc.start}; strings must be "
                                       "valid UTF-8") from None


def _check_scalar(value, key: str, index: int | None = None) -> int:
    """Raise unless ``value`` is a storable scalar; return an upper bound of its JSON size in bytes.

    The bound lets :func:`validate_metadata` skip the JSON encoding for the usual small dict: a character costs at
    most 6 bytes (``\\u0001``; non-ASCII is at most 4 bytes of UTF-8), a float at most 24 (``repr``), an int
    about ``bit_length * log10(2)`` digits plus a sign.
    """
    t = type(value)
    if t is str:
        _check_text(value, lambda: _where(key, index))
        return 6 * len(value) + 2
    if t is bool or value is None:
        return 5
    if t is int:
        if value >= _MAX_INT or value <= -_MAX_INT:
            raise InvalidMetadataError(f"{_where(key, index)} is an integer of more than 4,300 digits, which JSON "
                                       "readers refuse; store it as a string")
        return (value.bit_length() * 78) // 256 + 3  # 78/256 > log10(2): digits, plus sign and rounding
    if t is float:
        if not math.isfinite(value):
            raise InvalidMetadataError(f"{_where(key, index)} is {value}; only finite numbers can be stored (NaN "
                                       "and infinity are not JSON)")
        return 24
    if t is list or t is dict:
        raise InvalidMetadataError(f"{_where(key, index)} is a nested {t.__name__}; values are scalars or lists "
                                   "of scalars")
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    hint = " (convert numpy scalars with .item())" if t.__module__ == "numpy" else ""
    raise InvalidMetadataError(f"{_where(key, index)} is a {name}; values must be exactly str, int, float, bool, "
                               f"None or a list of those{hint}")


def validate_metadata(md: object) -> dict | None:
    """Check ``md`` against SPEC section 1 and return a fresh copy the store can own.

    Args:
        md: None, or a dict whose keys are ``str`` of 1 to 256 characters and whose values are ``str``, ``int``,
            finite ``float``, ``bool``, ``None``, or a ``list`` of at most 1,024 of those. Types must be exact:
            numpy scalars, tuples, sets, bytes, datetimes and subclasses (e.g. ``IntEnum``) are refused, so what
            is stored is what JSON gives back.

    Returns:
        None for None; otherwise a new dict (lists copied), so the caller mutating its own objects later cannot
        change stored data.

    Raises:
        InvalidMetadataError: naming the offending key, for a wrong type, a lone surrogate, NaN or infinity, an
            integer of more than 4,300 digits, a list too long, a nested container, or more than 64 KiB of JSON.
    """
    if md is None:
        return None
    if not isinstance(md, dict):
        raise InvalidMetadataError(f"metadata must be a dict or None, got {type(md).__name__}")
    out: dict = {}
    upper = 2  # an upper bound of the JSON size: "{}" + entries
    chars = 0  # a lower bound: characters of keys and string values
    for key, value in md.items():
        if type(key) is not str:
            raise InvalidMetadataError(f"metadata keys must be str, got {type(key).__name__} {key!r:.60}")
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise InvalidMetadataError(f"metadata key {_key_repr(key)} has {len(key)} characters; keys are 1 "
                                       f"to {MAX_METADATA_KEY_CHARS}")
        _check_text(key, lambda k=key: f"metadata key {_key_repr(k)}")
        if type(value) is list:
            if len(value) > MAX_METADATA_LIST_ITEMS:
                raise InvalidMetadataError(f"{_where(key)} has {len(value)} items; at most "
                                           f"{MAX_METADATA_LIST_ITEMS} are allowed")
            upper += 2
            for i, item in enumerate(value):
                upper += _check_scalar(item, key, i) + 2
                if type(item) is str:
                    chars += len(item)
            out[key] = list(value)
        else:
            upper += _check_scalar(value, key)
            if type(value) is str:
                chars += len(value)
            out[key] = value
        upper += 6 * len(key) + 6  # quotes, ": ", ", "
        chars += len(key)
        if chars > MAX_METADATA_BYTES:  # over the limit already: stop before encoding a huge JSON string
            raise InvalidMetadataError(f"metadata is over {MAX_METADATA_BYTES:,} bytes as JSON (at "
                                       f"{_where(key)}); store large payloads elsewhere")
    if upper > MAX_METADATA_BYTES:  # only then is the exact size worth computing
        size = len(json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise InvalidMetadataError(f"metadata is {size:,} bytes as JSON; the limit is {MAX_METADATA_BYTES:,}")
    return out


# --- kinds and numbers -----------------------------------------------------------------------------------------


def kind_of(value) -> str:
    """The kind of a stored value or filter literal: ``str``, ``num``, ``bool``, ``null`` or ``list``."""
    if value is None:
        return "null"
    t = type(value)
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "num"
    if t is str:
        return "str"
    if t is list:
        return "list"
    raise InvalidMetadataError(f"not a metadata value: {t.__name__}")


def as_float(value) -> float:
    """A number as the columns hold it: float64, integers beyond the float range as +/-infinity."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def item_key(value) -> tuple:
    """The key under which a list item is indexed: numbers as float (1 and 1.0 are one item), bool apart."""
    k = kind_of(value)
    return (k, as_float(value)) if k == "num" else (k, value)


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
        return self.list_version[self.pair_slot[:n]] == self.pair_version[:n]

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


# --- all fields ------------------------------------------------------------------------------------------------


class MetadataColumns:
    """Columnar metadata by slot, for vectorized filtering (layout in the module docstring).

    ``set``/``set_many`` take ownership of the dicts they are given (they must come from
    :func:`validate_metadata` and not be mutated afterwards); ``get`` returns a copy. Not thread-safe: the store
    serializes access.

    Persistence: :meth:`to_json_list` gives one JSON text per slot (None for a slot never set or cleared);
    :meth:`from_json_list` rebuilds the columns from it. The store may equally persist the dicts itself and call
    :meth:`set_many` on load; the columns are always derived data.
    """

    def __init__(self, capacity: int = 1024):
        self.capacity = max(1, int(capacity))
        self._fields: dict[str, FieldColumns] = {}
        self._rows: list = [None] * self.capacity  # slot -> the dict set there (or None)
        self._assigned = np.zeros(self.capacity, dtype=bool)  # set() and not clear()ed since

    def __len__(self) -> int:
        """Number of slots currently assigned (set and not cleared)."""
        return int(np.count_nonzero(self._assigned))

    def reserve(self, capacity: int) -> None:
        """Make room for slots ``0 .. capacity-1`` (grows every column; amortize by doubling)."""
        capacity = int(capacity)
        if capacity <= self.capacity:
            return
        for f in self._fields.values():
            f.reserve(capacity)
        self._rows.extend([None] * (capacity - self.capacity))
        self._assigned = _grown(self._assigned, capacity, False)
        self.capacity = capacity

    def _clear_rows(self, slots: list[int]) -> None:
        """Remove what ``slots`` hold from the columns (the row references are left to the caller)."""
        groups: dict[tuple[str, str], list[int]] = {}
        stale: dict[str, int] = {}
        rows = self._rows
        for s in slots:
            old = rows[s]
            if not old:
                continue
            for key, value in old.items():
                kind = kind_of(value)
                groups.setdefault((key, kind), []).append(s)
                if kind == "list":
                    stale[key] = stale.get(key, 0) + len(value)
        for (key, kind), group in groups.items():
            self._fields[key].clear(np.array(group, dtype=np.int64), kind, stale.get(key, 0))

    def set(self, slot: int, md: dict | None) -> None:
        """Replace the metadata of ``slot`` entirely (``md`` from :func:`validate_metadata`, or None)."""
        self.set_many(np.array([int(slot)], dtype=np.int64), [md])

    def set_many(self, slots: np.ndarray, mds: list) -> None:
        """Replace the metadata of many slots at once: the bulk-load path (one Python pass over the values).

        Args:
            slots: int (m,), each >= 0; a slot given twice keeps its last metadata.
            mds: m dicts (from :func:`validate_metadata`) or None.
        """
        slot_list = np.asarray(slots, dtype=np.int64).tolist()
        mds = list(mds)
        if len(slot_list) != len(mds):
            raise InvalidMetadataError(f"{len(slot_list)} slots but {len(mds)} metadata entries")
        if not slot_list:
            return
        if min(slot_list) < 0:
            raise InvalidMetadataError("slots must be >= 0")
        top = max(slot_list) + 1
        if top > self.capacity:
            self.reserve(max(top, 2 * self.capacity))
        latest = dict(zip(slot_list, mds))  # a repeated slot keeps its last metadata
        slot_list = list(latest)
        # One pass over every value, bucketed by field and kind, before anything changes (a value of an unknown
        # type raises here and leaves the columns as they were). Per field: 5 lists of slots (one per kind, in
        # _BUCKET_OF_TYPE order) then 5 lists of the matching values.
        buckets: dict[str, tuple[list, ...]] = {}
        for s, md in latest.items():
            for key, value in (md or {}).items():
                b = buckets.get(key)
                if b is None:
                    b = buckets[key] = ([], [], [], [], [], [], [], [], [], [])
                i = _BUCKET_OF_TYPE.get(type(value))
                if i is None:
                    raise InvalidMetadataError(f"{_where(key)} is a {type(value).__name__}; validate it first")
                b[i].append(s)
                b[i + 5].append(value)
        self._clear_rows(slot_list)
        rows = self._rows
        for s, md in latest.items():
            rows[s] = md
        self._assigned[slot_list] = True
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
            self._clear_rows([slot])
            self._rows[slot] = None
            self._assigned[slot] = False

    def get(self, slot: int) -> dict | None:
        """A copy of what was set at ``slot`` (None if nothing was)."""
        slot = int(slot)
        md = self._rows[slot] if 0 <= slot < self.capacity else None
        return None if md is None else {k: (list(v) if type(v) is list else v) for k, v in md.items()}

    def fields(self) -> dict[str, set[str]]:
        """Field name -> the kinds (``str num bool null list``) it has held since the last :meth:`take`."""
        return {name: set(f.kinds) for name, f in self._fields.items()}

    def column(self, name: str) -> FieldColumns | None:
        """The columns of field ``name``, or None if no slot ever held it."""
        return self._fields.get(name)

    def assigned(self, n_slots: int) -> np.ndarray:
        """bool (n_slots,): slots that were set and not cleared (False beyond the capacity)."""
        out = np.zeros(n_slots, dtype=bool)
        m = min(n_slots, self.capacity)
        out[:m] = self._assigned[:m]
        return out

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
        rows = self._rows
        out._rows[:k] = [rows[s] for s in slots.tolist()]
        out._assigned[:k] = self._assigned[slots]
        return out

    def to_json_list(self, n_slots: int) -> list[str | None]:
        """One JSON text per slot ``0 .. n_slots-1``: the metadata set there (``"null"`` for a slot set to None),
        or None for a slot never set or cleared."""
        out: list[str | None] = []
        for s in range(int(n_slots)):
            if s < self.capacity and self._assigned[s]:
                out.append(json.dumps(self._rows[s], ensure_ascii=False, allow_nan=False))
            else:
                out.append(None)
        return out

    @classmethod
    def from_json_list(cls, texts: list) -> MetadataColumns:
        """Rebuild from :meth:`to_json_list` output; every entry is parsed and validated again.

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
        out.set_many(np.array(slots, dtype=np.int64), mds)
        return out


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")
