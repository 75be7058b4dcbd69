"""The documentation stays what it promises: a short README whose links resolve, and a results page
that is exactly what ``benchmarks/results_page.py`` writes from benchmarks/results/ (a hand edit fails)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def results_page():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(page: Path) -> list[str]:
    """The link and image targets of a Markdown page that point into the repository."""
    targets = [m.group(1) for m in LINK.finditer(page.read_text())]
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_results_page_is_generated() -> None:
    page = ROOT / "docs" / "results.md"
    assert page.read_text() == results_page().render(), "docs/results.md differs from what `make results` writes: run it, never edit the page"


def test_results_page_shows_every_file_with_its_provenance() -> None:
    text = results_page().render()
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*")):
        if path.suffix in (".json", ".txt", ".png"):
            assert path.name in text, f"{path.name} is not on the results page"
    assert "no renderer" not in text
    assert text.count("Host: ") == text.count("Date: ") == text.count("Command: ")


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < README_MAX_LINES
    assert relative_links(readme), "the README links nothing: its details live in docs/"
    for page in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
        broken = [t for t in relative_links(page) if t and not (page.parent / t).exists()]
        assert not broken, f"{page.name}: links to missing files {broken}"
