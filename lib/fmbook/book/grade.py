"""``python -m fmbook grade STUDENT.ipynb``: run a student's edited notebook and compare its results.

The student's notebook (``.ipynb``, or a MyST ``.md`` text notebook) is executed exactly as the runner
executes the book's own (papermill, the profile's parameters, default ``smoke``) into a temporary
folder, so the book's results are never touched. Its results file is then compared with the
reference results of the same notebook (``results/<chapter>/<profile>/<notebook>.json``; the
reference is executed first when missing): did it run to the end, which claims changed verdict, and
which metrics moved by more than a relative tolerance. The chapter and notebook are read from the
notebook's bootstrap cell (``nb.start(globals(), chapter=..., notebook=...)``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fmbook.book import profiles as P
from fmbook.book import runner
from fmbook.book.results import load, result_path

START_RE = re.compile(r'nb\.start\(globals\(\),\s*chapter="([^"]+)",\s*notebook="([^"]+)"\)')


class GradeError(ValueError):
    pass


@dataclass
class GradeReport:
    chapter: str
    notebook: str
    profile: str
    finished: bool
    message: str = ""
    verdict_changes: list[tuple[str, str, str]] = field(default_factory=list)  # claim, reference, student
    metric_changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # name, reference, student
    missing_metrics: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"{self.chapter}/{self.notebook} at {self.profile}: "
                 + ("ran to the end" if self.finished else f"FAILED: {self.message}")]
        if self.finished:
            lines.append(f"claims whose verdict changed: {len(self.verdict_changes)}")
            lines += [f"  - {c}: {a} -> {b}" for c, a, b in self.verdict_changes]
            lines.append(f"metrics that moved beyond the tolerance: {len(self.metric_changes)}")
            lines += [f"  - {n}: {a} -> {b}" for n, a, b in self.metric_changes]
            if self.missing_metrics:
                lines.append(f"metrics of the reference the student's run did not log: {', '.join(self.missing_metrics)}")
        return "\n".join(lines)


def identify(path: Path) -> tuple[str, str]:
    """(chapter, notebook) from the bootstrap cell of a notebook file."""
    match = START_RE.search(path.read_text(encoding="utf-8"))
    if not match:
        raise GradeError(f"{path}: no bootstrap cell with nb.start(globals(), chapter=..., notebook=...)")
    return match.group(1), match.group(2)


@contextmanager
def _elsewhere(folder: Path) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("FMBOOK_RESULTS", "FMBOOK_BUILD")}
    os.environ["FMBOOK_RESULTS"], os.environ["FMBOOK_BUILD"] = str(folder / "results"), str(folder / "build")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _moved(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not all(isinstance(v, (int, float)) for v in (a, b)):
        return a != b
    if any(math.isnan(v) for v in (a, b)):
        return not all(math.isnan(v) for v in (a, b))
    return not math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)


def compare(reference: dict[str, Any], student: dict[str, Any], rel_tol: float = 0.05) -> tuple[list, list, list]:
    ref_claims = {c["claim"]: c["verdict"] for c in reference.get("claims", [])}
    new_claims = {c["claim"]: c["verdict"] for c in student.get("claims", [])}
    verdicts = [(c, v, new_claims.get(c, "missing")) for c, v in ref_claims.items() if new_claims.get(c) != v]
    metrics = [(k, v, student["metrics"][k]) for k, v in reference.get("metrics", {}).items()
               if k in student.get("metrics", {}) and _moved(v, student["metrics"][k], rel_tol)]
    missing = [k for k in reference.get("metrics", {}) if k not in student.get("metrics", {})]
    return verdicts, metrics, missing


def grade(path: str | Path, profile: str = "smoke", rel_tol: float = 0.05) -> GradeReport:
    """Execute the student's notebook at ``profile`` and compare it with the book's reference run."""
    path = Path(path).resolve()
    if not path.is_file():
        raise GradeError(f"no such notebook: {path}")
    P.check_profile(profile)
    chapter, notebook = identify(path)
    P.notebook_path(chapter, notebook)  # a known chapter and notebook (clear error otherwise)
    reference_file = result_path(chapter, profile, notebook)
    if not reference_file.is_file():
        runner.run([f"{chapter}/{notebook}"], profile=profile, echo=lambda _: None)
    reference = load(reference_file)
    with tempfile.TemporaryDirectory(prefix="fmbook-grade-") as tmp:
        folder = Path(tmp)
        source = path
        if path.suffix == ".md":
            import jupytext

            source = folder / f"{notebook}.ipynb"
            jupytext.write(jupytext.read(path), source)
        resolved = P.resolve(chapter, notebook, profile, {})
        with _elsewhere(folder):
            outcome = runner.execute(runner.Job(resolved, source, "grading"), force=True)
            student_file = result_path(chapter, profile, notebook)
            if outcome.status != "ran":
                return GradeReport(chapter, notebook, profile, False, outcome.message)
            student = json.loads(student_file.read_text())
    verdicts, metrics, missing = compare(reference, student, rel_tol)
    return GradeReport(chapter, notebook, profile, True, "", verdicts, metrics, missing)
