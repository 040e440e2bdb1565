"""A bounded fuzz of every route of the HTTP API: no input may get a 5xx, every 4xx is a JSON error body.

The routes come from the app's own `/openapi.json`. Each request goes to one of them (or to a route with the
wrong method), with path parameters drawn from valid names and hostile text, and a body that starts valid (built
from the route's documented schema) and is then, most of the time, broken: a field replaced by another JSON value
(huge and non-finite numbers, lone surrogates, deep nesting, wrong types), a field dropped or added, or the
bytes themselves changed (duplicate keys, `NaN`, `1e400`, a 400-digit integer, `\\ud800`, invalid UTF-8, a
truncation, another content type). The app runs in this process (FastAPI's test client) on a fresh directory with
a few records, so the routes act on real data. Everything is drawn from one seeded generator: a run is repeatable.

    python -m benchmarks.http_fuzz [--requests 3000] [--seed 0]

`http_fuzz_5xx_count()` is the figure the reliability report prints; `tests/test_http_fuzz.py` asserts it is 0.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from urllib.parse import quote

DIM = 4
IDS = ["r1", "r2", "r3", "gone", "soft"]
NAMES = ["default", "fz", "fz2", "nope", "b1", "b2"]
HOSTILE_TEXT = ["", ".", "..", "../x", "a/b", "\x00", "x\n", "\u00e9", "e\u0301", "\U0001F600", "a" * 300,
                "%00", " ", "CON", "\ud800", "\udfff", "'; DROP TABLE x", "__class__", "${x}", "\\"]
HOSTILE_NUMBERS = [0, -1, 1, 2**31, 2**63, 2**64 - 1, -(2**63) - 1, 10**30, 10**400, -(10**400), 1e308, -1e308,
                   5e-324, -0.0, 0.5, 1e39, 3.0, 1e16, float("nan"), float("inf")]
HOSTILE_RAW_NUMBERS = [b"1e400", b"-1e400", b"9" * 400, b"-" + b"9" * 400, b"9" * 25, b"-9223372036854775809",
                       b"18446744073709551616", b"NaN", b"Infinity", b"-Infinity",
                       b"1e-400", b"0x10", b"01", b"1.", b".5", b"+1"]
_NUMBER = re.compile(rb"(?<=[:\[,]) ?-?[0-9][0-9.eE+-]*")


@dataclass
class FuzzReport:
    requests: int = 0
    by_status: dict = field(default_factory=dict)
    server_errors: int = 0  # answers >= 500
    bad_error_bodies: int = 0  # 4xx answers without a JSON {"error": {"type", "message"}} body
    examples: list = field(default_factory=list)  # the first failures, to reproduce them


class Generator:
    """Requests for the routes of an OpenAPI schema, from one seeded ``random.Random``."""

    def __init__(self, schema: dict, seed: int):
        self.schema = schema
        self.rng = random.Random(seed)
        self.operations = [(method.upper(), path, op) for path, item in schema["paths"].items()
                           for method, op in item.items()]

    # --- JSON values ----------------------------------------------------------------------------------------

    def any_value(self, depth: int = 0):
        r = self.rng.random()
        if r < 0.15:
            return self.rng.choice(HOSTILE_NUMBERS)
        if r < 0.3:
            return self.rng.choice(HOSTILE_TEXT)
        if r < 0.38:
            return self.rng.choice([True, False, None])
        if r < 0.5 and depth < 3:
            return [self.any_value(depth + 1) for _ in range(self.rng.randrange(4))]
        if r < 0.6 and depth < 3:
            return {self.rng.choice(HOSTILE_TEXT + ["k", "lang", "op"]): self.any_value(depth + 1)
                    for _ in range(self.rng.randrange(3))}
        if r < 0.65:
            deep: list = [0]
            for _ in range(self.rng.choice([4, 300])):
                deep = [deep]
            return deep if self.rng.random() < 0.5 else {"a": {"b": {"c": {"d": 1}}}}
        if r < 0.75:
            return [self.rng.uniform(-2, 2) for _ in range(self.rng.choice([0, DIM - 1, DIM, DIM + 1, 300]))]
        return self.rng.choice(IDS + NAMES + ["lang = 'en'", "n > 1 AND", "(" * 50, "op"])

    def from_schema(self, s: dict, depth: int = 0):
        """A value that fits schema ``s`` (the subset the app's models produce)."""
        if "$ref" in s:
            return self.from_schema(self.schema["components"]["schemas"][s["$ref"].rsplit("/", 1)[1]], depth)
        for key in ("anyOf", "oneOf"):
            if key in s:
                return self.from_schema(self.rng.choice(s[key]), depth)
        if "const" in s:
            return s["const"]
        if "enum" in s:
            return self.rng.choice(s["enum"])
        kind = s.get("type")
        if kind == "object":
            props = s.get("properties", {})
            required = set(s.get("required", []))
            out = {k: self.from_schema(v, depth + 1) for k, v in props.items()
                   if k in required or self.rng.random() < 0.4}
            if "additionalProperties" in s and isinstance(s["additionalProperties"], dict) and depth < 3:
                out.update({self.rng.choice(["lang", "n", "tags"]): self.from_schema(s["additionalProperties"],
                                                                                      depth + 1)})
            return out
        if kind == "array":
            items = s.get("items", {})
            if items.get("type") == "number":
                return [self.rng.uniform(-1, 1) for _ in range(DIM)]
            return [self.from_schema(items, depth + 1) for _ in range(self.rng.randrange(1, 4))]
        if kind == "string":
            return self.rng.choice(IDS + NAMES + ["lang = 'en'", "x"])
        if kind == "integer":
            return self.rng.choice([1, 2, 5, 10])
        if kind == "number":
            return self.rng.choice([1, 60.5, 3600])
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None

    # --- requests -------------------------------------------------------------------------------------------

    def mutate(self, value):
        """``value`` with one field replaced, dropped or added (or the whole body replaced)."""
        r = self.rng.random()
        if not isinstance(value, dict) or not value or r < 0.1:
            return self.any_value()
        key = self.rng.choice(list(value))
        if r < 0.5:
            value[key] = self.any_value()
        elif r < 0.65:
            del value[key]
        elif r < 0.8:
            value[self.rng.choice(["metdata", "top_k", "limit", "k", "op", "extra", "\ud800"])] = self.any_value()
        elif isinstance(value.get(key), list) and value[key] and isinstance(value[key][0], dict):
            value[key][self.rng.randrange(len(value[key]))] = self.mutate(value[key][0])  # inside a batch op
        else:
            value[key] = self.mutate(value[key]) if isinstance(value[key], dict) else self.any_value()
        return value

    def raw_mutation(self, body: bytes) -> bytes:
        r = self.rng.random()
        number = self.rng.choice(HOSTILE_RAW_NUMBERS)
        numbers = list(_NUMBER.finditer(body))
        if r < 0.4 and numbers:
            at = self.rng.choice(numbers)
            return body[:at.start()] + number + body[at.end():]
        if r < 0.5:
            return body.replace(b'"r1"', b'"\\ud800"').replace(b'"fz"', b'"\\udfff x"')
        if r < 0.6 and body.startswith(b"{") and len(body) > 2:  # a duplicate key
            first_key = body[1:].split(b":", 1)[0]
            return b"{" + first_key + b": 1, " + body[1:]
        if r < 0.7:
            return body[: self.rng.randrange(len(body) + 1)]
        if r < 0.8:
            return b"\xff\xfe" + body
        if r < 0.9:
            depth = self.rng.choice([100, 300, 1100, 100_000])
            return b"[" * depth + b"]" * depth
        return b"\x00" + body

    def path_value(self) -> str:
        return self.rng.choice(NAMES + IDS if self.rng.random() < 0.7 else HOSTILE_TEXT)

    def request(self) -> tuple[str, str, bytes | None, dict]:
        method, template, op = self.rng.choice(self.operations)
        if self.rng.random() < 0.05:
            method = self.rng.choice(["GET", "PUT", "PATCH", "DELETE", "POST", "HEAD", "OPTIONS"])
        path = template
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            value = self.path_value().encode("utf-8", "surrogatepass")
            path = path[:start] + quote(value, safe="") + path[end + 1:]
        headers = {"content-type": "application/json"}
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if schema is None and self.rng.random() < 0.7:
            return method, path, None, {}
        value = self.from_schema(schema) if schema is not None else {}
        if self.rng.random() < 0.75:
            value = self.mutate(value)
        body = json.dumps(value, ensure_ascii=True).encode()
        if self.rng.random() < 0.3:
            body = self.raw_mutation(body)
        if self.rng.random() < 0.05:
            headers["content-type"] = self.rng.choice(["text/plain", "application/x-www-form-urlencoded", ""])
        return method, path, body, headers


def _prepare(client) -> None:
    """A namespace `fz` with a few records in each state, besides the empty `default`."""
    def post(url, body):
        client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})

    post("/v1/namespaces", {"name": "fz", "dim": DIM, "index": "flat"})
    post("/v1/namespaces/fz/batch-execute", {"operations": [
        {"op": "upsert", "id": i, "vector": [1, 0.5, 0.25, n], "metadata": {"lang": "en", "n": n}}
        for n, i in enumerate(IDS)] + [{"op": "delete", "id": "gone"}, {"op": "soft_delete", "id": "soft"}]})
    post("/v1/namespaces/fz/backups", {"name": "b1"})


