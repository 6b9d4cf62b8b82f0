"""The book's plotting style and the provenance line printed under every figure."""

from __future__ import annotations

from typing import Iterable

import matplotlib

PALETTE = "colorblind"


def apply_style() -> None:
    """Seaborn's white grid, colour-blind palette, readable sizes; the same in every notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    matplotlib.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 110,
        "savefig.bbox": "tight",
        "figure.figsize": (6.4, 4.0),
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
    })


def provenance_line(models: Iterable[str], data: Iterable[str], profile: str, seed: object) -> str:
    models, data = list(models), list(data)
    parts = [f"model: {', '.join(models) if models else 'none'}",
             f"data: {', '.join(data) if data else 'none'}",
             f"profile: {profile}", f"seed: {seed}"]
    return "  ·  ".join(parts)


def stamp_figure(fig, text: str) -> None:
    """Write ``text`` in small grey type under everything the figure draws (axis labels included).

    Call it once the figure is laid out (after ``tight_layout``, if any); ``bbox_inches='tight'``
    keeps it in the saved image.
    """
    try:
        bbox = fig.get_tightbbox(fig.canvas.get_renderer())
        y = bbox.y0 / fig.get_figheight() - 0.015
        x = max(bbox.x0 / fig.get_figwidth(), -0.05)
    except Exception:  # a backend without a renderer: fall back to just below the figure
        x, y = 0.0, -0.06
    fig.text(x, y, text, ha="left", va="top", fontsize=7, color="0.4", wrap=True, transform=fig.transFigure)
