"""The built book in headless Chromium (Debian's; Playwright drives it): what a reader sees.

Every page of the book is visited once at 1280 px width (the ``survey`` fixture); the tests then
check what was recorded there:

* outputs: no progress bars or tqdm widgets, no stderr, no filesystem path of the build machine;
* tables: no ``nan``; no table or code block wider than the text column unless it scrolls in its
  own box, and code cells wrap their long lines;
* figures: alt text, and the smallest text at least 9 px as rendered (font metadata the library
  records for every figure, scaled by the image's rendered width);
* the browser console: no error, no failed request, nothing fetched from outside the book;
* accessibility: axe-core (vendored, ``tests/vendor/axe-core``), WCAG 2 A and AA rules, no critical or
  serious violation.

A full-page screenshot of every page is kept in ``_build/screenshots/`` with an ``index.html``.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fmbook.book import profiles
from fmbook.core.paths import build_dir, cache_dir, repo_root

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
WIDTH = 1280
MIN_FIGURE_TEXT_PX = 9.0
AXE_TAGS = ["wcag2a", "wcag2aa"]
BLOCKING_IMPACTS = ("critical", "serious")

# Violations caused upstream that the book cannot fix; each names its issue. Empty today.
UPSTREAM_AXE: dict[str, str] = {}


@pytest.fixture(scope="module")
def site(request):
    """The built book served over HTTP. ``FMBOOK_BROWSER_HTML=<folder>`` tests an already built book
    (for example a published copy) instead of building the smoke book first."""
    given = os.environ.get("FMBOOK_BROWSER_HTML")
    built_book = Path(given) if given else request.getfixturevalue("built_book")

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
    """Open ``url``; record JavaScript errors, console errors, failed and external requests."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    errors, external, failed = [], [], []
    local = ("http://127.0.0.1", "data:", "blob:", "about:")
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" else None)
    page.on("request", lambda req: external.append(req.url) if not req.url.startswith(local) else None)
    page.on("requestfailed", lambda req: failed.append(f"{req.url} ({req.failure})")
            if req.url.startswith(local) else None)
    page.on("response", lambda res: failed.append(f"{res.url} (HTTP {res.status})") if res.status >= 400 else None)
    response = page.goto(url, wait_until="networkidle")
    return page, response, errors, external, failed


def all_pages(root: Path) -> list[str]:
    """Every HTML page of the built book (not Sphinx's static and source copies)."""
    skip = {"_static", "_sources", "_images"}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if not skip & set(p.relative_to(root).parts))


# The checks that run inside the page; each returns a list of problems (strings).
JS_OUTPUTS = r"""(patterns) => {
  const out = [];
  const bar = new RegExp(patterns.bar);
  const paths = patterns.paths.map(p => new RegExp(p));
  document.querySelectorAll('div.cell_output').forEach((cell, i) => {
    const text = cell.innerText || '';
    if (bar.test(text)) out.push(`output ${i}: progress-bar text: ${text.match(bar)[0]}`);
    if (cell.querySelector('.stderr, .output.stderr')) out.push(`output ${i}: stderr: ${(cell.querySelector('.stderr').innerText || '').slice(0, 120)}`);
    if (cell.querySelector('.widget-hprogress, .widget-progress, progress')) out.push(`output ${i}: a progress-bar widget`);
    for (const p of paths) { const m = text.match(p); if (m) out.push(`output ${i}: a path of the build machine: ${m[0]}`); }
  });
  document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').forEach(s => {
    if (/"_model_name":\s*"(Float|Int)ProgressModel"/.test(s.textContent)) out.push('widget state holds a progress bar (tqdm widget)');
  });
  return out;
}"""

JS_TABLES = r"""() => {
  const out = [];
  const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const right = col.getBoundingClientRect().right + 1;
  document.querySelectorAll('table').forEach((t, i) => {
    const nan = Array.from(t.querySelectorAll('td, th')).filter(c => /^\s*(nan|NaN|<NA>|None)\s*$/.test(c.textContent));
    if (nan.length) out.push(`table ${i} ("${(t.caption ? t.caption.textContent : t.textContent).trim().slice(0, 50)}"): ${nan.length} cell(s) read "${nan[0].textContent.trim()}"`);
  });
  const boxed = el => {
    for (let a = el; a && a !== document.body; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (['auto', 'scroll'].includes(s.overflowX) && a.getBoundingClientRect().right <= right) return true;
      if (a === col) break;
    }
    return false;
  };
  col.querySelectorAll('table, pre').forEach((el, i) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0) return;
    const wide = r.right > right || el.scrollWidth > el.clientWidth + 1;
    const label = `${el.tagName.toLowerCase()} ${i} ("${el.textContent.trim().slice(0, 40)}")`;
    if (el.tagName === 'PRE' && el.closest('div.cell_input') && el.scrollWidth > el.clientWidth + 1)
      out.push(`${label}: a code cell cuts its lines (${el.scrollWidth} px of text in ${el.clientWidth} px)`);
    else if (wide && !boxed(el))
      out.push(`${label}: ${Math.round(Math.max(r.width, el.scrollWidth))} px wide, the text column ends at ${Math.round(right)} px, and no scroll box holds it`);
  });
  return out;
}"""

