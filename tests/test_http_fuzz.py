"""A bounded fuzz of every route (benchmarks/http_fuzz.py): no input gets a 5xx, and every 4xx is a JSON error."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("orjson")

from benchmarks.http_fuzz import Generator, fuzz  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1])
def test_no_fuzzed_request_gets_a_5xx(seed):
    report = fuzz(600, seed)
    assert report.requests == 600
    assert report.server_errors == 0, report.examples
    assert report.bad_error_bodies == 0, report.examples
    assert sum(n for status, n in report.by_status.items() if 400 <= status < 500) > 100  # it did attack
    assert report.by_status.get(200, 0) > 20  # and it did reach the routes' work


def test_the_fuzzer_reaches_every_route():
    from vecstore_ref.server import create_app

    app = create_app(str(pytest.importorskip("tempfile").mkdtemp()) + "/data")
    try:
        gen = Generator(app.openapi(), seed=0)
        reached = {(m, p) for m, p, _ in gen.operations}
        documented = {(m.upper(), p) for p, item in app.openapi()["paths"].items() for m in item}
        assert reached == documented
        chosen = set()
        for _ in range(3000):
            method, path, _, _ = gen.request()
            chosen.add(method)
        assert {"GET", "POST", "PUT", "DELETE"} <= chosen
    finally:
        app.state.manager.close()