def fuzz(requests: int = 3000, seed: int = 0, *, max_examples: int = 10) -> FuzzReport:
    """Send ``requests`` generated requests to a fresh app (see the module docstring) and count the answers."""
    from fastapi.testclient import TestClient

    from vecstore_ref.server import create_app

    root = tempfile.mkdtemp(prefix="vs-http-fuzz-")
    app = create_app(f"{root}/data")
    report = FuzzReport()
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            _prepare(client)
            gen = Generator(app.openapi(), seed)
            for _ in range(requests):
                method, path, body, headers = gen.request()
                r = client.request(method, path, content=body, headers=headers)
                report.requests += 1
                report.by_status[r.status_code] = report.by_status.get(r.status_code, 0) + 1
                bad = r.status_code >= 500 or (400 <= r.status_code < 500 and method != "HEAD"
                                               and not _is_error_body(r.content))
                if r.status_code >= 500:
                    report.server_errors += 1
                elif bad:
                    report.bad_error_bodies += 1
                if bad and len(report.examples) < max_examples:
                    report.examples.append({"method": method, "path": path, "status": r.status_code,
                                            "body": (body or b"")[:300].decode("utf-8", "replace"),
                                            "answer": r.text[:300]})
    finally:
        app.state.manager.close()
        shutil.rmtree(root, ignore_errors=True)
    return report


def _is_error_body(content: bytes) -> bool:
    try:
        error = json.loads(content)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str)


def http_fuzz_5xx_count(requests: int = 3000, seed: int = 0) -> int:
    """How many of ``requests`` fuzzed requests got a 5xx answer (the contract: 0)."""
    return fuzz(requests, seed).server_errors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    report = fuzz(a.requests, a.seed)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_status.items()))
    print(f"{report.requests} fuzzed requests over every route (seed {a.seed}); answers by status: {statuses}; "
          f"{report.server_errors} 5xx; {report.bad_error_bodies} 4xx without a JSON error body")
    for ex in report.examples:
        print(json.dumps(ex))
    return 1 if report.server_errors or report.bad_error_bodies else 0


if __name__ == "__main__":
    raise SystemExit(main())
