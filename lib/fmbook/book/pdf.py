"""``make pdf``: the whole book as one PDF, built offline.

The staged book (the same executed notebooks as the HTML) is built once more with Sphinx's
``singlehtml`` builder, so that every chapter sits on one page in reading order, and that page is
printed to PDF by the Chromium the browser tests use (Debian's ``chromium``, driven by Playwright).
A print style sheet drops what only works on screen: navigation, launch and download buttons,
search, the theme switch; widget outputs print their current view.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fmbook.book.build import BookError, stage
from fmbook.core.paths import build_dir

PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm; }
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-footer, .bd-footer-article,
.header-article, .header-article-main, .article-header-buttons, .prev-next-area, .bd-header-article,
.dropdown-launch-buttons, .theme-switch-button, .search-button, .headerbtn, .skip-link,
.bd-search, .sidebar-toggle, .secondary-toggle, button.copybtn, .toggle-button, #pst-back-to-top,
.bd-sidebar, .bd-toc { display: none !important; }
html, body, .bd-container, .bd-container__inner, .bd-main, .bd-content, .bd-article-container,
.bd-page-width, .bd-article, article { max-width: none !important; width: auto !important;
  margin-left: 0 !important; margin-right: 0 !important; display: block !important; }
img { max-width: 100% !important; height: auto !important; }
.bd-article { padding: 0 !important; }
img, figure { break-inside: avoid; }  /* not on large blocks: Chromium drops the rest of the document */
.fmbook-scroll { overflow: visible !important; }
h1 { break-before: page; }
details.hide.above-input, details.hide.below-input > summary, .cell.tag_hide-input > .cell_input,
.cell.tag_remove-input > .cell_input { display: none !important; }
pre { white-space: pre-wrap !important; word-break: break-word; }
"""

CHROMIUM = os.environ.get("FMBOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def single_page(profile: str) -> Path:
    """Build the staged book with the ``singlehtml`` builder; returns its ``index.html``."""
    source = stage(profile)
    output = build_dir() / "book_single"
    if output.exists():
        shutil.rmtree(output)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(source), "--builder", "singlehtml",
           "--path-output", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = build_dir() / "book-single-build.log"
    log.write_text(proc.stdout + "\n" + proc.stderr)
    html_root = output / "_build" / "singlehtml"
    root_doc = yaml.safe_load((source / "_toc.yml").read_text())["root"]
    page = html_root / f"{root_doc}.html"
    if proc.returncode != 0 or not page.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BookError(f"the single-page build failed (full log: {log}):\n{tail}")
    # Sphinx writes the page at the root document's path (book/intro.html) but links its images and
    # static files from the output's top: a copy at the top resolves them.
    top = html_root / "print.html"
    shutil.copy2(page, top)
    return top


def print_pdf(page: Path, target: Path, timeout_s: float = 300) -> Path:
    """Print ``page`` to ``target`` with headless Chromium (written under a temporary name first)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise BookError(f"the PDF is printed by Chromium, which is not at {CHROMIUM}: "
                        "apt-get install chromium (or set FMBOOK_CHROMIUM)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.pdf")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 1800})
            tab.goto(page.as_uri(), wait_until="load", timeout=timeout_s * 1000)
            # MathJax typesets after load; widgets render from their embedded state. (Waiting for the
            # network to go idle never ends: the theme keeps a connection polling.)
            tab.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")
            tab.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
            tab.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=timeout_s * 1000)
            tab.wait_for_timeout(2000)
            tab.add_style_tag(content=PRINT_CSS)
            tab.emulate_media(media="print")
            tab.pdf(path=str(partial), format="A4", print_background=True, outline=True, tagged=True)
        finally:
            browser.close()
    os.replace(partial, target)
    return target


def build_pdf(profile: str = "local") -> Path:
    """The book of ``profile`` as ``_build/book.pdf``."""
    return print_pdf(single_page(profile), build_dir() / "book.pdf")
