"""Metadata: what a record may carry, and the columnar layout that filters run on.

A record's metadata is a flat ``dict[str, value]`` where a value is a str, int, finite float, bool, None, or a list
(at most 1,024 items) of those scalars (SPEC section 1). No nesting beyond lists of scalars: that keeps every filter
total and every column one-dimensional.

:class:`MetadataColumns` stores, per field and per *kind* of value, one array indexed by slot:

=========  ==============================================  =====================================
kind       column                                          what filters do with it
=========  ==============================================  =====================================
``num``    float64 values + presence mask (int and float)  ``= != < <= > >=`` and ``IN``
``bool``   int8: -1 absent, 0 false, 1 true                ``= !=`` and ``IN``
``str``    object array of str (None where absent)         comparisons by code point, substring ``CONTAINS``
``null``   bool: the field is present and set to null      ``= null``, ``!= null``
``list``   an inverted index: (kind, value) -> slots       ``CONTAINS``
=========  ==============================================  =====================================

so a filter is a handful of vectorized numpy expressions, never a Python loop over records.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .config import MAX_METADATA_BYTES, MAX_METADATA_KEY_CHARS, MAX_METADATA_LIST_ITEMS
from .errors import InvalidMetadataError

KINDS = ("num", "bool", "str", "null", "list")


def _check_str(s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMetadataError(f"{what} holds a lone surrogate; strings must be valid UTF-8") from None


def _check_scalar(value, key: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_str(value, f"metadata[{key!r}]")
        return
    if type(value) is int:
        if value.bit_length() > 4000 * 3:  # far beyond any JSON number a reader can parse back
            raise InvalidMetadataError(f"metadata[{key!r}] is an integer too large to store")
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise InvalidMetadataError(f"metadata[{key!r}] is {value}; only finite numbers are stored")
        return
    raise InvalidMetadataError(
        f"metadata[{key!r}] is a {type(value).__name__}; values must be str, int, float, bool, None "
        "or a list of those (convert numpy scalars with .item())"
    )


def validate_metadata(md) -> dict | None:
    """Check ``md`` against the rules of SPEC section 1 and return an owned copy (lists copied)."""
    if md is None:
        return None
    if not isinstance(md, dict):
        raise InvalidMetadataError(f"metadata must be a dict or None, got {type(md).__name__}")
    out = {}
    for key, value in md.items():
        if not isinstance(key, str):
            raise InvalidMetadataError(f"metadata keys must be str, got {type(key).__name__}")
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise InvalidMetadataError(f"metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")
        _check_str(key, "a metadata key")
        if isinstance(value, list):
            if len(value) > MAX_METADATA_LIST_ITEMS:
                raise InvalidMetadataError(f"metadata[{key!r}] has {len(value)} items; at most "
                                           f"{MAX_METADATA_LIST_ITEMS} are allowed")
            for item in value:
                if isinstance(item, list):
                    raise InvalidMetadataError(f"metadata[{key!r}] nests a list; only lists of scalars are stored")
                _check_scalar(item, key)
            out[key] = list(value)
        else:
            _check_scalar(value, key)
            out[key] = value
    try:
        size = len(json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise InvalidMetadataError(f"metadata is not JSON-serializable: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return out


def kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, str):
        return "str"
    return "list"


def value_key(value):
    """A hashable key under which a list item is indexed: numbers as float (1 and 1.0 are one value)."""
    k = kind_of(value)
    return (k, float(value)) if k == "num" else (k, value)


class _Field:
    """The columns of one field, allocated per kind on first use."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.num: np.ndarray | None = None
        self.num_present: np.ndarray | None = None
        self.bool: np.ndarray | None = None
        self.str: np.ndarray | None = None
        self.null: np.ndarray | None = None
        self.list_present: np.ndarray | None = None
        self.items: dict[tuple, set[int]] = {}  # list items -> slots holding them
        self.kinds: set[str] = set()

    def reserve(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        for name, fill in (("num", np.nan), ("num_present", False), ("bool", -1), ("str", None), ("null", False),
                           ("list_present", False)):
            arr = getattr(self, name)
            if arr is not None:
                new = np.full(capacity, fill, dtype=arr.dtype)
                new[:old] = arr
                setattr(self, name, new)
        self.capacity = capacity

    def put(self, slot: int, value) -> None:
        k = kind_of(value)
        self.kinds.add(k)
        if k == "num":
            if self.num is None:
                self.num = np.full(self.capacity, np.nan)
                self.num_present = np.zeros(self.capacity, dtype=bool)
            self.num[slot] = float(value)
            self.num_present[slot] = True
        elif k == "bool":
            if self.bool is None:
                self.bool = np.full(self.capacity, -1, dtype=np.int8)
            self.bool[slot] = int(value)
        elif k == "str":
            if self.str is None:
                self.str = np.full(self.capacity, None, dtype=object)
            self.str[slot] = value
        elif k == "null":
            if self.null is None:
                self.null = np.zeros(self.capacity, dtype=bool)
            self.null[slot] = True
        else:
            if self.list_present is None:
                self.list_present = np.zeros(self.capacity, dtype=bool)
            self.list_present[slot] = True
            for item in value:
                self.items.setdefault(value_key(item), set()).add(slot)

    def drop(self, slot: int, value) -> None:
        k = kind_of(value)
        if k == "num":
            self.num[slot] = np.nan
            self.num_present[slot] = False
        elif k == "bool":
            self.bool[slot] = -1
        elif k == "str":
            self.str[slot] = None
        elif k == "null":
            self.null[slot] = False
        else:
            self.list_present[slot] = False
            for item in value:
                slots = self.items.get(value_key(item))
                if slots is not None:
                    slots.discard(slot)


class MetadataColumns:
    """Columnar metadata by slot (see the module docstring)."""

    def __init__(self, capacity: int = 1024):
        self.capacity = max(1, int(capacity))
        self.fields_: dict[str, _Field] = {}
        self.rows: dict[int, dict] = {}  # slot -> the metadata set there (None is not stored)

    def reserve(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for f in self.fields_.values():
            f.reserve(capacity)
        self.capacity = capacity

    def clear(self, slot: int) -> None:
        old = self.rows.pop(slot, None)
        if old:
            for key, value in old.items():
                self.fields_[key].drop(slot, value)

    def set(self, slot: int, md: dict | None) -> None:
        """Replace the metadata of ``slot`` entirely."""
        slot = int(slot)
        if slot >= self.capacity:
            self.reserve(max(slot + 1, 2 * self.capacity))
        self.clear(slot)
        if not md:
            return
        self.rows[slot] = md
        for key, value in md.items():
            f = self.fields_.get(key)
            if f is None:
                f = self.fields_[key] = _Field(self.capacity)
            f.put(slot, value)

    def set_many(self, slots: np.ndarray, mds: list) -> None:
        if len(slots):
            self.reserve(max(self.capacity, int(np.max(slots)) + 1))
        for slot, md in zip(np.asarray(slots).tolist(), mds):
            self.set(slot, md)

    def get(self, slot: int) -> dict | None:
        md = self.rows.get(int(slot))
        return None if md is None else {k: (list(v) if isinstance(v, list) else v) for k, v in md.items()}

    def fields(self) -> dict[str, set[str]]:
        """Field name -> the kinds of value it has ever held."""
        return {name: set(f.kinds) for name, f in self.fields_.items()}

    def field(self, name: str) -> _Field | None:
        return self.fields_.get(name)

    def take(self, slots: np.ndarray) -> MetadataColumns:
        """A new instance where slot i holds what ``slots[i]`` holds here (compaction renumbers slots)."""
        out = MetadataColumns(max(1, len(slots)))
        out.set_many(np.arange(len(slots)), [self.rows.get(int(s)) for s in slots])
        return out
