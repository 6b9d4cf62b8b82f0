"""The built book in headless Chromium (Debian's; Playwright drives it): what a reader sees."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from fmbook.book import profiles
from fmbook.core.paths import build_dir

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(built_book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", built_book
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI must install Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def _visit(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, external = [], []
    # sphinx-thebe (always loaded by Jupyter Book 1, unused here) declares THEBE_JS_URL twice on
    # notebook pages: a known harmless error of that extension, not of the book.
    page.on("pageerror", lambda exc: errors.append(str(exc)) if "THEBE_JS_URL" not in str(exc) else None)
    page.on("request", lambda req: external.append(req.url) if not req.url.startswith(("http://127.0.0.1", "data:", "blob:", "about:")) else None)
    response = page.goto(url, wait_until="networkidle")
    return page, response, errors, external


def _chapter_pages():
    pages = ["index.html", "book/status.html", "book/how_to_run.html"]
    for chapter in profiles.list_chapters():
        pages += [f"notebooks/{chapter}/{nb}.html" for nb in profiles.list_notebooks(chapter)]
    return pages


def test_every_page_loads_with_its_figures_and_no_traceback(site, browser):
    base, root = site
    problems = []
    for rel in _chapter_pages():
        page, response, errors, external = _visit(browser, f"{base}/{rel}")
        if response is None or response.status != 200:
            problems.append(f"{rel}: HTTP {response.status if response else 'no response'}")
        body = page.inner_text("body")
        if "Traceback (most recent call last)" in body:
            problems.append(f"{rel}: shows a traceback")
        broken = page.evaluate("""() => Array.from(document.images)
            .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)""")
        if broken:
            problems.append(f"{rel}: images that did not load: {broken[:3]}")
        if external:
            problems.append(f"{rel}: requests outside the book: {external[:3]}")
        if errors:
            problems.append(f"{rel}: JavaScript errors: {errors[:2]}")
        page.close()
    assert not problems, "\n".join(problems)


def test_status_page_lists_every_chapter_with_numbers(site, browser):
    base, _ = site
    page, *_ = _visit(browser, f"{base}/book/status.html")
    rows = page.locator("table tbody tr").count()
    text = page.inner_text("body")
    assert rows > 0
    for chapter in profiles.list_chapters():
        assert chapter in text, f"status page does not mention {chapter}"
    page.close()


def _widget_pages(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted((root / "notebooks").rglob("*.html"))
            if "application/vnd.jupyter.widget-state+json" in p.read_text()]


CONTROLS = ("select", "input", "button", ".lm-TabBar-tab", ".p-TabBar-tab")


def test_a_widget_renders_as_an_interactive_element(site, browser):
    """Some page embeds widgets; they render from the book's own JavaScript and respond to a click."""
    base, root = site
    pages = _widget_pages(root)
    assert pages, "no page of the book embeds widget state"
    for rel in pages:
        page, _, errors, external = _visit(browser, f"{base}/{rel}")
        page.locator(".jupyter-widgets").first.wait_for(state="visible", timeout=20000)
        assert not external and not errors, (rel, external, errors)
        tabs = page.locator(".jupyter-widgets .lm-TabBar-tab, .jupyter-widgets .p-TabBar-tab")
        controls = page.locator(", ".join(f".jupyter-widgets {c}" for c in CONTROLS))
        if controls.count() == 0:
            page.close()
            continue
        if tabs.count() > 1:  # a tab bar: clicking another tab makes it the current one
            tabs.nth(1).click()
            page.wait_for_timeout(300)
            assert "mod-current" in (tabs.nth(1).get_attribute("class") or ""), rel
        shots = build_dir() / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "widget-page.png"), full_page=False)
        page.close()
        return
    pytest.fail(f"no widget with an interactive control on any of {pages}")


def test_screenshot_of_a_chapter_page(site, browser):
    base, _ = site
    chapter = profiles.list_chapters()[0]
    first = profiles.list_notebooks(chapter)[0]
    page, *_ = _visit(browser, f"{base}/notebooks/{chapter}/{first}.html")
    shots = build_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    target = shots / f"{chapter}-{first}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    page.close()
