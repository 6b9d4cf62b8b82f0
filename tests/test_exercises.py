"""Teaching material: every notebook ends with exercises of the three kinds, each with a solution, and
every landing page states learning goals, prerequisites and times (issue 18). Executed solutions run
with their notebook at every profile, so the notebook tests execute them."""

from __future__ import annotations

from fmbook.book import checks
from fmbook.book.registry import Chapter
from fmbook.core.paths import repo_root

ROOT = repo_root()


def test_every_notebook_ends_with_exercises_of_each_kind():
    problems = checks.exercise_problems(ROOT / "notebooks")
    assert not problems, "\n".join(problems)


def test_every_landing_page_has_goals_prerequisites_and_times():
    problems = checks.landing_problems(ROOT / "book")
    assert not problems, "\n".join(problems)


def _problems(tmp_path, body: str) -> list[str]:
    folder = tmp_path / "notebooks" / "demo"
    folder.mkdir(parents=True)
    (folder / "01_demo.md").write_text(body)
    return checks.exercise_problems(tmp_path / "notebooks", [Chapter(id="demo", title="Demo", kind="tool")])


EXERCISE = "```{{exercise}} {title}\n:label: demo-01-{kind}\n\nText.\n```\n\n```{{solution}} demo-01-{kind}\n:class: dropdown\n\nAnswer.\n```\n\n"


def test_exercise_check_catches_a_missing_kind_a_missing_solution_and_a_late_exercise(tmp_path):
    good = "# Demo\n\n" + "".join(EXERCISE.format(title=k, kind=k) for k in checks.EXERCISE_KINDS)
    good += "```{code-cell}\nrun.finish()\n```\n"
    assert _problems(tmp_path, good) == []

    no_argue = good.replace("demo-01-argue", "demo-01-other")
    assert any("'argue'" in p for p in _problems(tmp_path / "a", no_argue))

    unsolved = good.replace("```{solution} demo-01-extend", "```{note}")
    assert any("no solution" in p for p in _problems(tmp_path / "b", unsolved))

    late = "# Demo\n\n```{code-cell}\nrun.finish()\n```\n\n" + "".join(EXERCISE.format(title=k, kind=k) for k in checks.EXERCISE_KINDS)
    assert any("before the last cell" in p for p in _problems(tmp_path / "c", late))


def test_landing_check_catches_missing_and_misordered_sections(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    demo = Chapter(id="demo", title="Demo", kind="tool")
    (chapters / "demo.md").write_text("# Demo\n\n## Prerequisites\n\nNone.\n\n## Learning goals\n\n- a\n\n## Time to run\n")
    assert any("before prerequisites" in p for p in checks.landing_problems(tmp_path, [demo]))
    (chapters / "demo.md").write_text("# Demo\n\n## Learning goals\n\n- a\n")
    problems = checks.landing_problems(tmp_path, [demo])
    assert any("Prerequisites" in p for p in problems) and any("Time to run" in p for p in problems)
