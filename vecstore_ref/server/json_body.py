"""Strict JSON in, safe JSON out: what the HTTP API accepts as a body, and how it writes every answer.

The parser is `orjson`, which already refuses what `json.loads` lets through: the literals `NaN` and `Infinity`,
numbers that overflow a 64-bit float (`1e400`, a 400-digit integer), and lone surrogates (`"\\ud800"`), which
are not text. Two rules are added here. An integer must fit in 64 bits (signed or unsigned): `orjson` would read a
longer one as a float and silently round it. And no object may repeat a key, the case RFC 8259 leaves open
(`orjson` keeps the last, as `json.loads` does): a client that sends `{"id": "a", "id": "b"}` means something we
cannot know. Both checks are cheap. Only a body with an integer literal of 19 digits or more can hold one, and only such a
body is parsed a second time to look. For duplicates, the keys of the body are counted twice, in the raw bytes and
in the parsed value written back by `orjson`; parsing can only lose keys through duplicates, so the counts differ
exactly when there was one, and only then is the body parsed a second, slow way to name the key.

The encoder writes with `orjson` (numpy arrays and scalars included). Should a value hold text that is not valid
UTF-8 (a lone surrogate that reached a message), it falls back to ASCII-escaped JSON, so writing an answer never
fails.
"""

from __future__ import annotations

import json
import re

import orjson

from ..errors import InvalidArgumentError

# One JSON string token, and whether a colon follows it (then it is a key). Outside strings JSON has no quotes,
# so matching string after string from the left tokenizes a valid document exactly.
_STRING_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?', re.DOTALL)
# The same for a body orjson refused, where a string may be unterminated: such a string runs to the end of the
# body. Without that, each quote inside it would start a scan to the end, and a body of escaped quotes
# ('"\\"\\"...' without a closing one) took time quadratic in its length, on the event loop (12 s for 64 KB).
_STRING_OR_TAIL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NON_FINITE_LITERAL = re.compile(rb"(?<![\w.])-?(?:NaN|Infinity)(?![\w.])")
# A run of 19 digits or more not after a decimal point may be an integer that does not fit in 64 bits (-(2**63)
# and 2**64 have 19 and 20 digits). Found by mapping digits to "d", "." to itself and every other byte to " ":
# bytes.translate and bytes.find run at C speed, where a regular expression costs more than the parse.
_DIGITS_AND_POINTS = bytes(ord("d") if chr(b).isdigit() and b < 128 else b if b == ord(".") else ord(" ")
                           for b in range(256))
_LONG_INTEGER = b" " + b"d" * 19
INT_RANGE = (-(2**63), 2**64 - 1)


class InvalidJSONError(InvalidArgumentError):
    """The body is not a JSON document we accept (answered as its public base class)."""

    code = "invalid_json"


def _count_keys(document: bytes) -> int:
    return sum(1 for colon in _STRING_TOKEN.findall(document) if colon)


def _check_int(text: str) -> int:
    value = int(text)
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise InvalidJSONError(f"the integer {text[:30]}{'...' if len(text) > 30 else ''} does not fit in 64 bits")
    return value


def _duplicate_key(raw: bytes) -> str | None:
    found: list[str] = []

    def pairs(items):
        seen = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return dict(items)

    _slow_parse(raw, object_pairs_hook=pairs)
    return found[0] if found else None


def _slow_parse(raw: bytes, **hooks) -> None:
    """`json.loads` with hooks, on a body `orjson` accepted (so only its depth can make it fail)."""
    try:
        json.loads(raw, **hooks)
    except RecursionError:
        raise InvalidJSONError("the body is nested too deeply") from None


def parse_json(raw: bytes):
    """The JSON value of ``raw``, strictly (see the module docstring).

    Raises:
        InvalidJSONError: malformed JSON, a non-finite number or one that overflows, an integer beyond 64 bits, a
            lone surrogate, or a duplicate key.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if _NON_FINITE_LITERAL.search(_STRING_OR_TAIL.sub(b'""', raw)):  # outside strings
            raise InvalidJSONError("the body is not valid JSON: NaN and Infinity are not JSON numbers") from None
        reason = str(exc)
        if reason.startswith("number is infinity"):
            reason = "a number does not fit a 64-bit float" + reason[len("number is infinity when parsed as double"):]
        raise InvalidJSONError(f"the body is not valid JSON: {reason}") from None
    if (b" " + raw).translate(_DIGITS_AND_POINTS).find(_LONG_INTEGER) >= 0:
        _slow_parse(raw, parse_int=_check_int)
    if isinstance(value, (dict, list)):
        try:
            written = orjson.dumps(value)
        except TypeError:  # orjson writes at most 254 levels; no body of this API needs more than 5
            raise InvalidJSONError("the body is nested too deeply") from None
        if _count_keys(raw) != _count_keys(written):
            raise InvalidJSONError(f"duplicate key {_duplicate_key(raw)!r} in a JSON object of the body")
    return value


def parse_json_object(raw: bytes) -> dict:
    """`parse_json` for a body that must be a JSON object."""
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise InvalidJSONError(f"the body must be a JSON object, got {json_type(value)}")
    return value


def encode_json(value) -> bytes:
    """``value`` as JSON bytes; never fails on text that is not valid UTF-8 (it is escaped instead)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value, ensure_ascii=True, allow_nan=False, default=_plain).encode("ascii")


def _plain(value):
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if tolist is None:
        raise TypeError(f"{type(value).__name__} is not JSON")
    return tolist()


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages ("a string", "a boolean" ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
