"""Metadata: what a record may carry, and the kinds of value the filter columns hold.

A record's metadata is a flat ``dict[str, value]`` where a value is a str, int, finite float, bool, None, or a list
(at most 1,024 items) of those scalars (SPEC section 1). Nothing nests deeper than a list of scalars: that keeps
every filter total and every column one-dimensional. `validate_metadata` enforces the rules and hands back a
copy the store owns.

The columnar layout that filters run on, and the per-slot rows, are in `vecstore_ref.columns`
(`MetadataColumns`); this module holds the rules and the value kinds they share.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .config import MAX_METADATA_BYTES, MAX_METADATA_KEY_CHARS, MAX_METADATA_LIST_ITEMS
from .errors import InvalidMetadataError, InvalidMetadataTypeError

KINDS = ("str", "num", "bool", "null", "list")
_MAX_INT = 10**4300  # json.loads refuses ints of more than 4,300 digits (CPython's int_max_str_digits)
# Per-slot arrays of a field: attribute -> (the "absent" sentinel, the kind it holds, dtype).
_COLUMNS = {"num": (np.nan, "num", np.float64), "code": (-1, "str", np.int32), "flag": (-1, "bool", np.int8),
            "null": (False, "null", np.bool_), "list_version": (0, "list", np.int64)}
_COLUMNS_SPEC = _COLUMNS  # read by vecstore_ref.columns

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

    The bound lets `validate_metadata` skip the JSON encoding for the usual small dict: a character costs at
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
        raise InvalidMetadataTypeError(f"{_where(key, index)} is a nested {t.__name__}; values are scalars or lists "
                                   "of scalars")
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    hint = " (convert numpy scalars with .item())" if t.__module__ == "numpy" else ""
    raise InvalidMetadataTypeError(f"{_where(key, index)} is a {name}; values must be exactly str, int, float, bool, "
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
        raise InvalidMetadataTypeError(f"metadata must be a dict or None, got {type(md).__name__}")
    out: dict = {}
    upper = 2  # an upper bound of the JSON size: "{}" + entries
    chars = 0  # a lower bound: characters of keys and string values
    for key, value in md.items():
        if type(key) is not str:
            raise InvalidMetadataTypeError(f"metadata keys must be str, got {type(key).__name__} {key!r:.60}")
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
        # measured as the store writes it (`vecstore_ref.columns.encode_row`): compact UTF-8 JSON
        size = len(json.dumps(out, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise InvalidMetadataError(f"metadata is {size:,} bytes as JSON; the limit is {MAX_METADATA_BYTES:,}")
    return out


# --- kinds and numbers -----------------------------------------------------------------------------------------


def surely_valid_decoded(md: dict) -> bool:
    """Whether ``md``, parsed from JSON text without a backslash escape (so no string holds a lone surrogate),
    passes `validate_metadata` for certain: scalars other than huge ints, keys of 1 to 256 characters, and a size
    bound below the limit. False means "not sure", and the caller runs `validate_metadata`. A log replay calls
    this per record; it costs a fraction of the full check.
    """
    upper = 2  # an upper bound of the compact JSON size: 4 bytes of UTF-8 per character at most
    for key, value in md.items():
        t = type(value)
        if t is str:
            upper += 4 * len(value) + 3
        elif t is float:
            if value - value != 0.0:  # inf or NaN (1e999 parses as inf)
                return False
            upper += 24
        elif not (value is None or t is bool or (t is int and -(10**18) < value < 10**18)):
            return False  # a list, a dict, a huge int: judged by validate_metadata
        else:
            upper += 20
        if not 0 < len(key) <= MAX_METADATA_KEY_CHARS:
            return False
        upper += 4 * len(key) + 4
    return upper <= MAX_METADATA_BYTES


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
    raise InvalidMetadataTypeError(f"not a metadata value: {t.__name__}")


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


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def __getattr__(name: str):
    """`MetadataColumns` and `FieldColumns` moved to `vecstore_ref.columns`; importing them from here still works."""
    if name in ("MetadataColumns", "FieldColumns"):
        from . import columns

        return getattr(columns, name)
    raise AttributeError(name)
