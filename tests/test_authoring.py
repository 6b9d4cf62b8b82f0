"""How a chapter is written: text notebooks in sync with their pairs, no typed numbers in prose, one
registry that everything agrees with, and a scaffold that produces a working chapter.

Each check is shown to fail on a deliberate break (the ``*_catches_*`` tests) and to pass on the book.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fmbook.book import checks, pairs
from fmbook.book.registry import CHAPTERS, Chapter
from fmbook.core.paths import repo_root

ROOT = repo_root()


# --- text notebooks and their .ipynb pairs --------------------------------------------------------
def test_every_notebook_is_a_text_file_in_sync_with_its_ipynb():
    assert pairs.pairs(), "no text notebooks found"
    problems = pairs.out_of_sync()
    assert not problems, "\n".join(problems)


def test_sync_check_catches_an_edit_and_sync_repairs_it(tmp_path):
    source = pairs.pairs()[0]
    folder = tmp_path / source.text.parent.name
    folder.mkdir()
    text, ipynb = folder / source.text.name, folder / source.notebook.name
    shutil.copy2(source.text, text)
    shutil.copy2(source.notebook, ipynb)
    assert pairs.out_of_sync(tmp_path) == []
    text.write_text(text.read_text() + "\nA paragraph added to the text.\n")
    problems = pairs.out_of_sync(tmp_path)
    assert len(problems) == 1 and "python -m fmbook sync" in problems[0]
    ids_before = [c.get("id") for c in json.loads(ipynb.read_text())["cells"]]
    assert pairs.sync(tmp_path) == [f"{folder.name}/{text.stem}"]
    assert pairs.out_of_sync(tmp_path) == []
    ids_after = [c.get("id") for c in json.loads(ipynb.read_text())["cells"]]
    assert ids_after[: len(ids_before)] == ids_before  # cell ids are kept: no churn in the .ipynb
    # a change of the front matter alone (a budget) reaches the .ipynb too
    text.write_text(text.read_text().replace("budget_s:\n", "budget_s:\n    full: 7\n", 1))
    assert "metadata differs" in pairs.out_of_sync(tmp_path)[0]
    pairs.sync(tmp_path)
    assert pairs.out_of_sync(tmp_path) == []
    assert json.loads(ipynb.read_text())["metadata"]["fmbook"]["budget_s"]["full"] == 7


def test_sync_check_catches_an_ipynb_without_text(tmp_path):
    source = pairs.pairs()[0]
    (tmp_path / "x").mkdir()
    shutil.copy2(source.notebook, tmp_path / "x" / "01_orphan.ipynb")
    assert "no text notebook" in pairs.out_of_sync(tmp_path)[0]


def test_no_generator_writes_notebooks():
    offenders = [p for p in ROOT.glob("notebooks/**/*.py")]
    assert not offenders, f"notebooks are written as text, not generated: {offenders}"
    assert not (ROOT / "lib/fmbook/book/authoring.py").exists()


def test_every_notebook_declares_its_metadata_in_the_front_matter(tmp_path):
    from fmbook.core.paths import chapters_dir

    problems = checks.metadata_problems(chapters_dir())
    assert not problems, "\n".join(problems)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "01_x.md").write_text("---\nfmbook:\n  description: x\n  budget_s: {smoke: 5}\n---\n# X\n")
    assert "needs seconds for smoke and local" in checks.metadata_problems(tmp_path)[0] or \
        "lacks" in checks.metadata_problems(tmp_path)[0]


# --- numerals in prose ----------------------------------------------------------------------------
def test_prose_has_no_typed_numbers_about_our_runs():
    problems = checks.numeral_problems(checks.prose_files(ROOT), ROOT)
    assert not problems, "numbers in prose must be glued from the run:\n" + "\n".join(problems)


def test_numeral_check_catches_a_typed_result_and_allows_the_rest(tmp_path):
    page = tmp_path / "page.md"
    paragraphs = [
        "# 2. Results",
        "Our accuracy was 91.2% on 300 images.",  # typed: two problems (line 5)
        "Ours is {glue:text}`acc:.1f`% on {glue:text}`n` images.",  # glued
        "The paper reports 8.00%\non 24 tasks {cite}`emotionprompt2023`.",  # the paper's numbers, cited
        "See Table 3, Figure 2 and Section 4, Eq. 1; ResNet-50 and EP01 in 2023; `lr = 0.1`; $x^2$.",
        "1. a list item",
        "```{code-cell}\nx = 42\n```",
        "Two more: 7 apples. <!-- numerals: a worked example -->",
    ]
    page.write_text("---\nfmbook: {budget_s: {smoke: 30}}\n---\n" + "\n\n".join(paragraphs) + "\n")
    problems = checks.numeral_problems([page])
    assert [p.split(": numeral ")[1].split(" ")[0] for p in problems] == ["'91.2%'", "'300'"]
    assert all(":6:" in p for p in problems), problems


def test_numeral_check_reads_the_prose_after_an_exercise_closes(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("---\nfmbook: {budget_s: {smoke: 30}}\n---\n"
                    "```{exercise} Predict\n:label: x-1\n\nWhat if lr were 0.5?\n```\n\n"
                    "````{solution} x-1\n:class: dropdown\n\nCode:\n\n```python\ny = 7\n```\n\nIt gave 91.2%.\n````\n\n"
                    "After the exercises: 300 images.\n")
    found = [p.split(": numeral ")[1].split(" ")[0] for p in checks.numeral_problems([page])]
    assert found == ["'0.5'", "'91.2%'", "'300'"]


# --- the registry ---------------------------------------------------------------------------------
def test_every_registered_chapter_is_complete_and_every_folder_registered():
    problems = checks.registry_problems(ROOT)
    assert not problems, "\n".join(problems)
    ids = [c.id for c in CHAPTERS]
    assert len(ids) == len(set(ids))


def test_registry_check_catches_a_chapter_without_page_toc_or_bib(tmp_path):
    (tmp_path / "book/chapters").mkdir(parents=True)
    (tmp_path / "book/references.bib").write_text("@misc{other,\n title={x}}\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (tmp_path / "notebooks/stray").mkdir(parents=True)
    problems = checks.registry_problems(tmp_path, [Chapter("demo", "Demo", arxiv="1", bibkey="demo2026")])
    text = "\n".join(problems)
    assert "no landing page" in text and "not in _toc.yml" in text and "demo2026" in text
    assert "notebooks/stray: not registered" in text


def test_the_machinery_imports_no_method_module():
    methods = {c.id for c in CHAPTERS} | {"atlas", "catalog", "emotion_attack", "emotion_decode"}
    for path in (ROOT / "lib/fmbook/book").glob("*.py"):
        text = path.read_text()
        for name in methods:
            assert f"fmbook.{name}" not in text.replace(f"fmbook.{name}`", ""), f"{path.name} imports fmbook.{name}"
    for path in (ROOT / "lib/fmbook/core").rglob("*.py"):
        text = path.read_text()
        assert "from fmbook.book" not in text and "import fmbook.book" not in text, path


# --- the scaffold ---------------------------------------------------------------------------------
@pytest.mark.notebooks
def test_new_chapter_scaffold_builds_and_passes_at_smoke(tmp_path):
    """A copy of the library and the book's registry files, a new chapter, run at smoke."""
    for name in ("lib", "book", "tests"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "vendor", "_chapters"))
    for name in ("_toc.yml", "_config.yml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("*.md", "*.ipynb"))
    for folder in (tmp_path / "notebooks").iterdir():  # keep the registry check about the new chapter only
        shutil.rmtree(folder)
    env = {**os.environ, "FMBOOK_ROOT": str(tmp_path), "PYTHONPATH": str(tmp_path / "lib"),
           "FMBOOK_BUILD": str(tmp_path / "_build"), "FMBOOK_RESULTS": str(tmp_path / "results")}
    new = subprocess.run([sys.executable, "-m", "fmbook", "new-chapter", "demo_paper", "--title", "A demo paper"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert new.returncode == 0, new.stderr
    check = ("from fmbook.book import checks, pairs; from pathlib import Path; import fmbook.book.registry as r;"
             "root = Path('.').resolve(); c = r.chapter('demo_paper');"
             "print(checks.registry_problems(root, [c]) + pairs.out_of_sync() + "
             "checks.numeral_problems([root / 'notebooks/demo_paper/01_first_look.md', root / 'book/chapters/demo_paper.md'], root))")
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    run = subprocess.run([sys.executable, "-m", "fmbook", "run", "demo_paper", "--profile", "smoke"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((tmp_path / "results/demo_paper/smoke/01_first_look.json").read_text())
    assert record["claims"][0]["verdict"] in ("holds", "contradicted", "not resolved")
    unit = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_demo_paper.py"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert unit.returncode == 0, unit.stdout + unit.stderr


# --- one setting for the public repository --------------------------------------------------------
def test_repository_setting_feeds_buttons_and_install_cells():
    import yaml

    from fmbook.book.nb import pip_spec, repository_url

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    assert repository_url() == url and pip_spec() == f"fmbook @ git+{url}"
    assert config["html"]["use_repository_button"] and config["launch_buttons"]["colab_url"]
    for pair in pairs.pairs():
        assert f'"FMBOOK_PIP_SPEC", "fmbook @ git+{url}")' in pair.text.read_text(), pair.name
    assert "repository.url" in (ROOT / "CONTRIBUTING.md").read_text()


def test_sync_rewrites_the_install_line_from_the_setting(tmp_path):
    source = pairs.pairs()[0]
    (tmp_path / "c").mkdir()
    text = tmp_path / "c" / source.text.name
    text.write_text(source.text.read_text().replace("git+https://github.com/", "git+https://example.org/old/"))
    assert pairs.sync(tmp_path) == [f"c/{text.stem}"]
    assert "example.org" not in text.read_text() and pairs.out_of_sync(tmp_path) == []
