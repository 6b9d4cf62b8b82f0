"""A small Sphinx extension of the book (``_config.yml``: ``sphinx.extra_extensions``).

It fixes what the reader's browser would otherwise report on every page, at the level of the HTML
the theme writes (nothing here changes a chapter's content):

* **scripts added twice**: Jupyter Book reads the sources more than once in a strict build and
  sphinx-thebe adds its inline configuration (``const THEBE_JS_URL = ...``) each time, so every page
  threw ``Identifier 'THEBE_JS_URL' has already been declared``; identical scripts are kept once.
* **widget fonts**: the ipywidgets HTML manager's style sheet asks for its Font Awesome files
  relative to the page (``notebooks/<chapter>/@jupyter-widgets/...woff2``), where nothing is served;
  the files the book vendors are copied to those places in the output;
* **unnamed disclosure buttons** (axe ``summary-name``, serious): pydata-sphinx-theme 0.17 draws each
  sidebar chapter's expand/collapse ``<summary>`` with only a decorative chevron (markup from its
  PR #1582); each gets an ``aria-label`` naming its chapter;
* **bibliography roles** (axe ``aria-required-children``, critical, and ``aria-deprecated-role``):
  docutils writes the references as ``role="list"`` whose entries carry the deprecated
  ``role="doc-biblioentry"``; the entries become ``role="listitem"``.

The last two rewrite the written HTML files (``build-finished``), matching the exact markup of the
pinned theme and docutils; a test (``tests/test_browser.py``, axe) notices if an update changes it.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from typing import Any

WIDGET_FONTS = Path("_static") / "vendor" / "jupyter-widgets" / "embed-amd.js"  # the fonts lie beside it
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _script_key(script: Any) -> tuple:
    """What makes two scripts the same: file name, priority and attributes (an inline script's body
    is an attribute); a plain string is its own key."""
    if not hasattr(script, "attributes"):
        return (str(script),)
    attributes = script.attributes or {}
    return (getattr(script, "filename", None) or None, getattr(script, "priority", None),
            tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Keep each script once per page (``html-page-context``)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _script_key(script)
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept


def copy_widget_fonts(out: Path) -> list[Path]:
    """Serve the widget manager's fonts where its style sheet looks for them: beside each page that
    embeds widgets, in ``@jupyter-widgets/html-manager/dist/``."""
    source = out / WIDGET_FONTS.parent
    fonts = sorted(source.glob("*.woff*")) if source.is_dir() else []
    written = []
    for folder in sorted({p.parent for p in out.rglob("*.html")
                          if "_static" not in p.relative_to(out).parts and WIDGET_STATE in p.read_text(errors="ignore")}):
        # the style sheet resolves its font URLs against either folder, depending on load order
        for target in (folder / "@jupyter-widgets" / "html-manager" / "dist", folder / "@jupyter-widgets"):
            target.mkdir(parents=True, exist_ok=True)
            for font in fonts:
                shutil.copy2(font, target / font.name)
                written.append(target / font.name)
    return written


_TOGGLE = re.compile(r'(<a class="(?:current )?reference internal" href="[^"]*">(?P<name>[^<]*)</a>)<details(?P<open> open="open")?>'
                     r'<summary><span class="toctree-toggle" role="presentation">')


def _name_toggles(text: str) -> str:
    def label(m: re.Match) -> str:
        name = html.unescape(m.group("name")).strip()
        aria = html.escape(f"Show or hide the pages of {name}", quote=True)
        return (f'{m.group(1)}<details{m.group("open") or ""}><summary aria-label="{aria}">'
                '<span class="toctree-toggle" role="presentation">')
    return _TOGGLE.sub(label, text)


def _bibliography_roles(text: str) -> str:
    return text.replace('class="citation" role="doc-biblioentry"', 'class="citation" role="listitem"') \
               .replace('role="doc-biblioentry"', 'role="listitem"')


def fix_written_pages(out: Path) -> int:
    """Apply the HTML fixes above to every written page; returns how many pages changed."""
    changed = 0
    for page in out.rglob("*.html"):
        if "_static" in page.relative_to(out).parts:
            continue
        text = page.read_text(encoding="utf-8")
        fixed = _bibliography_roles(_name_toggles(text))
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")
            changed += 1
    return changed


def build_finished(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    copy_widget_fonts(out)
    fix_written_pages(out)


def share_html_handlers(app) -> None:
    """Give the single-page builder (``make pdf``) every HTML node handler.

    Sphinx looks a node's handlers up by builder name and falls back to the format ("html") only when
    no extension registered any handler under the name: sphinx-exercise registers some for
    "singlehtml", which hid myst-nb's (its hidden-input cells) from the single-page build.
    """
    registry = app.registry.translation_handlers
    single = registry.get("singlehtml")
    if single is None:
        return
    for node, handlers in registry.get("html", {}).items():
        single.setdefault(node, handlers)


def setup(app):
    app.connect("builder-inited", share_html_handlers)
    # early: html-page-context stops at the first handler that returns a template name
    app.connect("html-page-context", dedupe_scripts, priority=100)
    app.connect("build-finished", build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
