"""The Reproduction status page and the book staging, from results files (no notebook executed)."""

from __future__ import annotations

import pytest

from fmbook.book import build as book

from fmbook.book import status
from fmbook.book.registry import PAPERS
from fmbook.book.results import atomic_write_json


def _claim(claim, estimate, low, high, paper=None, unit="", **kw):
    from fmbook.core.claims import Claim

    return Claim(claim, estimate, low, high, "a paired comparison", paper=paper, unit=unit, **kw).row()


def _record(chapter, notebook, profile, claims, seconds=12.5):
    return {"chapter": chapter, "notebook": notebook, "profile": profile, "claims": claims,
            "started_at": "2026-11-24T08:00:00+00:00", "duration_s": seconds,
            "runner": {"execution_s": seconds},
            "provenance": {"hardware": {"cpu": "x", "cpu_count": 2, "gpu": None}, "git": {"commit": "abcdef1234567"}}}


def test_status_page_puts_paper_beside_ours_and_lists_every_paper(tmp_path):
    atomic_write_json(tmp_path / "nmtune/local/05_paper_vs_ours.json", _record("nmtune", "05_paper_vs_ours", "local", [
        _claim("OOD hurts", -3.25, -5.0, -1.5, unit="points", direction="decrease", paper_source="Figure 2", note="small scale")]))
    gpu = _record("nmtune", "05_paper_vs_ours", "full", [_claim("OOD hurts", 1.0, -1.0, 3.0, direction="decrease")])
    gpu["provenance"]["hardware"]["gpu"] = "NVIDIA H100"
    atomic_write_json(tmp_path / "nmtune/full/05_paper_vs_ours.json", gpu)
    atomic_write_json(tmp_path / "nmtune/smoke/05_paper_vs_ours.json", _record("nmtune", "05_paper_vs_ours", "smoke", []))
    # the committed LM benchmark sits beside the chapters but is no notebook's record
    atomic_write_json(tmp_path / "bench/local/lm_qwen.json", {"model": "qwen", "profile": "local", "settings": []})
    page = status.render_markdown("local", root=tmp_path)
    assert "| OOD hurts | qualitative (Figure 2) | -3.25 [-5.00, -1.50] points | holds | " in page
    assert "| OOD hurts | qualitative | +1.00 [-1.00, +3.00] | not resolved |" in page
    assert "05_paper_vs_ours.ipynb) · local · CPU, 2 cores · 2026-11-24 |" in page  # links the notebook
    assert "NVIDIA H100" in page  # committed GPU results appear beside the local ones
    assert "| nmtune | 05_paper_vs_ours | smoke" not in page  # other CPU profiles are not mixed in
    for paper in PAPERS:
        assert paper.title in page and f"{{cite}}`{paper.bibkey}`" in page
    assert "Not reproduced yet" in page  # chapters without results say so
    assert "abcdef1234" in page and "12.5" in page


def test_staging_refuses_when_notebooks_were_not_executed(mini_book):
    with pytest.raises(book.BookError, match=r"not executed at profile 'smoke': demo/01_first, demo/02_second"):
        book.stage("smoke")


def test_toc_files_walks_parts_chapters_and_sections():
    toc = {"root": "book/intro", "parts": [{"chapters": [{"file": "a", "sections": [{"file": "b"}]}, {"file": "c"}]}]}
    assert book.toc_files(toc) == ["book/intro", "a", "b", "c"]


def test_budget_column_flags_a_run_over_its_planned_time(monkeypatch):
    monkeypatch.setattr(status, "notebook_metadata", lambda c, n: {"budget_s": {"local": 10, "smoke": 60}})
    assert status._budget_text(_record("nmtune", "01_x", "local", [], seconds=12.5)) == "10 (over)"
    assert status._budget_text(_record("nmtune", "01_x", "smoke", [], seconds=12.5)) == "60"
    monkeypatch.setattr(status, "notebook_metadata", lambda c, n: {})
    assert status._budget_text(_record("nmtune", "01_x", "local", [])) == "–"


def test_costs_pick_the_latest_cold_and_warm_whole_book_runs_and_readme_shows_the_record():
    from fmbook.book import costs
    from fmbook.core.paths import repo_root

    entries = [
        {"profile": "local", "targets": ["all"], "wall_s": 900.0, "ran": 30, "failed": 0, "cache_mb_before": 0.0},
        {"step": "build", "profile": "smoke", "wall_s": 40.0},
        {"step": "build", "profile": "local", "wall_s": 80.0},
        {"profile": "local", "targets": ["nmtune"], "wall_s": 60.0, "ran": 5, "failed": 0, "cache_mb_before": 0.0},
        {"step": "run", "profile": "local", "targets": ["all"], "wall_s": 300.0, "ran": 30, "failed": 0,
         "cache_mb_before": 4000.0},
        {"step": "run", "profile": "local", "targets": ["all"], "wall_s": 3.0, "ran": 0, "failed": 0,
         "cache_mb_before": 4000.0},
        {"profile": "smoke", "targets": ["all"], "wall_s": 90.0, "ran": 30, "failed": 0, "cache_mb_before": 0.0},
    ]
    summary = costs.summarise(entries, "local")
    assert summary["cold"]["wall_s"] == 900.0 and summary["warm"]["wall_s"] == 300.0
    assert summary["cold"]["build_s"] == 80.0, "the HTML build after the run at the same profile counts"
    assert summary["warm"]["build_s"] is None, "a later run without a build in between has no build time"
    row = costs.render({**summary, "venv_mb": 2000.0, "cache_mb": 4000.0}).splitlines()[2]
    assert "16 min 20 s: notebooks 15 min 00 s + HTML 1 min 20 s" in row, row
    root = repo_root()
    assert (root / "book/costs.json").is_file(), "record the costs: python -m fmbook costs --write"
    assert costs.readme_block(root) in (root / "README.md").read_text(), "README's table is stale: python -m fmbook costs --write"
