"""The runner end to end on a miniature book: execution, provenance, skipping, atomic failures."""

from __future__ import annotations

import json
import os

import pytest

from fmbook.book import nb

from fmbook.book import results

from fmbook.book import runner
from fmbook.book.profiles import ParameterError

PROVENANCE_FIELDS = {"chapter", "notebook", "profile", "parameters", "parameter_sources", "models", "data",
                     "metrics", "claims", "started_at", "duration_s", "provenance", "runner", "device"}


def _result(root, notebook="01_first", profile="smoke"):
    return json.loads((root / "results" / "demo" / profile / f"{notebook}.json").read_text())


def test_run_executes_writes_results_with_provenance_and_then_skips(mini_book):
    lines = []
    outcomes = runner.run(["demo"], profile="smoke", echo=lines.append)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    record = _result(mini_book)
    assert PROVENANCE_FIELDS <= set(record)
    assert record["parameters"] == {"profile": "smoke", "seed": 0, "n": 3, "scale": 0.5, "label": "x", "fail": False}
    assert record["parameter_sources"]["scale"] == "profile"
    assert record["metrics"]["n"] == 3 and record["data"] == [{"id": "demo-normal", "n": 3}]
    assert record["claims"][0]["claim"] == "mean is near zero"
    assert record["claims"][0]["verdict"] in ("holds", "contradicted", "not resolved")
    prov = record["provenance"]
    assert {"cpu", "cpu_count", "gpu"} <= set(prov["hardware"]) and "torch" in prov["packages"]
    assert "commit" in prov["git"] and record["runner"]["execution_s"] > 0
    executed = mini_book / "_build/executed/smoke/demo/01_first.ipynb"
    cells = json.loads(executed.read_text())["cells"]
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "remove-cell" in injected[0]["metadata"]["tags"]
    assert any("[1/2] demo/01_first: done in" in line for line in lines)

    again = runner.run(["demo"], profile="smoke", echo=lines.append)
    assert [o.status for o in again] == ["skipped", "skipped"]
    # a changed parameter re-runs only the notebook that declares it
    changed = runner.run(["demo"], profile="smoke", overrides={"scale": 2.0}, echo=lines.append)
    assert [o.status for o in changed] == ["ran", "skipped"]
    assert _result(mini_book)["parameters"]["scale"] == 2.0
    forced = runner.run(["demo/02_second"], profile="smoke", force=True, echo=lines.append)
    assert [o.status for o in forced] == ["ran"]


def test_same_profile_and_seed_give_the_same_numbers(mini_book):
    runner.run(["demo/01_first"], profile="smoke", echo=lambda s: None)
    first = _result(mini_book)["metrics"]
    runner.run(["demo/01_first"], profile="smoke", force=True, echo=lambda s: None)
    assert _result(mini_book)["metrics"] == first


def test_library_change_invalidates(mini_book, monkeypatch):
    runner.run(["demo/02_second"], profile="smoke", echo=lambda s: None)
    monkeypatch.setattr(runner, "library_hash", lambda: "another version of the library")
    assert [o.status for o in runner.run(["demo/02_second"], profile="smoke", echo=lambda s: None)] == ["ran"]


def test_failure_names_notebook_and_cell_and_keeps_previous_results(mini_book):
    runner.run(["demo"], profile="smoke", echo=lambda s: None)
    good = _result(mini_book)
    lines = []
    outcomes = runner.run(["demo"], profile="smoke", overrides={"fail": True}, echo=lines.append)
    assert [o.status for o in outcomes] == ["failed", "not run"]
    message = outcomes[0].message
    assert "demo/01_first failed at cell" in message and "ValueError: asked to fail" in message
    assert "if fail:" in message  # the failing cell is quoted
    assert _result(mini_book) == good  # untouched
    assert not list((mini_book / "results").rglob("*.tmp")) and not list((mini_book / "results").rglob(".*"))
    assert (mini_book / "_build/failed/smoke/demo/01_first.ipynb").is_file()
    assert not list((mini_book / "_build/tmp").iterdir())
    assert any("FAILED" in line for line in lines)


