"""Every notebook of every chapter at the smoke profile, then the book built strictly from them.

Both are session fixtures in the real checkout (``_build/`` and ``results/<chapter>/smoke``): they
are build products, and a later ``make book PROFILE=smoke`` reuses them.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from fmbook.book import profiles

from fmbook.book import runner
from fmbook.book.build import toc_files
from fmbook.book.nb import bootstrap_cell
from fmbook.book.registry import CHAPTERS, PAPERS
from fmbook.core.paths import repo_root

pytestmark = pytest.mark.book
ROOT = repo_root()


def test_toc_lists_exactly_the_notebooks_on_disk():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    in_toc = {f for f in toc_files(toc) if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{c}/{n}" for c in profiles.list_chapters() for n in profiles.list_notebooks(c)}
    assert in_toc == on_disk
    for entry in toc_files(toc):
        if not entry.startswith("notebooks/"):
            assert (ROOT / f"{entry}.md").is_file(), entry


@pytest.mark.parametrize("chapter", profiles.list_chapters())
def test_source_notebooks_follow_the_contract(chapter):
    """No outputs; a parameters cell starting with profile/seed; the exact bootstrap cell."""
    for name in profiles.list_notebooks(chapter):
        nb_json = json.loads((ROOT / "notebooks" / chapter / f"{name}.ipynb").read_text())
        code = [c for c in nb_json["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{name} has outputs"
        params = profiles.notebook_parameters(chapter, name)
        assert list(params)[:1] == ["profile"] and params["profile"].default == "auto", name
        assert "seed" in params, name
        boot = "".join(code[1]["source"])
        assert boot == bootstrap_cell(chapter, name), f"{name}: second code cell is not the bootstrap cell"
        assert "run.finish()" in "".join(code[-1]["source"]), f"{name}: last code cell must call run.finish()"
        profiles.load_profiles(chapter)  # validates the chapter's profiles.yml


def test_every_notebook_executes_at_smoke_without_error_outputs(smoke_run):
    for outcome in smoke_run:
        r = outcome.job.resolved
        executed = runner.executed_path("smoke", r.chapter, r.notebook)
        nb_json = json.loads(executed.read_text())
        errors = [o for c in nb_json["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{outcome.job.name}: {errors[0].get('ename')}"
        text = json.dumps(nb_json)
        assert "Traceback (most recent call last)" not in text, f"{outcome.job.name} printed a traceback"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.assets = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("script", "img") and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet", "preload"):
            self.assets.append(attrs["href"])


def _pages(html_root: Path):
    return sorted(p for p in html_root.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)


def test_book_builds_strictly_and_internal_links_resolve(built_book):
    pages = _pages(built_book)
    assert (built_book / "book/status.html").is_file()
    broken = []
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text())
        for href in parser.links + parser.assets:
            url = urlparse(href)
            if url.scheme or href.startswith(("#", "mailto:", "//")):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(built_book)} -> {href}")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:20])


def test_pages_load_nothing_from_the_network(built_book):
    """Scripts, styles and images are served by the book itself (offline readers, no CDN)."""
    external = set()
    for page in _pages(built_book):
        parser = _Links()
        parser.feed(page.read_text())
        external |= {a for a in parser.assets if urlparse(a).scheme in ("http", "https") or a.startswith("//")}
    assert not external, f"pages load external resources: {sorted(external)[:10]}"


def _smoke_records() -> list[dict]:
    from fmbook.book.results import iter_results

    return [r for r in iter_results() if r.get("profile") == "smoke"]


def test_status_page_lists_every_chapter_with_numbers(built_book):
    """Every paper is named; every executed notebook is listed with its own execution time; every
    claim row measured at smoke appears with its interval and verdict."""
    from fmbook.core.claims import interval_text

    text = html.unescape((built_book / "book/status.html").read_text())
    for paper in PAPERS:
        assert paper.title.split(":")[0] in text, paper.id
    records = _smoke_records()
    assert records, "no smoke results"
    for record in records:
        name = f"{record['chapter']}/{record['notebook']}"
        seconds = record["runner"]["execution_s"]
        row = re.search(rf"{re.escape(name)}</span></a>(?:</p>)?</td>\s*<td[^>]*>(?:<p>)?([^<]+)<", text)
        assert row, f"{name} is not listed in the table of executed notebooks"
        expected = f"{seconds:.3g}" if seconds < 1000 else f"{seconds:,.0f}"
        assert row.group(1).strip() == expected, (name, row.group(1), expected)
        for claim in record.get("claims", []):
            assert interval_text(claim) in text, f"{name}: claim {claim['claim']!r} without its interval"
            assert claim["verdict"] in text
        assert "headlines" not in record, f"{name}: paper-vs-ours rows are claims decided by intervals"
    assert "Every executed notebook" in text and "smoke" in text


def test_intro_table_says_which_chapters_are_reproduced(built_book):
    """The intro's chapter table is generated from the registry and the results at build time."""
    text = html.unescape((built_book / "book/intro.html").read_text())
    ran = {r["chapter"] for r in _smoke_records()}
    table = text[text.index("reproduced here"):]
    for chapter in CHAPTERS:
        row = table[table.index(f'chapters/{chapter.id}.html"'):]
        row = row[: row.index("</tr>")]
        if chapter.kind == "paper" and chapter.id not in ran:
            assert "not reproduced yet" in row, chapter.id
        elif chapter.kind == "paper":
            assert "not reproduced yet" not in row and "smoke" in row, chapter.id


def test_notebook_pages_show_parameters_and_provenance(built_book):
    for chapter in profiles.list_chapters():
        for name in profiles.list_notebooks(chapter):
            html = (built_book / "notebooks" / chapter / f"{name}.html").read_text()
            assert "Parameters of this run" in html, name
            assert "Where these numbers came from" in html, name
            assert "Traceback" not in html, name
            assert "colab.research.google.com" in html, f"{name}: no Colab launch button"
