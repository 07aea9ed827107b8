"""The README's quick start and the documentation's code run as written, with the output shown.

README: every ```python block runs. Documentation pages: the ```python and ```pycon blocks of a
page run in order in one namespace (a page is read top to bottom, later blocks use earlier
names); ```pycon blocks are doctests, so the output printed in the docs is checked. A block
right after ``<!-- no-test: reason -->`` is left out (it needs a GPU, a network or processes).
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Pages whose code is tested here; pages with their own tests are listed in their owners' tests.
PAGES = [
    "docs/getting-started.md",
    "docs/tutorial.md",
    "docs/guide/layers.md",
    "docs/guide/reference.md",
    "docs/guide/rng.md",
    "docs/guide/mc.md",
    "docs/howto/convert.md",
    "docs/howto/learned-rates.md",
    "docs/howto/distributed.md",
]
FENCE = re.compile(r"(<!-- no-test: [^>]+-->\s*)?```(python|pycon)\n(.*?)```", re.DOTALL)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every tested fenced block of a Markdown file, in order."""
    return [(lang, code) for skip, lang, code in FENCE.findall(path.read_text()) if not skip]


README_BLOCKS = [code for lang, code in code_blocks(README) if lang == "python"]


def test_readme_has_a_quick_start():
    """The README shows training with dropkit.nn and sampling with dropkit.mc.predict."""
    assert any("dropkit.nn" in c and "mc.predict(" in c for c in README_BLOCKS)


def test_readme_is_a_front_page():
    """Short, with both set-up commands and pip, and nothing that breaks on a package index."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for command in ("make demo", "make test", "pip install"):
        assert command in text, command
    # Images by relative path do not render on a package index; the docs site has the plots.
    assert not re.search(r"!\[[^\]]*\]\((?!https://)", text)


def test_readme_links_resolve():
    """Every relative link of the README names a file of the repository."""
    targets = re.findall(r"\]\(([^)#\s]+)", README.read_text())
    relative = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert relative
    assert [t for t in relative if not (ROOT / t).is_file()] == []


@pytest.mark.parametrize(
    "path",
    [README, *sorted((ROOT / "docs").rglob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_internal_source_names(path):
    """Sources are named by topic and paper, never by internal file numbers ("seed 002")."""
    assert not re.search(r"\bseed 00\d|\bslides? \d", path.read_text(), flags=re.I)


def printed_output(page: Path) -> str:
    """The ```text block that follows "It prints" on a page: the output the docs claim."""
    match = re.search(r"It prints\s*```text\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert match, f"{page} shows no output after 'It prints'"
    return match.group(1)


def numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"\d+\.\d+", text)]


@pytest.mark.parametrize("code", README_BLOCKS, ids=lambda c: c.splitlines()[0][:40])
def test_readme_example_runs(code, capsys):
    exec(compile(code, str(README), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    if "mc.predict(" in code:
        accuracy, right, wrong = numbers(out)
        # The docs say the misclassified digits are less certain: hold them to that.
        assert wrong > 2 * right, out
        # And they print the numbers: accuracy exactly (450 digits), the nats to +-0.005, as
        # BLAS and thread counts may change the order of sums.
        shown = numbers(printed_output(ROOT / "docs/getting-started.md"))
        assert accuracy == shown[0], (out, shown)
        assert right == pytest.approx(shown[1], abs=5e-3), (out, shown)
        assert wrong == pytest.approx(shown[2], abs=5e-3), (out, shown)


def run_page(path: Path) -> None:
    """Run a page's blocks in one namespace; fail with the first doctest mismatch."""
    globs: dict = {"__name__": "__main__"}  # as in a script or a REPL
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for i, (lang, code) in enumerate(code_blocks(path)):
        name = f"{path.relative_to(ROOT)} block {i + 1}"
        if lang == "python":
            exec(compile(code, name, "exec"), globs)
            continue
        test = parser.get_doctest(code, globs, name, str(path), 0)
        report: list[str] = []
        result = runner.run(test, out=report.append, clear_globs=False)
        assert result.failed == 0, "".join(report)
        globs.update(test.globs)  # DocTest runs in a copy; later blocks need its names


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_code_runs(page):
    path = ROOT / page
    if not path.exists():
        pytest.skip(f"{page} is not written yet")
    run_page(path)
