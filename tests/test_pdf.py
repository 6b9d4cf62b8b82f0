"""``make pdf``: the whole smoke book as one PDF, printed offline by Debian's Chromium."""

from __future__ import annotations

import re
import shutil
import unicodedata

import pytest

from fmbook.book import pdf
from fmbook.book.registry import CHAPTERS
from fmbook.core.paths import repo_root

pytestmark = [pytest.mark.book, pytest.mark.browser]

# an error output (a traceback, or its last line "ValueError: ..."), not code that names an exception
ERROR_MARKERS = re.compile(r"Traceback \(most recent call last\)|^\s*\w+(?:Error|Exception): |"
                           r"Unknown directive|WARNING: ", re.M)


def _landing_title(chapter) -> str:
    text = (repo_root() / f"{chapter.landing_page}.md").read_text(encoding="utf-8")
    return next(line[2:].strip() for line in text.splitlines() if line.startswith("# "))


@pytest.fixture(scope="module")
def book_pdf(built_book):
    if shutil.which("chromium") is None and not pdf.Path(pdf.CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed")
    return pdf.build_pdf(profile="smoke")


def test_pdf_has_every_chapter_no_errors_and_no_interactive_leftovers(book_pdf):
    from pypdf import PdfReader

    reader = PdfReader(str(book_pdf))
    # NFKC: the PDF's text keeps typographic ligatures ("ﬁ" for "fi")
    pages = [unicodedata.normalize("NFKC", page.extract_text() or "") for page in reader.pages]
    assert len(pages) >= 3 * len(CHAPTERS), f"only {len(pages)} pages"
    text = re.sub(r"\s+", " ", "\n".join(pages))
    for chapter in CHAPTERS:
        title = re.sub(r"\s+", " ", _landing_title(chapter))
        words = title.split()[:5]  # a title may wrap or hyphenate late in the line
        assert " ".join(words) in text, f"chapter {chapter.id!r} ({title}) is not in the PDF"
    bad = [i + 1 for i, page in enumerate(pages) if ERROR_MARKERS.search(page)]
    assert not bad, f"pages with an error or warning: {bad}"
    for leftover in ("Launch Binder", "Open in Colab", "Search Ctrl", "Toggle navigation", "Download this page"):
        assert leftover not in text, f"interactive leftover in the PDF: {leftover!r}"
    assert "References" in text or "Bibliography" in text