def test_unknown_names_are_refused_before_anything_runs(mini_book):
    with pytest.raises(ParameterError, match="unknown parameter 'bogus'"):
        runner.run(["demo"], profile="smoke", overrides={"bogus": 1}, echo=lambda s: None)
    with pytest.raises(ParameterError, match="unknown profile"):
        runner.run(["demo"], profile="gpu", echo=lambda s: None)
    with pytest.raises(ParameterError, match="unknown chapter"):
        runner.run(["nope"], profile="smoke", echo=lambda s: None)
    assert not (mini_book / "results").exists()


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    results.atomic_write_json(path, {"a": 1})

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_to_jsonable_converts_numpy_and_nan():
    import numpy as np

    assert results.to_jsonable({"x": np.float32(0.5), "y": np.arange(2), "z": float("nan")}) == {
        "x": 0.5, "y": [0, 1], "z": None}


def test_start_outside_the_runner_applies_the_profile_and_keeps_edits(mini_book, capsys):
    namespace = {"profile": "smoke", "seed": 0, "n": 10, "scale": 9.0, "label": "x", "fail": False}
    run = nb.start(namespace, chapter="demo", notebook="01_first")
    assert namespace["n"] == 3  # profile value replaced the unchanged default
    assert namespace["scale"] == 9.0 and run.sources["scale"] == "override"  # the reader's edit is kept
    auto = {"profile": "auto", "seed": 0, "n": 10, "scale": 1.5, "label": "x", "fail": False}
    assert nb.start(auto, chapter="demo", notebook="01_first").profile == "local"  # no GPU here
    assert run.finish() is None  # nothing printed under the last cell
    assert run.result_file == mini_book / "results/demo/smoke/01_first.json" and run.finished


def test_grade_runs_a_students_copy_and_reports_changed_verdicts_and_metrics(mini_book):
    from fmbook.book.grade import grade

    student = mini_book / "student" / "01_first.md"
    student.parent.mkdir()
    text = (mini_book / "notebooks/demo/01_first.md").read_text()
    student.write_text(text.replace("* scale", "* scale + 100.0"))  # the student's edit moves the mean
    report = grade(student)
    assert report.finished, report.message
    assert [c[0] for c in report.metric_changes] == ["mean"]
    assert report.verdict_changes == [("mean is near zero", "holds", "contradicted")]
    assert not (mini_book / "results/demo/smoke/01_first.json").read_text().count("100.0")  # reference untouched
    broken = mini_book / "student" / "broken.md"
    broken.write_text(text.replace("if fail:", "if True:"))
    failed = grade(broken)
    assert not failed.finished and "asked to fail" in failed.message


def test_estimate_uses_the_last_run_then_the_budget_and_long_chapters_start_first(mini_book, monkeypatch):
    from types import SimpleNamespace

    from fmbook.book import profiles

    job = runner.plan(["demo/01_first"], "smoke")[0]
    monkeypatch.setattr(profiles, "notebook_metadata", lambda c, n: {"budget_s": {"smoke": 42, "local": 600}})
    assert runner.estimate_seconds(job) == 42.0, "no result file yet: the front matter's budget"
    monkeypatch.setattr(profiles, "notebook_metadata", lambda c, n: {})
    assert runner.estimate_seconds(job) == runner.DEFAULT_ESTIMATE_S["smoke"]
    runner.run(["demo/01_first"], profile="smoke", echo=lambda s: None)
    assert runner.estimate_seconds(job) == pytest.approx(_result(mini_book)["runner"]["execution_s"])

    jobs = {name: SimpleNamespace(name=name) for name in ("a/1", "a/2", "b/1", "c/1")}
    by_chapter = {"a": [jobs["a/1"], jobs["a/2"]], "b": [jobs["b/1"]], "c": [jobs["c/1"]]}
    seconds = {"a/1": 10.0, "a/2": 10.0, "b/1": 50.0, "c/1": 20.0}
    order = runner.longest_first(by_chapter, seconds)
    assert [chapter[0].name for chapter in order] == ["b/1", "a/1", "c/1"], "50 s, then 20 s (tie: book order)"


def test_workers_share_the_cores_out_instead_of_oversubscribing():
    assert runner.threads_per_worker(1, cores=2) is None, "one worker keeps the libraries' default"
    assert runner.threads_per_worker(2, cores=2) == 1
    assert runner.threads_per_worker(2, cores=16) == 8
    assert runner.threads_per_worker(4, cores=2) == 1, "never fewer than one thread"
