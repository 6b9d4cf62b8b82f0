"""The display layer: tables, figure defaults and metadata, progress lines, and a quiet executed notebook."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

from fmbook.core import display, plotting, progress


# ------------------------------------------------------------------------------------------- tables

def test_table_formats_missing_values_index_and_long_texts():
    frame = pd.DataFrame({"method": ["linear probe", "x" * 80], "accuracy": [0.91234, np.nan],
                          "n": np.array([1200, 3], dtype=np.int64), "ok": [True, False]},
                         index=pd.Index([7, 8], name="ignored"))
    page = display.table_html(frame, formats={"accuracy": "{:.1%}"}, caption="Accuracy", max_chars=20)
    assert "nan" not in page.lower() and display.MISSING in page and display.MISSING_NOTE in page
    assert "91.2%" in page and "1,200" in page and ">yes<" in page
    assert "ignored" not in page and ">7<" not in page  # no index unless asked for
    assert 'title="' + "x" * 80 + '"' in page and "…" in page  # shortened, full text on hover
    assert page.count('class="num"') >= 4  # numeric header + cells right-aligned
    assert '<div class="fmbook-scroll" tabindex="0" role="region" aria-label="Accuracy">' in page
    with_index = display.table_html(frame, index=True)
    assert "ignored" in with_index


def test_table_refuses_formats_for_missing_columns():
    with pytest.raises(ValueError, match="columns that the table does not have"):
        display.table_html(pd.DataFrame({"a": [1]}), formats={"b": "{:.1f}"})


@pytest.mark.parametrize("value, text", [(0.123456, "0.123"), (1234.5, "1,234"), (2.0, "2"), (1e-5, "1.00e-05"),
                                         (np.float32(0.5), "0.5"), (np.int64(3), "3"), (float("inf"), "∞"),
                                         (None, "—"), (pd.NA, "—"), ("text", "text")])
def test_format_value_defaults(value, text):
    assert display.format_value(value) == text


# ------------------------------------------------------------------------------------------ figures

def test_style_fonts_and_figure_info():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotting.apply_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("Accuracy against noise")
    ax.set_xlabel("noise")
    plotting.stamp_figure(fig, "model: m  ·  data: d  ·  profile: smoke  ·  seed: 0")
    info = plotting.figure_info(fig)
    assert info["alt"] == "Figure: Accuracy against noise" and info["stamped"]
    assert info["min_font_pt"] >= plotting.MIN_FONT_PT
    assert info["width_in"] <= plotting.MAX_WIDTH_IN
    ax.annotate("tiny", (0.5, 0.5), fontsize=6)
    assert plotting.figure_info(fig)["min_font_pt"] == 6 and plotting.figure_info(fig)["min_font_text"] == "tiny"
    plotting.stamp_figure(fig, "again")  # replaces, never stacks
    assert sum(t.get_gid() == plotting.STAMP_GID for t in fig.texts) == 1
    untitled, ax2 = plt.subplots()
    ax2.set_xlabel("k")
    ax2.set_ylabel("silhouette")
    assert plotting.alt_text(untitled).startswith("Figure (no title): k against silhouette")
    plt.close("all")


# ----------------------------------------------------------------------------------------- progress

def test_progress_lines_say_done_total_rate_and_time_left(caplog):
    assert progress.progress_line("embedding", 10, 40, 5.0) == "embedding: 10/40, 2/s, about 15 s left"
    assert progress.progress_line("steps", 3, None, 1.0) == "steps: 3, 3/s"
    with caplog.at_level(logging.INFO, logger="fmbook"):
        items = list(progress.progress(range(5), desc="items", every_s=0))
    assert items == list(range(5))
    lines = [r.getMessage() for r in caplog.records if r.name == "fmbook"]
    assert lines and lines[-1].startswith("items: 5/5")
    with pytest.raises(ValueError, match="total"):
        progress.Progress(total=-1)


# --------------------------------------------------------------------- a notebook run by the runner

def test_runner_keeps_warnings_and_progress_out_of_the_notebook(mini_book):
    """Warnings, log records and progress go to the runner's console; figures get alt text and fonts."""
    from conftest import text_notebook

    from fmbook.book import runner
    from fmbook.book.nb import bootstrap_cell
    from fmbook.book.pairs import sync

    body = ["import sys, warnings, logging\nwarnings.warn('a library warning')\n"
            "print('to stderr', file=sys.stderr)\nlogging.getLogger('somelib').warning('library log')\n"
            "from fmbook.core.progress import progress\nfor _ in progress(range(3), desc='work', every_s=0):\n    pass",
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\n"
            "ax.set_title('A line')\nrun.stamp(fig)\nplt.show()",
            "print('visible output')\nrun.finish()"]
    (mini_book / "notebooks/demo/02_second.md").write_text(text_notebook(
        "Noisy", 'profile = "auto"  # profile\nseed = 0  # seed\nn = 5  # size\n',
        bootstrap_cell("demo", "02_second"), body))
    sync(mini_book / "notebooks")
    lines: list[str] = []
    outcomes = runner.run(["demo/02_second"], profile="smoke", echo=lines.append)
    assert [o.status for o in outcomes] == ["ran"], [o.message for o in outcomes]
    console = "\n".join(lines)
    assert "[start] demo/02_second" in console
    for said in ("a library warning", "to stderr", "library log", "work: 3/3"):
        assert f"demo/02_second: " in console and said in console, said
    executed = json.loads((mini_book / "_build/executed/smoke/demo/02_second.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    streams = [o for o in outputs if o.get("output_type") == "stream"]
    assert all(o["name"] == "stdout" for o in streams) and "visible output" in "".join(
        "".join(o["text"]) for o in streams)
    figure_cells = [c for c in executed["cells"] if "mystnb" in c["metadata"]]
    assert len(figure_cells) == 1
    options = figure_cells[0]["metadata"]["mystnb"]["image"]
    assert options["alt"] == "Figure: A line"
    px = int(re.search(r"fmbook-minfont-(\d+)", options["classes"]).group(1)) / 10
    assert px >= plotting.MIN_FONT_PT * 100 / 72 - 0.1
    log = (mini_book / "_build/logs/smoke/demo/02_second.log").read_text()
    assert "a library warning" in log
    record = json.loads((mini_book / "results/demo/smoke/02_second.json").read_text())
    assert record["runner"]["warnings_logged"] >= 1


# ------------------------------------------------------------------------------ the book's extension

def test_sphinx_extension_dedupes_scripts_and_fixes_theme_markup(tmp_path):
    from sphinx.builders.html._assets import _JavaScript

    from fmbook.book import sphinx_ext

    context = {"script_files": [_JavaScript(None, body="const A = 1"), _JavaScript("x.js"),
                                _JavaScript("", body="const A = 1")]}  # sphinx-thebe's second copy: filename ''
    sphinx_ext.dedupe_scripts(None, "p", "page.html", context, None)
    assert len(context["script_files"]) == 2
    nav = ('<a class="current reference internal" href="#">NMTune &amp; co</a><details open="open"><summary>'
           '<span class="toctree-toggle" role="presentation"><i></i></span></summary>')
    bib = '<div role="list" class="citation-list"><div class="citation" id="id5" role="doc-biblioentry">'
    page = tmp_path / "notebooks" / "demo" / "p.html"
    page.parent.mkdir(parents=True)
    page.write_text(nav + bib + '<script type="application/vnd.jupyter.widget-state+json">{}</script>')
    fonts = tmp_path / "_static" / "vendor" / "jupyter-widgets"
    fonts.mkdir(parents=True)
    (fonts / "abc.woff2").write_bytes(b"font")
    assert sphinx_ext.fix_written_pages(tmp_path) == 1
    text = page.read_text()
    assert '<summary aria-label="Show or hide the pages of NMTune &amp; co">' in text
    assert 'role="listitem"' in text and "doc-biblioentry" not in text
    assert sphinx_ext.copy_widget_fonts(tmp_path) == [page.parent / "@jupyter-widgets/html-manager/dist/abc.woff2",
                                                      page.parent / "@jupyter-widgets/abc.woff2"]


def test_figures_too_small_for_the_text_column_get_readable_text():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3), dpi=100)
    ax.set_title("wide")
    ax.annotate("tiny", (0.5, 0.5), fontsize=6)
    assert plotting.ensure_readable(fig) >= 1
    shown_px = plotting.figure_info(fig)["min_font_pt"] * 100 / 72 * plotting.TEXT_COLUMN_PX / 1000
    assert shown_px >= plotting.MIN_SHOWN_PX
    narrow, ax2 = plt.subplots(figsize=(5, 3), dpi=100)
    ax2.annotate("small", (0.5, 0.5), fontsize=7)
    plotting.ensure_readable(narrow)
    assert plotting.figure_info(narrow)["min_font_pt"] >= plotting.MIN_FONT_PT
    plt.close("all")
