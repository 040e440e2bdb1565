"""`/docs` in a real browser: headless Chromium loads the page from a real `vecstore-ref serve`, Swagger UI renders
every route from `/openapi.json`, and no request goes anywhere but 127.0.0.1.

Chromium resolves no other host during the test (`--host-resolver-rules`), so nothing can leave the machine; its
network log then shows whether the page asked for anything elsewhere (a CDN, a validator), which is the failure
this test is for. (The browser's own background requests, for updates or accounts, are not the page's and are
told apart by their network isolation key.) Skipped when no Chromium is installed (CI installs Debian's `chromium`, see `.ci/run`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
from http_helpers import free_port

pytest.importorskip("fastapi")
pytest.importorskip("fastapi_offline", reason="the [server] extra ships the Swagger UI assets")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium)")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vecstore_ref", "serve", "--data", str(tmp_path / "data"),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _page_requests(netlog: dict) -> set[str]:
    """The URLs of every request the page made: those whose top frame is the page's site (the browser's own
    background requests, for updates or accounts, have another network isolation key)."""
    start_job = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = set()
    for event in netlog["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and params.get("network_isolation_key", "").startswith("http://127.0.0.1 "):
            urls.add(params["url"])
    return urls


def test_docs_renders_every_route_with_no_request_beyond_localhost(server, tmp_path):
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=30) as r:
        schema = json.loads(r.read())
    routes = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    netlog = tmp_path / "netlog.json"
    out = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--log-net-log={netlog}",
         "--virtual-time-budget=30000", "--dump-dom", f"{server}/docs"],
        capture_output=True, timeout=300, check=False)
    dom = out.stdout.decode("utf-8", "replace")
    assert "swagger-ui" in dom, out.stderr.decode("utf-8", "replace")[-2000:]
    shown = set(re.findall(r'class="opblock-summary-method">(\w+)</span>.*?data-path="([^"]+)"', dom))
    assert shown == routes, routes ^ shown  # every route rendered, and nothing else
    urls = _page_requests(json.loads(netlog.read_text()))
    assert {urlsplit(u).path for u in urls} >= {"/docs", "/docs/assets/swagger-ui-bundle.js",
                                                 "/docs/assets/swagger-ui.css", "/openapi.json"}
    assert {urlsplit(u).hostname for u in urls} == {"127.0.0.1"}, urls
