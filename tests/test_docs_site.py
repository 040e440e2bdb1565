"""The built site as a reader sees it: headless Chromium loads pages and checks that their figures rendered.

Builds the site with ``python -m mkdocs build --strict``, serves it on 127.0.0.1, opens the home page, the HNSW
concept page and the benchmarks page in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven
by selenium), and checks that every image loaded (``naturalWidth > 0``) and that each page shows the figures it
should. It also reads the rendered API reference and HTTP guide for raw Sphinx roles and escaped pipes.
Screenshots are written to the test's temporary directory. CI installs Chromium (.ci/run); elsewhere the test is
skipped when Chromium or selenium is missing.
"""

from __future__ import annotations

import functools
import glob
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ROLE = re.compile(r":(meth|class|func|mod|attr|exc):`")

try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM) and not os.environ.get("CI"),
    reason="headless Chromium, chromedriver and selenium are needed (apt-get install chromium chromium-driver; "
           "pip install selenium)")

PAGES = {  # page -> figures it must show
    "index.html": {"hnsw-search.svg"},
    "concepts/hnsw/index.html": {"hnsw-layers.svg", "hnsw-search.svg"},
    "benchmarks/index.html": {"ann-recall-qps.svg", "ann-build-memory.svg", "filtered.svg"},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2400", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)  # no driver download
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@needs_browser
@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_shows_its_figures(page, server, browser, tmp_path):
    browser.get(server + page)
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth,"
        " i.getBoundingClientRect().width]);")
    shown = {os.path.basename(src) for src, complete, natural, width in images if complete and natural > 0
             and width > 100}
    broken = [src for src, complete, natural, _ in images if not complete or natural == 0]
    assert not broken, f"{page}: images that did not load: {broken}"
    assert PAGES[page] <= shown, f"{page}: missing figures {PAGES[page] - shown}; shown {shown}"
    shot = tmp_path / (page.replace("/", "_") + ".png")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000  # a blank page is ~5 KB


@needs_browser
def test_no_code_block_is_cut_off(site, server, browser):
    """At a 1280-pixel window no code block needs a horizontal scroll bar (a literal one-line manifest aside)."""
    browser.set_window_size(1280, 1000)
    pages = sorted(os.path.relpath(p, site) for p in glob.glob(str(site / "**" / "index.html"), recursive=True))
    assert len(pages) > 15
    cut = []
    for page in pages:
        browser.get(server + page)
        cut += [(page, text) for text in browser.execute_script(
            "return Array.from(document.querySelectorAll('pre > code'))"
            ".filter(e => !e.closest('.mermaid') && !e.textContent.startsWith('stateDiagram'))"  # diagrams
            ".filter(e => e.scrollWidth > e.clientWidth + 2 && !e.textContent.includes('VSREF-MANIFEST'))"
            ".map(e => e.textContent.slice(0, 80));")]
    browser.set_window_size(1280, 2400)
    assert not cut, cut


CODE_LINE_MAX = 94  # characters of a code block that fit the text column at a 1280-pixel window (extra.css)


def test_code_lines_fit_the_page():
    """The static twin of the browser check above, for machines without Chromium."""
    long_lines = []
    for path in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True):
        fence = None  # None outside a block; "mermaid" (drawn as a diagram, not shown as code) or "code"
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.lstrip().startswith("```"):
                    fence = None if fence else ("mermaid" if line.lstrip().startswith("```mermaid") else "code")
                elif fence == "code" and len(line.rstrip("\n")) > CODE_LINE_MAX and "snapshot_seq\":" not in line:
                    long_lines.append(f"{os.path.relpath(path, ROOT)}:{number}")
    assert not long_lines, long_lines


def test_rendered_reference_has_no_raw_sphinx_roles(site):
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    assert "VecStore" in html and not ROLE.search(html)
    assert html.count('class="autorefs autorefs-internal"') > 10  # the roles became links


def test_rendered_http_guide_has_no_escaped_pipe(site):
    html = (site / "guide" / "http" / "index.html").read_text(encoding="utf-8")
    assert "\\|" not in html and "batch-execute" in html
