"""The book's *Reproduction status* page, generated from the results files.

QuantEcon-style: for each chapter the paper's headline claims beside our measured numbers, with the
profile, hardware, date and execution time that produced ours; then every executed notebook with its
time and the commit it ran at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmbook.book.profiles import ParameterError, list_chapters, list_notebooks, notebook_metadata
from fmbook.book.registry import CHAPTERS, PAPERS
from fmbook.core.paths import repo_root
from fmbook.book.results import iter_results
from fmbook.core.claims import interval_text


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def _with_unit(value: Any, unit: str) -> str:
    """A number gets its unit; a statement (e.g. "qualitative") stands alone."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return _fmt(value) + (f" {unit}" if unit and numeric else "")


def _paper_text(c: dict[str, Any]) -> str:
    paper = c.get("paper")
    text = "qualitative" if paper is None else _with_unit(paper, c.get("unit") or "")
    return text + (f" ({c['paper_source']})" if c.get("paper_source") else "")


def _resolvable_text(c: dict[str, Any]) -> str:
    r = c.get("resolvable")
    if r is None:
        return ""
    unit = f" {c['unit']}" if c.get("unit") else ""
    return f"smallest effect this sample could resolve: {r:.2g}{unit}"


def _hardware(record: dict[str, Any]) -> str:
    hw = record.get("provenance", {}).get("hardware", {})
    text = hw.get("gpu") or f"CPU, {hw.get('cpu_count', '?')} cores"
    return text.replace("|", "/")


def _seconds(record: dict[str, Any]) -> float | None:
    runner = record.get("runner") or {}
    return runner.get("execution_s", record.get("duration_s"))


def _records(root: Path | None, profiles: tuple[str, ...] | None) -> list[dict[str, Any]]:
    return [r for r in iter_results(root) if profiles is None or r.get("profile") in profiles]


