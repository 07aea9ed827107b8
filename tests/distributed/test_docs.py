"""The code of docs/distributed.md runs as written (blocks that start processes are marked
no-test there; tests/distributed runs their substance on gloo ranks)."""

from __future__ import annotations

from tests.test_readme import ROOT, run_page


def test_distributed_page_code_runs():
    run_page(ROOT / "docs" / "distributed.md")
