"""Every Python code block in docs/ and README.md runs (the convention is in tests/docs_blocks.py).

Each page runs in its own process, in a temporary directory, with a time limit: a page is one reader's session.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from docs_blocks import python_blocks, run_page

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_TIMEOUT_S = 600  # generous: a page builds a few small stores; the bound only stops a hang
PAGES = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
PAGES.append("README.md")


def _pages_with_code() -> list[str]:
    out = []
    for rel in PAGES:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            if python_blocks(f.read()):
                out.append(rel)
    return out


@pytest.mark.parametrize("page", _pages_with_code())
def test_page_code_blocks_run(page):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "docs_blocks.py"), os.path.join(ROOT, page)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-6000:] + out.stdout[-2000:]


def test_the_pages_that_teach_have_code_that_runs():
    pages = set(_pages_with_code())
    for page in ("README.md", "docs/getting-started.md", "docs/guide/api.md", "docs/guide/filters.md",
                 "docs/guide/batches-ttl-compaction.md", "docs/concepts/exact-index.md",
                 "docs/concepts/cost-model.md", "docs/concepts/ttl-compaction.md", "docs/reading-path.md"):
        assert page in pages, page


def test_every_skip_has_a_reason():
    for rel in PAGES:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            for block in python_blocks(f.read()):
                if block.skip is not None:
                    assert block.skip, f"{rel}:{block.line}: docs-test skip without a reason"


# --- the runner itself --------------------------------------------------------------------------------------------

PAGE = '''# A page

```python
x = 1
```

<!-- docs-test: setup
y = x + 1
-->

```python
assert y == 2
z = y * 10
```

<!-- docs-test: skip needs a server -->
```python
raise SystemExit("never run")
```

```python
>>> z + 1
21
```

```bash
exit 1
```
'''


def test_runner_reads_directives():
    blocks = python_blocks(PAGE)
    assert [b.line for b in blocks] == [3, 11, 17, 21]
    assert blocks[1].setup.strip() == "y = x + 1"
    assert blocks[2].skip == "needs a server"
    assert blocks[3].is_doctest and blocks[0].setup == "" and blocks[0].skip is None


def test_runner_runs_a_page_and_reports_failures(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    assert run_page(str(page)) == []
    page.write_text(PAGE.replace("21\n", "22\n"), encoding="utf-8")
    failures = run_page(str(page))
    assert len(failures) == 1 and ":21:" in failures[0] and "Expected" in failures[0]
    page.write_text(PAGE.replace("assert y == 2", "assert y == 3"), encoding="utf-8")
    failures = run_page(str(page))
    assert len(failures) == 1 and ":11:" in failures[0] and "AssertionError" in failures[0]


def test_runner_runs_in_a_temporary_directory(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nimport os\nopen('made-here.txt', 'w').close()\nassert os.getcwd() != "
                    f"{str(tmp_path)!r}\n```\n", encoding="utf-8")
    assert run_page(str(page)) == []
    assert not (tmp_path / "made-here.txt").exists()
