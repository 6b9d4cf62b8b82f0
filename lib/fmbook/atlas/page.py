"""The interactive map and table: static HTML drawn here plus a small inline script (no network)."""

from __future__ import annotations

import hashlib
import html
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fmbook.atlas.analysis import PALETTE, AtlasResult
from fmbook.atlas.clustering import nearest
from fmbook.atlas.common import CHAPTER_LABELS, CHAPTERS
from fmbook.atlas.dedup import Paper
from fmbook.core.display import MISSING


def _asset_text(name: str) -> str:
    return (Path(__file__).resolve().parents[1] / "atlas_assets" / name).read_text(encoding="utf-8")


def _json_for_script(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _chapter_labels(papers: Sequence[Paper], xs: np.ndarray, ys: np.ndarray, width: int,
                    height: int) -> list[str]:
    """SVG labels of the chapter papers, each placed where it overlaps no label placed before."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for i, p in enumerate(papers):
        if not p.chapter:
            continue
        text = CHAPTER_LABELS.get(p.chapter, p.chapter)
        w, h = 6.6 * len(text) + 4, 14.0
        best = None
        for dx, dy in ((9, -8), (9, 16), (-9, -8), (-9, 16), (9, -22), (-9, -22), (9, 30), (-9, 30)):
            x0 = xs[i] + dx if dx > 0 else xs[i] + dx - w
            y0 = ys[i] + dy - h + 3
            box = (x0, y0, x0 + w, y0 + h)
            inside = box[0] >= 0 and box[2] <= width and box[1] >= 0 and box[3] <= height
            clash = any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3]) for b in placed)
            if inside and not clash:
                best = (dx, dy, box)
                break
            if best is None and inside:
                best = (dx, dy, box)
        if best is None:
            best = (9, -8, (xs[i] + 9, ys[i] - 19, xs[i] + 9 + w, ys[i] - 5))
        dx, dy, box = best
        placed.append(box)
        anchor = "start" if dx > 0 else "end"
        out.append(f'<text class="atl-lab" x="{xs[i] + dx:.1f}" y="{ys[i] + dy:.1f}" '
                   f'text-anchor="{anchor}">{html.escape(text)}</text>')
    return out


def atlas_html(result: AtlasResult, width: int = 760, height: int = 560, n_neighbours: int | None = None,
               element_id: str | None = None, include_script: bool = True) -> str:
    """The interactive atlas as one HTML fragment (for ``IPython.display.HTML``).

    * an SVG map drawn here: one circle per paper, coloured by cluster, the seven chapter papers
      ringed and labelled; each circle carries an SVG ``<title>`` (hover shows the title even
      without JavaScript);
    * a search box (words in title or abstract, all must match), a chapter picker, a cluster
      legend (click to filter), an info panel (abstract quoted, ten nearest neighbours);
    * a table of all papers, sortable by any column, filtered by the same search;
    * the data as JSON and the script (``atlas_assets/atlas.js``), inline: nothing is fetched.
    """
    papers, labels = result.papers, result.labels
    n_nb = n_neighbours or result.config.n_neighbours
    pad = 18
    xs = pad + result.xy[:, 0] * (width - 2 * pad)
    ys = pad + (1.0 - result.xy[:, 1]) * (height - 2 * pad)
    colours = {c: PALETTE[c % len(PALETTE)] for c in result.names}
    uid = element_id or "atl-" + hashlib.sha1(
        json.dumps([p.paper_id for p in papers] + result.labels.tolist()).encode()).hexdigest()[:10]
    data = {
        "papers": [{"t": p.title, "a": p.abstract, "c": int(lab), "x": round(float(x), 1),
                    "y": round(float(y), 1), "arxiv": p.arxiv_id, "src": ", ".join(s.split("_")[0] for s in p.sources),
                    "ch": p.chapter} for p, lab, x, y in zip(papers, labels, xs, ys)],
        "clusters": [{"name": result.names[c], "color": colours[c]} for c in sorted(result.names)],
        "nb": [[[j, round(s, 3)] for j, s in nearest(result.sim, i, n_nb)] for i in range(len(papers))],
        "chapters": {p.chapter: i for i, p in enumerate(papers) if p.chapter},
    }
    esc = html.escape
    circles = []
    order = sorted(range(len(papers)), key=lambda i: papers[i].chapter is not None)  # chapter papers on top
    for i in order:
        p = papers[i]
        cls = "atl-pt atl-ch" if p.chapter else "atl-pt"
        r = 7 if p.chapter else 4.2
        tab = ' tabindex="0"' if p.chapter else ""
        circles.append(f'<circle class="{cls}" data-i="{i}" cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="{r}" '
                       f'fill="{colours[int(labels[i])]}"{tab}><title>{esc(p.title)}</title></circle>')
    labels_svg = _chapter_labels(papers, xs, ys, width, height)
    sizes = Counter(labels.tolist())
    legend = "".join(f'<li data-c="{c}" title="show only this cluster (click again for all)">'
                     f'<span class="atl-swatch" style="background:{colours[c]}"></span>'
                     f'<span>{esc(result.names[c])} <span class="atl-note">({sizes[c]})</span></span></li>'
                     for c in sorted(result.names))
    options = "".join(f'<option value="{c}">{esc(CHAPTER_LABELS.get(c, c))} ({c})</option>'
                      for c in CHAPTERS if c in data["chapters"])
    rows = []
    for i, (p, lab) in enumerate(zip(papers, labels)):
        # missing values read "—" and sort after every present one, in both directions (data-last)
        link = (f'<td><a href="https://arxiv.org/abs/{esc(p.arxiv_id)}" target="_blank" rel="noopener">'
                f'{esc(p.arxiv_id)}</a></td>') if p.arxiv_id else f'<td data-last="1" title="no arXiv id in the listings">{MISSING}</td>'
        chapter = (f"<td>{esc(CHAPTER_LABELS.get(p.chapter, p.chapter))}</td>" if p.chapter
                   else f'<td data-last="1">{MISSING}</td>')
        title = (f'<td data-last="1" title="no listing gives a title; the opening words of the abstract">'
                 f'{esc(p.title)}</td>') if p.title_missing else f"<td>{esc(p.title)}</td>"
        rows.append(f'<tr data-i="{i}"><td data-v="{i}">{i + 1}</td>{title}'
                    f'<td data-v="{int(lab):03d}"><span class="atl-swatch" style="background:{colours[int(lab)]}"></span> '
                    f'{esc(result.names[int(lab)])}</td>{chapter}'
                    f'<td>{esc(", ".join(s.split("_")[0] for s in p.sources))}</td>{link}</tr>')
    cfg = result.config
    caption = (f"{len(papers)} papers, embedded with {esc(cfg.encoder)}, {result.k} {esc(cfg.clusterer)} clusters, "
               f"2-D map by {esc(cfg.projection)} (seed {cfg.seed}). Distances on the map are only roughly "
               "faithful; the neighbour lists use the cosine similarity of the full embeddings.")
    parts = [
        f'<div class="fmbook-atlas" id="{uid}">',
        f"<style>{_asset_text('atlas.css')}</style>",
        '<div class="atl-controls">',
        '<input type="search" class="atl-search" placeholder="Search words in titles and abstracts…" '
        'aria-label="Search words in titles and abstracts">',
        f'<select class="atl-chapter" aria-label="Highlight a chapter paper and its neighbours">'
        f'<option value="">Highlight a chapter’s neighbours…</option>{options}</select>',
        '<button type="button" class="atl-reset">Reset</button>',
        f'<span class="atl-count" aria-live="polite">{len(papers)} papers</span>',
        "</div>",
        '<div class="atl-body">',
        f'<svg class="atl-map" viewBox="0 0 {width} {height}" role="img" aria-label="Map of {len(papers)} papers">',
        '<g class="atl-edges"></g><g class="atl-points">', *circles, "</g>",
        '<g class="atl-labels">', *labels_svg, "</g></svg>",
        '<div class="atl-side"><ul class="atl-legend">', legend, "</ul>",
        '<div class="atl-info"><p class="atl-note">Hover a point for its title. The search, the chapter '
        "picker and click-to-highlight need JavaScript; the table below works without it.</p></div></div>",
        "</div>",
        f'<p class="atl-note">{caption}</p>',
        '<div class="atl-tooltip" hidden></div>',
        f'<details class="atl-tablewrap" open><summary>All {len(papers)} papers (click a column to sort, '
        "a row to show the paper on the map)</summary>",
        '<div class="atl-scroll"><table class="atl-table"><thead><tr>'
        '<th data-type="num">#</th><th>Title</th><th>Cluster</th><th>Chapter</th><th>Listings</th>'
        "<th>arXiv</th></tr></thead><tbody>", *rows, "</tbody></table></div></details>",
        f'<script type="application/json" class="atl-data">{_json_for_script(data)}</script>',
    ]
    if include_script:
        parts.append(f"<script>{_asset_text('atlas.js')}</script>")
    parts.append("</div>")
    return "\n".join(parts)


def standalone_html(result: AtlasResult, title: str = "Related-work atlas") -> str:
    """A complete HTML page holding :func:`atlas_html` (for the browser tests and for sharing)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'</head><body><h1>{html.escape(title)}</h1>\n{atlas_html(result)}\n</body></html>\n')

