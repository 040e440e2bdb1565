"""The docs stay in step with the code: every CLI command and public name is documented, and mkdocs builds
with --strict."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

import vecstore_ref as vs
from vecstore_ref.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def test_every_cli_command_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    page = read("docs/guide/cli.md")
    for name in sub.choices:
        assert f"vecstore-ref {name}" in page, name


def test_every_public_name_is_documented():
    text = "".join(read(os.path.join("docs", p)) for p in ("guide/api.md", "guide/batches-ttl-compaction.md",
                                                        "guide/filters.md", "reference.md"))
    documented_by_reference = {"VecStore", "HNSWParams", "CompactionConfig", "CheckpointConfig", "Maintenance",
                               "parse_filter"}
    for name in vs.__all__:
        if name in documented_by_reference or name.endswith("Error") or name in vs.types.__all__:
            continue  # rendered from docstrings by mkdocstrings (reference.md)
        assert name in text, name


SPHINX_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|mod|attr|exc|data|obj):`")


def test_docstrings_hold_no_sphinx_roles():
    """Docstrings are Markdown (STYLE.md 2.3): `code`, or mkdocstrings cross-references such as
    [`VecStore.query`][vecstore_ref.VecStore.query]; a Sphinx role (:meth:`x`) shows as raw text in the reference."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "vecstore_ref", "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        with open(path, encoding="utf-8") as f:
            found += [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(f, 1)
                      if SPHINX_ROLE.search(line)]
    assert not found, "\n".join(found)


def test_readme_first_screen_has_the_two_commands():
    first_screen = "\n".join(read("README.md").splitlines()[:20])
    assert "vecstore-ref demo" in first_screen
    assert "python -m pytest" in first_screen


def mkdocs_installed() -> bool:
    """mkdocs importable by this interpreter: it runs as ``python -m mkdocs``, so whether its script is on PATH
    (a venv not activated) does not matter."""
    return importlib.util.find_spec("mkdocs") is not None


@pytest.mark.skipif(not mkdocs_installed() and not os.environ.get("CI"), reason="mkdocs not installed")
def test_mkdocs_build_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
