"""Build the HTML book from the executed notebooks (execution is off in Jupyter Book).

The book's source tree stays clean: the prose, ``_config.yml`` and ``_toc.yml`` are copied into a
staging folder together with the *executed* notebooks of one profile (at the same paths as the
source notebooks, so that launch buttons open the source notebook), the status page is generated
there from the results files, and ``jupyter-book build -W -n`` turns it into HTML.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fmbook.core.paths import build_dir, repo_root
from fmbook.book.costs import costs_file, render
from fmbook.book.profiles import check_profile
from fmbook.book.related import write_includes as write_related_includes
from fmbook.book.runner import executed_path
from fmbook.book.registry import CHAPTERS
from fmbook.book.status import chapter_times_markdown, chapters_markdown, render_markdown

STATUS_PAGE = "book/status.md"
COSTS_INCLUDE = "book/_costs.md"  # included by how_to_run.md
CHAPTER_TABLE = "book/_chapters_table.md"  # included by the intro


class BookError(RuntimeError):
    pass


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a jb-book table of contents, root first."""
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def costs_markdown(root: Path) -> str:
    """The costs table of ``book/costs.json`` (the last recorded runs), or a note that none is recorded."""
    path = costs_file(root)
    if not path.is_file():
        return "*No run of the whole book has been recorded yet (`python -m fmbook costs --write`).*\n"
    record = json.loads(path.read_text())
    return f"Recorded {record['measured_at'][:10]} by `python -m fmbook costs --write`:\n\n{render(record)}\n"


def stage(profile: str) -> Path:
    """Assemble the book source with the executed notebooks of ``profile``; returns its folder."""
    check_profile(profile)
    root = repo_root()
    if root is None:
        raise BookError("building the book needs a checkout of its repository (no _toc.yml found)")
    target = build_dir() / "book_src"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, target / name)
    shutil.copytree(root / "book", target / "book")
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    missing = []
    for entry in toc_files(toc):
        if not entry.startswith("notebooks/"):
            continue
        _, chapter, notebook = entry.removesuffix(".ipynb").split("/")
        executed = executed_path(profile, chapter, notebook)
        if not executed.is_file():
            missing.append(f"{chapter}/{notebook}")
            continue
        dest = target / "notebooks" / chapter / f"{notebook}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(executed, dest)
    if missing:
        raise BookError(f"not executed at profile '{profile}': {', '.join(missing)}; run first: "
                        f"python -m fmbook run --profile {profile}")
    (target / STATUS_PAGE).write_text(render_markdown(profile))
    (target / COSTS_INCLUDE).write_text(costs_markdown(root))
    (target / CHAPTER_TABLE).write_text(chapters_markdown(profile))
    times = target / "book" / "chapters" / "_times"  # included by the landing pages
    times.mkdir(parents=True, exist_ok=True)
    for chapter in CHAPTERS:
        (times / f"{chapter.id}.md").write_text(chapter_times_markdown(chapter.id) or "*No notebooks yet.*\n")
    write_related_includes(target / "book", profile)  # "related work" lists, from the results files
    return target


def build(profile: str = "local", strict: bool = True) -> Path:
    """Stage and build; returns the folder holding ``index.html``."""
    source = stage(profile)
    output = build_dir() / "book"
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(source),
           "--path-output", str(output)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = build_dir() / "book-build.log"
    log.write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise BookError(f"jupyter-book build failed (full log: {log}):\n{tail}")
    return output / "_build" / "html"
