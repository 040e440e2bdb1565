"""The reliability rows added by the hardening work (benchmarks/reliability.py): symbolic-link attacks and name
rules hold at zero failures, and the HTTP fuzz reaches every route of the app."""

from __future__ import annotations

import pytest

from benchmarks import reliability


def test_symlink_attacks_row(tmp_path):
    row = reliability.symlink_attacks(str(tmp_path))
    assert row["attacks"] >= 40
    assert row["unexpected"] == [] and row["untyped"] == 0 and row["outside_changed"] == 0
    assert row["refused"] + row["ok_without_following"] == row["attacks"]


def test_name_rules_row(tmp_path):
    row = reliability.name_rules(str(tmp_path))
    assert row["calls"] >= 300
    assert row["refused"] == row["calls"] and row["untyped"] == 0 and row["disk_changes"] == 0


def test_the_http_fuzz_covers_every_route(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from vecstore_ref.http_api import create_app

    app = create_app(str(tmp_path / "count"))
    n_routes = sum(len(item) for item in app.openapi()["paths"].values())  # every documented route and method
    app.state.manager.close()
    assert n_routes >= 32
    row = reliability.http_fuzz(str(tmp_path), per_route=3, seed=1)
    assert row["routes"] == n_routes
    assert row["tried"] == 3 * n_routes + len(reliability._FUZZ_KNOWN)
    assert row["client_errors"] + row["server_errors"] <= row["tried"]
    assert len(row["examples"]) == min(5, row["server_errors"])
    again = reliability.http_fuzz(str(tmp_path / "again"), per_route=3, seed=1)  # seeded: the same answers
    assert (again["client_errors"], again["server_errors"]) == (row["client_errors"], row["server_errors"])
