"""The book's plotting style, the provenance line under every figure, and what the page learns about
each figure (its alt text and its smallest font).

* :func:`apply_style`: seaborn's white grid, a colour-blind palette, font sizes that stay readable
  when the page scales a figure to its text column (at least :data:`MIN_FONT_PT` points; figures at
  most :data:`MAX_WIDTH_IN` inches wide), and the figure hook below.
* :func:`stamp_figure`: the model · data · profile · seed line, in :data:`STAMP_FONT_PT` grey type.
* :func:`figure_info`: the figure's title (its alt text), its smallest font size in points, its
  width and dpi. Shown inline, every figure carries these in its output metadata (key ``fmbook``);
  the runner turns them into the image's ``alt`` text and a CSS class that the browser tests read.
"""

from __future__ import annotations

from typing import Any, Iterable

import matplotlib

PALETTE = "colorblind"
MIN_FONT_PT = 9.0  # no text in a figure smaller than this
STAMP_FONT_PT = 10.0  # the provenance line (a 10 in figure keeps it >= 9 px in the 688 px text column)
MAX_WIDTH_IN = 10.0  # wider figures are scaled down by the page until their text is too small
STAMP_GID = "fmbook-stamp"
TEXT_COLUMN_PX = 688  # the book's text column at a 1280 px window: wider images are scaled down to it
MIN_SHOWN_PX = 9.0  # the smallest text a reader should see, in CSS pixels, after that scaling
METADATA_KEY = "fmbook"

RC = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "savefig.bbox": "tight",
    "figure.figsize": (6.4, 4.0),
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def apply_style() -> None:
    """Seaborn's white grid, colour-blind palette, readable sizes; the same in every notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    matplotlib.rcParams.update(RC)
    install_figure_metadata()


def provenance_line(models: Iterable[str], data: Iterable[str], profile: str, seed: object) -> str:
    models, data = list(models), list(data)
    parts = [f"model: {', '.join(models) if models else 'none'}",
             f"data: {', '.join(data) if data else 'none'}",
             f"profile: {profile}", f"seed: {seed}"]
    return "  ·  ".join(parts)


def stamp_figure(fig, text: str) -> None:
    """Write ``text`` in grey type under everything the figure draws (axis labels included).

    Call it once the figure is laid out (after ``tight_layout``, if any); ``bbox_inches='tight'``
    keeps it in the saved image. A second call replaces the first line.
    """
    for old in [t for t in fig.texts if t.get_gid() == STAMP_GID]:
        old.remove()
    try:
        bbox = fig.get_tightbbox(fig.canvas.get_renderer())
        y = bbox.y0 / fig.get_figheight() - 0.02
        x = max(bbox.x0 / fig.get_figwidth(), -0.05)
    except Exception:  # a backend without a renderer: fall back to just below the figure
        x, y = 0.0, -0.06
    fig.text(x, y, text, ha="left", va="top", fontsize=STAMP_FONT_PT, color="0.35", wrap=True,
             transform=fig.transFigure, gid=STAMP_GID)


def _texts(fig) -> list:
    from matplotlib.text import Text

    try:
        fig.draw_without_rendering()  # tick labels get their text only when the figure is drawn
    except Exception:  # noqa: BLE001 - an odd artist must not stop the notebook
        pass
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
            and (t.axes is None or t.axes.get_visible())]


def figure_title(fig) -> str:
    """The figure's suptitle, else its axes' titles joined, else ''."""
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text().strip():
        return sup.get_text().strip()
    titles = []
    for ax in fig.axes:
        for loc in ("center", "left", "right"):
            t = ax.get_title(loc).strip()
            if t and t not in titles:
                titles.append(t)
    return "; ".join(titles)


def alt_text(fig) -> str:
    """Alt text from the title (and the axis labels when there is no title)."""
    title = figure_title(fig)
    if title:
        return f"Figure: {title}"
    labels = [f"{ax.get_xlabel()} against {ax.get_ylabel()}".strip() for ax in fig.axes
              if ax.get_xlabel() or ax.get_ylabel()]
    return "Figure (no title): " + ("; ".join(labels) if labels else "no axis labels")


def ensure_readable(fig, slack: float = 0.9) -> int:
    """Enlarge any text that would show smaller than :data:`MIN_SHOWN_PX` once the page scales the
    figure to its text column (``slack`` allows for a tight bounding box wider than the figure).
    Returns how many texts were enlarged. Called for every figure shown inline."""
    scale = min(1.0, TEXT_COLUMN_PX / (float(fig.get_figwidth()) * float(fig.dpi))) * slack
    need_pt = max(MIN_FONT_PT, MIN_SHOWN_PX / (float(fig.dpi) / 72.0 * scale))
    changed = 0
    for text in _texts(fig):
        if text.get_fontsize() < need_pt:
            text.set_fontsize(need_pt)
            changed += 1
    return changed


def figure_info(fig) -> dict[str, Any]:
    """Title, alt text, smallest font (points; the provenance line included), width and dpi."""
    texts = _texts(fig)
    sizes = [float(t.get_fontsize()) for t in texts]
    smallest = min(texts, key=lambda t: t.get_fontsize()) if texts else None
    return {
        "title": figure_title(fig),
        "alt": alt_text(fig),
        "min_font_pt": round(min(sizes), 2) if sizes else None,
        "min_font_text": smallest.get_text()[:40] if smallest is not None else None,
        "width_in": round(float(fig.get_figwidth()), 3),
        "dpi": float(fig.dpi),
        "stamped": any(t.get_gid() == STAMP_GID for t in fig.texts),
    }


def install_figure_metadata() -> bool:
    """Make the inline backend attach :func:`figure_info` to every figure it shows (idempotent).

    Returns False outside an inline-backend kernel (plain Python, scripts), where nothing is shown.
    """
    try:
        from matplotlib_inline import backend_inline
    except ImportError:
        return False
    if getattr(backend_inline, "_fmbook_metadata", False):
        return True
    original = backend_inline._fetch_figure_metadata

    def with_info(fig):
        metadata = dict(original(fig) or {})
        try:
            ensure_readable(fig)  # before the image is rendered: what the reader sees is readable
            metadata[METADATA_KEY] = figure_info(fig)
        except Exception:  # noqa: BLE001 - never lose a figure for its metadata
            pass
        return metadata

    backend_inline._fetch_figure_metadata = with_info
    backend_inline._fmbook_metadata = True
    return True
