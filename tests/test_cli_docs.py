"""docs/guide/cli.md keeps up with the command line: every command that `vecstore-ref --help` lists has its own
section with an example, and every option of the command is named in it."""

from __future__ import annotations

import argparse
import os
import re

from cli_helpers import ROOT, run

from vecstore_ref.cli import build_parser


def read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def sections(page: str) -> dict[str, str]:
    """``### `vecstore-ref NAME``` heading -> the text up to the next heading."""
    parts = re.split(r"^#{2,3} ", page, flags=re.M)
    out = {}
    for part in parts:
        m = re.match(r"`vecstore-ref ([a-z-]+)`\n", part)
        if m:
            out[m.group(1)] = part
    return out


def subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def options(parser: argparse.ArgumentParser) -> set[str]:
    found = {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - {"--help", "--json"}
    for name, sub in (subparsers(parser).items() if any(isinstance(a, argparse._SubParsersAction)
                                                        for a in parser._actions) else []):
        found |= options(sub) | {name}
    return found


def test_every_command_in_help_has_a_section_with_an_example():
    listed = re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", run("--help").stdout, re.M)
    assert {"ingest", "export", "import", "backup", "namespaces", "verify"} <= set(listed)
    documented = sections(read("docs/guide/cli.md"))
    missing = [name for name in listed if name not in documented]
    assert not missing, f"commands without a section in docs/guide/cli.md: {missing}"
    for name in listed:
        assert re.search(rf"^\$ vecstore-ref {name}( |$)", documented[name], re.M), f"{name}: no example"


def test_every_option_is_named_in_its_section():
    documented = sections(read("docs/guide/cli.md"))
    for name, sub in subparsers(build_parser()).items():
        absent = sorted(o for o in options(sub) if o not in documented[name])
        assert not absent, f"vecstore-ref {name}: options not documented: {absent}"


def test_the_conventions_are_documented():
    page = read("docs/guide/cli.md")
    for fact in ("--json", "--version", "no store at PATH", "| 3 |", "| 2 |", "python -m vecstore_ref"):
        assert fact in page, fact
    readme = read("README.md")
    paragraph = readme[readme.index("## Command line"):]
    for name in ("ingest", "export", "import", "backup", "verify", "--json"):
        assert name in paragraph, name
