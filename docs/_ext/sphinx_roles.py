"""A Griffe extension for the API reference: Sphinx roles left in docstrings become cross-reference links.

The docstrings are Google style in Markdown (STYLE.md 2.3), but some still say ``:meth:`VecStore.open```; rendered
as they are, those show as raw text. This rewrites each role, when the docs are built, as an *optional*
mkdocs-autorefs reference: a link where the target is on a rendered page, plain code where it is not (a private
kernel, say), and never a warning. Once no docstring holds a role, this extension has nothing to do; the docs
test (tests/test_docs_site.py) checks that the built reference shows none.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?P<role>meth|class|func|mod|attr|exc|data|obj):`(?P<target>[^`]+)`")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full dotted path ``target`` names when written in ``obj``'s docstring (best effort)."""
    if target.startswith("vecstore_ref"):
        return target
    module = obj.module if not isinstance(obj, griffe.Module) else obj
    if target.startswith("."):  # relative to the package of the module
        package = module.path if module.is_package else module.path.rsplit(".", 1)[0]
        return f"{package}.{target.lstrip('.')}"
    head, _, rest = target.partition(".")
    for scope in (obj, module):
        try:
            full = scope.resolve(head)
        except Exception:  # griffe's NameResolutionError, or a scope that cannot resolve
            continue
        return f"{full}.{rest}" if rest else full
    return f"vecstore_ref.{target}"


def rewrite(obj: griffe.Object, text: str) -> str:
    def link(m: re.Match) -> str:
        target = m.group("target").strip()
        short = target.startswith("~")
        target = target.lstrip("~")
        title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        if m.group("role") in ("meth", "func"):
            title += "()"
        identifier = _resolve(obj, target)
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'

    return ROLE.sub(link, text)


class SphinxRolesToLinks(griffe.Extension):
    """Rewrite the roles of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
