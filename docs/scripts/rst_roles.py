"""MkDocs hook: show the reStructuredText roles of dropkit's docstrings as plain code.

The docstrings are written for both ``help()`` and Sphinx-style readers, so they contain roles
such as ``:func:`predict``` and ``:math:`y = m x / q```. The Google-style parser of mkdocstrings
keeps the role name in front of the code span; this hook drops it (and Sphinx's ``~`` prefix).
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|math):<code>~?(.*?)</code>", re.S)


def on_page_content(html: str, **kwargs: object) -> str:
    """Replace ``:role:<code>x</code>`` by ``<code>x</code>`` in every rendered page."""
    return _ROLE.sub(r"<code>\1</code>", html)
