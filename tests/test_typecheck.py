"""The type check: mypy on the package and on the docs' examples, as CI runs it.

The package is checked with the configuration in pyproject.toml (``[tool.mypy]``: strict on the public API's
modules, the default checks elsewhere, the Numba kernels not analysed). The examples are checked as a reader
would type them: each page's Python blocks, with their hidden setups, in order, as one module (the blocks of a
page run in one namespace, see tests/docs_blocks.py); a name may take a value of another type in a later block,
as in an interpreter session. Skipped blocks are left out, as when the page runs. An error names the page and
its line in the Markdown file.

    python -m pytest tests/test_typecheck.py -q
"""

from __future__ import annotations

import doctest
import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest
from docs_blocks import python_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "docs_examples"  # the examples become modules of this package, one per page (see pyproject.toml)
TIMEOUT_S = 300  # only stops a hang: a run from an empty cache takes seconds

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None and not os.environ.get("CI"),
                                reason="mypy is in the [test] extra")


def docs_pages() -> list[str]:
    pages = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return pages + [os.path.join(ROOT, "README.md")]


def example_modules(pages: list[str], root: str, directory: str) -> dict[str, list[tuple[str, int]]]:
    """Write the examples of each page that has Python blocks as a module of ``directory/docs_examples``;
    returns, per module file, the ``(page relative to root, line)`` each of its lines came from."""
    package = os.path.join(directory, PACKAGE)
    os.makedirs(package, exist_ok=True)
    open(os.path.join(package, "__init__.py"), "w").close()
    sources: dict[str, list[tuple[str, int]]] = {}
    for path in pages:
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8") as f:
            blocks = [b for b in python_blocks(f.read()) if b.skip is None]
        if not blocks:
            continue
        lines: list[str] = []
        origin: list[tuple[str, int]] = []
        for block in blocks:
            for i, line in enumerate(block.setup.splitlines()):
                lines.append(line)
                origin.append((rel, block.setup_line + i))
            code = doctest.script_from_examples(block.code) if block.is_doctest else block.code
            for i, line in enumerate(code.splitlines()):  # (a doctest's lines map close to theirs)
                lines.append(line)
                origin.append((rel, block.line + 1 + i))
        module = os.path.join(package, re.sub(r"\W", "_", os.path.splitext(rel)[0]).lower() + ".py")
        with open(module, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        sources[module] = origin
    return sources


def run_mypy(paths: list[str], cache_dir: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", cache_dir, "--no-error-summary",
                           "--no-pretty", "--show-error-codes", *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)


def to_pages(output: str, sources: dict[str, list[tuple[str, int]]]) -> str:
    """mypy's output, its lines about the example modules rewritten to name the page and the page's line."""
    out = []
    for line in output.splitlines():
        m = re.match(r"(?P<file>[^:]+\.py):(?P<line>\d+): (?P<rest>.*)", line)
        origin = sources.get(os.path.abspath(os.path.join(ROOT, m.group("file")))) if m else None
        if m and origin:
            page, number = origin[min(int(m.group("line")), len(origin)) - 1]
            line = f"{page}:{number}: {m.group('rest')}"
        out.append(line)
    return "\n".join(out)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mypy-cache"))  # CI starts from a clean clone: no cache to trust


def test_package_and_docs_examples_typecheck(tmp_path, cache_dir):
    sources = example_modules(docs_pages(), ROOT, str(tmp_path))
    assert len(sources) >= 10  # the pages that teach have examples (tests/test_docs_examples.py)
    result = run_mypy(["vecstore_ref", os.path.join(str(tmp_path), PACKAGE)], cache_dir)
    assert result.returncode == 0, to_pages(result.stdout + result.stderr, sources)


def test_a_type_error_in_an_example_names_its_page_and_line(tmp_path, cache_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.md").write_text(
        "# A page\n\n<!-- docs-test: setup\nimport vecstore_ref as vs\n-->\n\n```python\n"
        "store = vs.VecStore.open('./data', dim=3)\nstore.upsert('a', [1.0, 0.0, 0.0], ttl='soon')\n```\n\n"
        "```python\n>>> store.query([1.0, 0.0, 0.0], k=1)[0].id\n'a'\n```\n", encoding="utf-8")
    sources = example_modules([str(docs / "page.md")], str(tmp_path), str(tmp_path))
    result = run_mypy([os.path.join(str(tmp_path), PACKAGE)], cache_dir)
    report = to_pages(result.stdout, sources)
    assert result.returncode == 1, report
    assert re.search(r"^docs/page\.md:9: error: .*\"ttl\".*\[arg-type\]", report, re.M), report
    assert len(re.findall(r": error: ", report)) == 1, report  # the doctest block type-checks
