"""Strict JSON in, safe JSON out: what the HTTP API accepts as a body, and how it writes every answer.

The parser is `orjson`, which already refuses what `json.loads` lets through: the literals `NaN` and `Infinity`,
numbers that overflow a 64-bit float (`1e400`, a 400-digit integer), and lone surrogates (`"\\ud800"`), which
are not text. One rule it does not check is the one RFC 8259 leaves open: duplicate keys (it keeps the last, as
`json.loads` does). A client that sends `{"id": "a", "id": "b"}` means something we cannot know, so the body is
refused. The check is cheap: the keys of the body are counted twice, in the raw bytes and in the parsed value
written back by `orjson`; parsing can only lose keys through duplicates, so the counts differ exactly when there
was one. Only then is the body parsed a second, slow way to name the key.

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
_NON_FINITE_LITERAL = re.compile(rb"(?<![\w.])-?(?:NaN|Infinity)(?![\w.])")


class InvalidJSONError(InvalidArgumentError):
    """The body is not a JSON document we accept (answered as its public base class)."""

    code = "invalid_json"


def _count_keys(document: bytes) -> int:
    return sum(1 for colon in _STRING_TOKEN.findall(document) if colon)


def _duplicate_key(raw: bytes) -> str | None:
    found: list[str] = []

    def pairs(items):
        seen = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return found[0] if found else None


def parse_json(raw: bytes):
    """The JSON value of ``raw``, strictly (see the module docstring).

    Raises:
        InvalidJSONError: malformed JSON, a non-finite number or one that overflows, a lone surrogate, or a
            duplicate key.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if _NON_FINITE_LITERAL.search(_STRING_TOKEN.sub(b'""', raw)):  # outside strings
            raise InvalidJSONError("the body is not valid JSON: NaN and Infinity are not JSON numbers") from None
        reason = str(exc)
        if reason.startswith("number is infinity"):
            reason = "a number does not fit a 64-bit float" + reason[len("number is infinity when parsed as double"):]
        raise InvalidJSONError(f"the body is not valid JSON: {reason}") from None
    if isinstance(value, (dict, list)) and _count_keys(raw) != _count_keys(orjson.dumps(value)):
        key = _duplicate_key(raw)
        raise InvalidJSONError(f"duplicate key {key!r} in a JSON object of the body")
    return value


def parse_json_object(raw: bytes) -> dict:
    """:func:`parse_json` for a body that must be a JSON object."""
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
