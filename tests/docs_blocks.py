"""Run the Python code blocks of a Markdown page, the way a reader would paste them, in order.

The convention (also in docs/internals.md, "Code blocks in the docs"):

- Every fenced block whose info string starts with ``python`` runs. The blocks of one page run in order in one
  namespace, like one interpreter session, in a fresh temporary directory (so ``./data/...`` paths land there).
- A block whose first line starts with ``>>>`` is a doctest: its outputs are compared (ELLIPSIS and
  NORMALIZE_WHITESPACE are on).
- A hidden HTML comment just before a block (blank lines may separate them) changes how it runs:
  ``<!-- docs-test: setup ... -->`` runs the Python between ``setup`` and ``-->`` first, in the same namespace
  (the few lines a fragment needs, invisible on the rendered page);
  ``<!-- docs-test: skip REASON -->`` does not run the block; REASON is required (e.g. "needs a running server").
- Imports resolve as from the repository root (``benchmarks`` and ``vecstore_ref`` are importable).
- A page that fails reports the block's line number and the exception.

    python tests/docs_blocks.py docs/guide/api.md      # run one page's blocks (what the test does, per page)
"""

from __future__ import annotations

import doctest
import os
import re
import sys
import tempfile
import textwrap
import traceback
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<kind>setup|skip)\b(?P<body>.*?)-->", re.S)


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    setup: str = ""
    skip: str | None = None  # the reason, when skipped

    @property
    def is_doctest(self) -> bool:
        return self.code.lstrip().startswith(">>>")


def python_blocks(text: str) -> list[Block]:
    """The page's Python blocks, each with the directive comment that precedes it (if any)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    last_end = 0  # character offset just after the previous block (or the start)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), m.group("indent")
        info = m.group("info").strip().lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:j])
        if info.split(" ")[0].split("{")[0] in ("python", "py", "pycon"):
            between = text[last_end:offsets[i]]
            block = Block(i + 1, textwrap.dedent(body))
            directives = list(DIRECTIVE.finditer(between))
            if directives and not between[directives[-1].end():].strip():
                d = directives[-1]
                if d.group("kind") == "skip":
                    block.skip = d.group("body").strip()
                else:
                    block.setup = textwrap.dedent(d.group("body").strip("\n"))
            blocks.append(block)
        last_end = offsets[min(j + 1, len(lines))]
        i = j + 1
    return blocks


def run_page(path: str) -> list[str]:
    """Run every block of ``path``; returns the failures (empty when all ran)."""
    with open(path, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    failures = []
    namespace: dict = {"__name__": "__docs__"}
    here = os.getcwd()
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for block in blocks:
                if block.skip is not None:
                    if not block.skip:
                        failures.append(f"{path}:{block.line}: a skipped block needs a reason")
                    continue
                where = f"{path}:{block.line}"
                try:
                    if block.setup:
                        exec(compile(block.setup, f"{where} (setup)", "exec"), namespace)
                    if block.is_doctest:
                        failures += _run_doctest(block, namespace, where)
                    else:
                        exec(compile(block.code, where, "exec"), namespace)
                except Exception:
                    failures.append(f"{where}:\n{traceback.format_exc(limit=-3)}")
                    break  # later blocks build on this one
        finally:
            for value in list(namespace.values()):
                close = getattr(value, "close", None)
                if callable(close) and type(value).__module__.startswith("vecstore_ref"):
                    try:
                        close()
                    except Exception:
                        pass
            os.chdir(here)
    return failures


def _run_doctest(block: Block, namespace: dict, where: str) -> list[str]:
    test = doctest.DocTestParser().get_doctest(block.code, namespace, where, where, 0)
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=out.append, clear_globs=False)
    return [f"{where}:\n{''.join(out)}"] if runner.failures else []


def main(argv: list[str]) -> int:
    failures = []
    for path in argv:
        failures += run_page(os.path.abspath(path))
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
