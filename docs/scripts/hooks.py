"""MkDocs hooks: include root Markdown files with working links; plain code for docstring roles.

* ``--8<-- "BENCHMARKS.md"`` alone on a line includes a file of the repository root (written
  by scripts, readable on its own) with its links rewritten for the page that includes it:
  ``docs/...`` targets become relative to the page; targets elsewhere in the repository have
  no page on the site, so those links keep only their text.
* The docstrings are written for both ``help()`` and Sphinx-style readers, so they contain
  roles such as ``:func:`predict``` and ``:math:`y = m x / q```. The Google-style parser of
  mkdocstrings keeps the role name in front of the code span; the roles are dropped (and
  Sphinx's ``~`` prefix).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_INCLUDE = re.compile(r'^--8<-- "([^":/]+\.md)"$', re.M)
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|math):<code>~?(.*?)</code>", re.S)


def _rewrite_links(text: str, page_dir: str) -> str:
    def fix(match: re.Match) -> str:
        bang, label, target = match.groups()
        if re.match(r"[a-z]+:|#|/", target):
            return match.group(0)
        if target.startswith("docs/"):
            return f"{bang}[{label}]({posixpath.relpath(target[5:], page_dir or '.')})"
        return label if not bang else f"`{target}`"

    return _LINK.sub(fix, text)


def on_page_markdown(markdown: str, page, **kwargs: object) -> str:
    """Inline ``--8<-- "FILE.md"`` lines naming root files, links rewritten for the page."""
    page_dir = posixpath.dirname(page.file.src_uri)

    def include(match: re.Match) -> str:
        return _rewrite_links((ROOT / match.group(1)).read_text(), page_dir)

    return _INCLUDE.sub(include, markdown)


def on_page_content(html: str, **kwargs: object) -> str:
    """Replace ``:role:<code>x</code>`` by ``<code>x</code>`` in every rendered page."""
    return _ROLE.sub(r"<code>\1</code>", html)