JS_FIGURES = r"""(minPx) => {
  const out = [];
  const figures = [];
  document.querySelectorAll('div.cell_output img').forEach((img, i) => {
    const label = `figure ${i} ("${(img.alt || '').slice(0, 50)}")`;
    if (!img.alt || !img.alt.trim()) out.push(`figure ${i} (${img.src.split('/').pop()}): no alt text`);
    const cls = Array.from(img.classList).find(c => c.startsWith('fmbook-minfont-'));
    if (!cls) { out.push(`${label}: no font metadata (not shown through the book's figure hook)`); return; }
    const natural = +cls.split('-').pop() / 10;
    // an image in an inactive tab has no width until its tab is opened: judge it at the width it will have
    const shown = img.clientWidth || Math.min(+img.getAttribute('width') || img.naturalWidth, img.naturalWidth);
    const px = natural * shown / img.naturalWidth;
    figures.push({alt: img.alt, px: Math.round(px * 10) / 10, width: shown, natural: img.naturalWidth});
    if (px < minPx) out.push(`${label}: smallest text ${px.toFixed(1)} px as shown (${natural} px at ${img.naturalWidth} px, shown at ${shown} px)`);
  });
  return {out, figures};
}"""

PROGRESS_BAR = r"\d{1,3}%\|[^|\n]{0,60}\||\d+/\d+ \[\d\d:\d\d<|it/s\]|s/it\]"


def _machine_paths() -> list[str]:
    """Regexes for paths of this build machine: the repository, the cache, the home and /tmp."""
    found = {str(repo_root() or ""), str(cache_dir()), str(Path.home()), "/tmp/"}
    return [re.escape(p) for p in sorted(found) if p and p not in ("/", ".")] + [r"\.cache/fmbook"]


@dataclass
class PageReport:
    rel: str
    status: int | None
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    traceback: bool = False
    broken_images: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    figure_sizes: list[dict] = field(default_factory=list)
    axe: list[dict] = field(default_factory=list)
    screenshot: str = ""


