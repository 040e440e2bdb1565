"""A symbolic link planted below the server's root is refused with a 4xx, never a 500, and nothing outside the
root is read, written or deleted."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from vecstore_ref._fs import dir_digest  # noqa: E402
from vecstore_ref.server import create_app  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("c")
    root = tmp_path / "data"
    app = create_app(str(root))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/namespaces/default/backups", content=json.dumps({"name": "b1"}),
                   headers={"content-type": "application/json"})
        assert r.status_code == 200
        yield c, root, outside
    app.state.manager.close()


def _refused(r) -> None:
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()) == {"error"}


def test_a_backup_that_is_a_link_is_a_4xx(setup):
    c, root, outside = setup
    os.symlink(outside, root / "default" / "backups" / "evil")
    before = dir_digest(str(outside))
    _refused(c.post("/v1/namespaces/default/backups/evil/restore"))
    _refused(c.delete("/v1/namespaces/default/backups/evil"))
    assert dir_digest(str(outside)) == before


def test_a_backups_directory_that_is_a_link_is_a_4xx(setup):
    c, root, outside = setup
    backups = root / "default" / "backups"
    os.rename(backups, root / "default" / "backups.real")
    os.symlink(outside, backups)
    before = dir_digest(str(outside))
    _refused(c.get("/v1/namespaces/default/backups"))
    _refused(c.post("/v1/namespaces/default/backups", content=json.dumps({"name": "b2"}),
                    headers={"content-type": "application/json"}))
    _refused(c.post("/v1/namespaces/default/backups/b1/restore"))
    _refused(c.delete("/v1/namespaces/default/backups/b1"))
    assert dir_digest(str(outside)) == before