def status_rows(root: Path | None = None, profiles: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One row per claim of every results file (of the given profiles)."""
    rows = []
    order = {p: i for i, p in enumerate(profiles or ())}
    for record in sorted(_records(root, profiles), key=lambda r: order.get(r.get("profile"), 99)):
        for c in record.get("claims", []):
            rows.append({
                "chapter": record["chapter"], "notebook": record["notebook"], "claim": c["claim"],
                "paper": _paper_text(c), "ours": interval_text(c),
                "holds here": c["verdict"], "profile": record["profile"], "hardware": _hardware(record),
                "date": (record.get("started_at") or "")[:10],
                "note": "; ".join(x for x in (c.get("comparison", ""), _resolvable_text(c), c.get("note", "")) if x),
            })
    return rows


def _notebook_link(chapter: str, notebook: str, label: str | None = None) -> str:
    """A link from the status page to the notebook's page (when that notebook is part of the book)."""
    root = repo_root()
    if root is not None and (root / "notebooks" / chapter / f"{notebook}.ipynb").is_file():
        return f"[{label or notebook}](../notebooks/{chapter}/{notebook}.ipynb)"
    return label or notebook


def _metadata(chapter: str, notebook: str) -> dict[str, Any]:
    try:
        return notebook_metadata(chapter, notebook)
    except (ParameterError, OSError, ValueError):
        return {}


def _budget_text(record: dict[str, Any]) -> str:
    """The notebook's planned seconds at this profile, flagged when the run took longer."""
    budget = (_metadata(record["chapter"], record["notebook"]).get("budget_s") or {}).get(record["profile"])
    if budget is None:
        return "–"
    seconds = _seconds(record)
    return f"{budget:.0f}" + (" (over)" if seconds is not None and seconds > budget else "")


def _needs_rows() -> list[list[str]]:
    rows = []
    try:
        chapters = list_chapters()
    except (FileNotFoundError, OSError):
        return rows
    for chapter in chapters:
        for notebook in list_notebooks(chapter):
            meta = _metadata(chapter, notebook)
            if not meta:
                continue
            licences = "; ".join(f"{k}: {v}" for k, v in (meta.get("licences") or {}).items())
            rows.append([_notebook_link(chapter, notebook, label=f"{chapter}/{notebook}"),
                         str(meta.get("description", "")), str(meta.get("accelerator_full", "")), licences])
    return rows


def _produced_by(row: dict[str, Any]) -> str:
    return f"{_notebook_link(row['chapter'], row['notebook'])} · {row['profile']} · {row['hardware']} · {row['date']}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c.replace("|", "\\|") for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


def render_markdown(published_profile: str, root: Path | None = None) -> str:
    """The page's MyST source: the published profile's results and any committed ``full`` ones."""
    shown = (published_profile, "full")
    records = _records(root, shown)
    rows = status_rows(root, shown)
    out = [
        "# Reproduction status",
        "",
        "This page is generated when the book is built, from the results file that every executed "
        "notebook writes (`results/<chapter>/<profile>/<notebook>.json`). Each row puts a claim of a "
        "paper beside the number we measured, and says which profile, hardware and date produced ours. "
        f"The notebooks shown in this build were executed at the **{published_profile}** profile; "
        "results of `full` runs on a GPU, when present, are committed files and appear beside them.",
        "",
    ]
    for paper in PAPERS:
        mine = [r for r in rows if r["chapter"] == paper.id]
        out += [f"## {paper.title}", "", f"{{cite}}`{paper.bibkey}` · arXiv {paper.arxiv}", ""]
        if mine:
            out.append(_table(["claim", "paper", "ours (95% interval)", "verdict", "measured by"],
                              [[r["claim"], r["paper"], r["ours"], r["holds here"], _produced_by(r)] for r in mine]))
            notes = [f"- *{r['notebook']}*, {r['claim']}: {r['note']}" for r in mine if r["note"]]
            if notes:
                out += ["", "Notes:", "", *notes]
        else:
            out.append("Not reproduced yet. The paper's headline claims, for when it is:")
            out.append("")
            out.append(_table(["claim", "paper", "ours"], [[c.claim, c.paper, "not yet measured"] for c in paper.claims]))
        out.append("")
    others = sorted({r["chapter"] for r in records} - {p.id for p in PAPERS})
    for chapter in others:
        mine = [r for r in rows if r["chapter"] == chapter]
        if mine:
            out += [f"## Chapter `{chapter}`", "",
                    _table(["claim", "ours", "measured by"], [[r["claim"], r["ours"], _produced_by(r)] for r in mine]), ""]
    out += ["## Every executed notebook", "",
            "Execution time, hardware and the commit of each run (as QuantEcon's lectures do).", ""]
    if not records:
        out.append("No notebook has been executed yet.")
    for profile in shown:
        mine = sorted((r for r in records if r["profile"] == profile), key=lambda r: (r["chapter"], r["notebook"]))
        if not mine:
            continue
        out += [f"At the `{profile}` profile:", ""]
        out.append(_table(
            ["notebook", "time (s)", "budget (s)", "executed (UTC)", "hardware", "commit"],
            [[_notebook_link(r["chapter"], r["notebook"], label=f"{r['chapter']}/{r['notebook']}"),
              _seconds(r), _budget_text(r), (r.get("started_at") or "")[:16].replace("T", " "), _hardware(r),
              ((r.get("provenance", {}).get("git", {}).get("commit") or "–")[:10])] for r in mine]))
        out.append("")
    needs = _needs_rows()
    if needs:
        out += ["", "## What each notebook needs", "",
                "From each notebook's front matter: what it shows, what its `full` profile needs, and the "
                "licences of the models and data it uses.", "",
                _table(["notebook", "what it shows", "full needs", "licences"], needs)]
    for profile in shown:
        times = [t for r in records if r["profile"] == profile and (t := _seconds(r)) is not None]
        if times:
            out += ["", f"Total execution time at `{profile}`: {sum(times):.0f} s over {len(times)} notebooks "
                        "(one after another; `-j 2` runs chapters in parallel)."]
    out.append("")
    return "\n".join(out)


def chapter_status(chapter_id: str, records: list[dict[str, Any]]) -> str:
    """One cell of the intro's chapter table: what has been measured for this chapter, and where."""
    mine = [r for r in records if r.get("chapter") == chapter_id]
    if not mine:
        return "not run in this build"
    profiles = sorted({r["profile"] for r in mine}, key=lambda p: ("smoke", "local", "full").index(p)
                      if p in ("smoke", "local", "full") else 9)
    where = " and ".join(f"`{p}`" for p in profiles)
    claims = [c for r in mine for c in r.get("claims", [])]
    if not claims:
        return f"notebooks run at {where}; no claim measured yet"
    counts = {v: sum(c.get("verdict") == v for c in claims) for v in ("holds", "contradicted", "not resolved")}
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return f"{len(claims)} claim{'s' if len(claims) != 1 else ''} measured at {where}: {verdicts}"


def chapters_markdown(published_profile: str, root: Path | None = None) -> str:
    """The intro's chapter table, generated at build time from the registry and the results files:
    every chapter, its paper, and whether (and at which profile) it has been reproduced."""
    records = _records(root, (published_profile, "full"))
    ran = {r["chapter"] for r in records}
    lines = ["% generated by fmbook.book.status.chapters_markdown when the book is built; do not edit", "",
             "| chapter | paper | what it asks | reproduced here |", "| --- | --- | --- | --- |"]
    for c in CHAPTERS:
        link = f"{{doc}}`{(c.short or c.title).replace('|', '/')} </{c.landing_page}>`"
        paper = f"{{cite:t}}`{c.bibkey}`" if c.bibkey else {"atlas": "the collection around them",
                                                              "appendix": "the book's own assets"}.get(c.kind, "")
        if c.kind == "paper":
            state = chapter_status(c.id, records) if c.id in ran else "**not reproduced yet**"
        else:
            state = "—" if c.id not in ran else chapter_status(c.id, records).split(";")[0]
        lines.append(f"| {link} | {paper} | {c.question.replace('|', '/')} | {state} |")
    n_done = sum(1 for c in PAPERS if c.id in ran)
    lines += ["", f"Of the {len(PAPERS)} papers, {n_done} {'has' if n_done == 1 else 'have'} notebooks that ran for this build "
                  f"(profile `{published_profile}`); the others are described on their landing pages "
                  "and not reproduced yet.", ""]
    return "\n".join(lines)


def chapter_times_markdown(chapter: str, root: Path | None = None) -> str:
    """A landing page's table: each notebook's planned budget and last measured time per profile."""
    try:
        notebooks = list_notebooks(chapter)
    except (ParameterError, FileNotFoundError):
        return ""
    measured = {(r["notebook"], r["profile"]): _seconds(r) for r in iter_results(root) if r.get("chapter") == chapter}
    header = ["notebook", "what it shows", "smoke: last run (budget)", "local: last run (budget)"]
    rows = []
    for notebook in notebooks:
        meta = _metadata(chapter, notebook)
        budget = meta.get("budget_s") or {}
        cells = []
        for profile in ("smoke", "local"):
            seconds = measured.get((notebook, profile))
            planned = f" ({budget[profile]:.0f} s)" if profile in budget else ""
            cells.append((f"{seconds:.0f} s" if seconds is not None else "not run here") + planned)
        rows.append([f"{{doc}}`{notebook} </notebooks/{chapter}/{notebook}>`", str(meta.get("description", "")), *cells])
    return ("Time per notebook on the machine that built this page (last run), with the planned budget "
            "in brackets:\n\n" + _table(header, rows) + "\n")