def _axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async (tags) => {
        const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, n: v.nodes.length,
                                        targets: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""", AXE_TAGS)
    return result


def _write_index(shots: Path, reports: list[PageReport]) -> None:
    rows = []
    for r in reports:
        problems = len(r.errors + r.failed + r.outputs + r.tables + r.figures) + sum(
            v["n"] for v in r.axe if v["impact"] in BLOCKING_IMPACTS)
        state = "ok" if not problems else f"{problems} problem(s)"
        rows.append(f'<tr><td><a href="{html.escape(r.screenshot)}">{html.escape(r.rel)}</a></td><td>{state}</td>'
                    f'<td><a href="{html.escape(r.screenshot)}"><img src="{html.escape(r.screenshot)}" alt="screenshot of '
                    f'{html.escape(r.rel)}" loading="lazy" style="width:240px;height:160px;object-fit:cover;'
                    f'object-position:top;border:1px solid #ccc"></a></td></tr>')
    (shots / "index.html").write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Screenshots of the book</title></head>"
        f"<body><h1>Every page of the book at {WIDTH} px</h1><p>From the browser tests; details in report.json.</p>"
        "<table><thead><tr><th>page</th><th>checks</th><th>screenshot</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></body></html>\n")
    (shots / "report.json").write_text(json.dumps([r.__dict__ for r in reports], indent=1))


@pytest.fixture(scope="module")
def survey(site, browser) -> list[PageReport]:
    """Visit every page once; record what the tests check, take a full-page screenshot."""
    base, root = site
    shots = build_dir() / "screenshots"
    if shots.exists():
        shutil.rmtree(shots)
    shots.mkdir(parents=True)
    patterns = {"bar": PROGRESS_BAR, "paths": _machine_paths()}
    reports = []
    for rel in all_pages(root):
        page, response, errors, external, failed = _visit(browser, f"{base}/{rel}")
        report = PageReport(rel, response.status if response else None, errors, external, failed)
        report.traceback = "Traceback (most recent call last)" in page.inner_text("body")
        report.broken_images = page.evaluate("""() => Array.from(document.images)
            .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)""")
        report.outputs = page.evaluate(JS_OUTPUTS, patterns)
        report.tables = page.evaluate(JS_TABLES)
        figures = page.evaluate(JS_FIGURES, MIN_FIGURE_TEXT_PX)
        report.figures, report.figure_sizes = figures["out"], figures["figures"]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", rel.removesuffix(".html")) + ".jpg"
        page.screenshot(path=str(shots / name), full_page=True, type="jpeg", quality=70)
        report.screenshot = name
        report.axe = _axe(page)  # last: it adds a script to the page
        reports.append(report)
        page.close()
    _write_index(shots, reports)
    return reports


def _problems(reports: list[PageReport], attr: str) -> list[str]:
    return [f"{r.rel}: {p}" for r in reports for p in getattr(r, attr)]


def test_every_page_loads_with_its_images_and_no_traceback(survey):
    problems = [f"{r.rel}: HTTP {r.status}" for r in survey if r.status != 200]
    problems += [f"{r.rel}: shows a traceback" for r in survey if r.traceback]
    problems += [f"{r.rel}: images that did not load: {r.broken_images[:3]}" for r in survey if r.broken_images]
    assert not problems, "\n".join(problems)
    chapters = {f"notebooks/{c}/{n}.html" for c in profiles.list_chapters() for n in profiles.list_notebooks(c)}
    assert chapters <= {r.rel for r in survey}, "a notebook page is missing from the book"


def test_no_console_error_and_no_failed_or_outside_request(survey):
    problems = _problems(survey, "errors") + _problems(survey, "failed")
    problems += [f"{r.rel}: requests outside the book: {r.external[:3]}" for r in survey if r.external]
    assert not problems, "\n".join(problems[:40])


def test_outputs_hold_no_progress_bars_stderr_or_machine_paths(survey):
    problems = _problems(survey, "outputs")
    assert not problems, "\n".join(problems[:40])


def test_tables_have_no_nan_and_wide_blocks_scroll_in_their_own_box(survey):
    problems = _problems(survey, "tables")
    assert not problems, "\n".join(problems[:40])


def test_figures_have_alt_text_and_readable_text_at_1280px(survey):
    problems = _problems(survey, "figures")
    assert not problems, "\n".join(problems[:40])
    assert any(r.figure_sizes for r in survey), "no figure with font metadata on any page"


def test_accessibility_no_critical_or_serious_axe_violation(survey):
    problems = []
    for r in survey:
        for v in r.axe:
            if v["impact"] in BLOCKING_IMPACTS and v["id"] not in UPSTREAM_AXE:
                problems.append(f"{r.rel}: {v['id']} ({v['impact']}, {v['n']} element(s)): {v['help']}; e.g. {v['targets'][:2]}")
    assert not problems, "\n".join(problems[:60])


def test_screenshots_of_every_page_are_kept(survey):
    shots = build_dir() / "screenshots"
    assert (shots / "index.html").is_file()
    for r in survey:
        assert (shots / r.screenshot).stat().st_size > 5_000, r.rel


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


TABS = ".jupyter-widgets .lm-TabBar-tab, .jupyter-widgets .p-TabBar-tab"


def test_a_widget_renders_as_an_interactive_element(site, browser):
    """Some page embeds a tabbed widget; it renders from the book's own JavaScript and a click on
    another tab makes that tab the current one. No tab bar anywhere is a failure, not a pass."""
    base, root = site
    pages = _widget_pages(root)
    assert pages, "no page of the book embeds widget state"
    for rel in pages:
        page, _, errors, external, failed = _visit(browser, f"{base}/{rel}")
        page.locator(".jupyter-widgets").first.wait_for(state="visible", timeout=20000)
        assert not external and not errors and not failed, (rel, external, errors, failed)
        tabs = page.locator(TABS)
        if tabs.count() < 2:
            page.close()
            continue
        tabs.nth(1).click()
        page.wait_for_timeout(300)
        assert "mod-current" in (tabs.nth(1).get_attribute("class") or ""), rel
        assert "mod-current" not in (tabs.nth(0).get_attribute("class") or ""), rel
        page.close()
        return
    pytest.fail(f"no widget with a tab bar to click on any of {pages}")
