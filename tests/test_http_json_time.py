"""The strict JSON parser refuses a malformed body in time linear in its length: bodies up to 256 KiB are parsed
on the event loop, so a slow refusal holds up every client."""

from __future__ import annotations

import time

import pytest

from vecstore_ref.server.json_body import InvalidJSONError, parse_json


@pytest.mark.parametrize("unit", [b'\\"', b'"\\', b'\\\\"'], ids=["escaped-quotes", "quote-backslash", "mixed"])
@pytest.mark.parametrize("n", [32_000, 128_000])
def test_an_unterminated_string_of_escaped_quotes_is_refused_quickly(unit, n):
    raw = b'{"a":"' + unit * n  # invalid: no closing quote
    t0 = time.perf_counter()
    with pytest.raises(InvalidJSONError):
        parse_json(raw)
    assert time.perf_counter() - t0 < 1.0


def test_nan_outside_strings_is_still_named_after_an_unterminated_string():
    with pytest.raises(InvalidJSONError, match="NaN and Infinity"):
        parse_json(b'{"a":NaN,"b":"x\\"')
    with pytest.raises(InvalidJSONError) as info:
        parse_json(b'{"a":"NaN \\"')  # NaN inside a string, unterminated: not a literal
    assert "NaN and Infinity" not in str(info.value)
