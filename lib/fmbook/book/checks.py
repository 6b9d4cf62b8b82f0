"""Checks that keep every chapter written the same way (run by the tests; usable by hand).

* :func:`registry_problems`: every registered chapter has its notebooks folder, ``profiles.yml``,
  landing page, an entry in the table of contents and (for a paper) a bibliography entry; every
  folder under ``notebooks/`` is registered.
* :func:`numeral_problems`: numerals in the prose (Markdown cells of the text notebooks, chapter
  pages) that are not glued from a run. Numbers about our runs must come from the run
  (``{glue:text}`name```), because a typed number is true at one profile only. Allowed: numerals in
  glue roles, inline code, math and links' targets; in a paragraph that cites the paper
  (``{cite}`...```: the paper's own numbers); years; references such as "Table 3", "Figure 2",
  "Section 4", "Eq. 1"; list markers and headings' leading numbers; numerals glued to letters
  (``ResNet-50``, ``EP01``, ``7B``); and paragraphs marked ``<!-- numerals: ... -->`` with the reason
  (a worked example, a definition such as "from -1 to 1").
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from fmbook.book.registry import CHAPTERS

REFERENCE_WORDS = (r"(?:Table|Tables|Figure|Figures|Fig\.|Section|Sections|Sec\.|Eq\.|Eqs\.|Equation|equation|"
                   r"Appendix|Algorithm|step|Step|Lesson|lesson|notebook|Notebook|notebooks|chapter|Chapter|part|"
                   r"Part|page|arXiv|wave|Wave|version|v|token|layer|index|column|row|rank|seed|position|"
                   r"Gemma|Llama|Vicuna|GPT|Python|WordNet|Flower|PyTorch)")  # the last: names with a number
# a confidence level is a constant of the method, true at every profile
_LEVEL_AFTER = re.compile(r"^\s*%?\s*(?:-|\s)?(?:t-)?(?:confidence|interval|intervals|CI|credible)\b")
_SKIP_INLINE = [
    re.compile(r"\{glue(?::\w+)?\}`[^`]*`"),  # glue roles
    re.compile(r"\{(?:cite|cite:p|cite:t|doc|ref|numref|eq|download|math)\}`[^`]*`"),
    re.compile(r"``[^`]*``|`[^`]*`"),  # inline code
    re.compile(r"\$\$.*?\$\$|\$[^$]*\$"),  # math
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<[^>]+>"),  # html tags and comments
    re.compile(r"https?://\S+"),
]
_NUMERAL = re.compile(r"(?<![\w.\-/#])[-+−]?\d+(?:[.,]\d+)*\s?%?(?![\w/])")
_YEAR = re.compile(r"^(?:19|20)\d\d$")
_REFERENCE = re.compile(REFERENCE_WORDS + r"\s*\(?$")


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the Markdown prose of a file: code cells, fences, front matter and
    directives' option lines are left out."""
    out: list[tuple[int, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    in_front = bool(lines) and lines[0].strip() == "---"
    fence: str | None = None
    prose_open: list[str] = []  # fences of the prose-bearing directives now open (exercise, solution...)
    math_block = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if in_front:
            if number > 1 and stripped == "---":
                in_front = False
            continue
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip("`~:") == "":
                fence = None
            continue
        m = re.match(r"^(`{3,}|~{3,}|:{3,})(.*)$", stripped)
        if m:
            kind = m.group(2).strip()
            if not kind and prose_open and m.group(1) == prose_open[-1]:
                prose_open.pop()  # the closing fence of a prose directive opens nothing
                continue
            # prose-bearing directives (notes, exercises, solutions...) keep their body checked
            prose = re.match(r"^\{(note|tip|warning|important|admonition|exercise|solution|margin|"
                             r"dropdown|seealso|caution|attention|hint)\}", kind)
            if prose:
                prose_open.append(m.group(1))
            else:
                fence = m.group(1)
            continue
        if stripped == "$$":
            math_block = not math_block
            continue
        if math_block or stripped.startswith(":") and re.match(r"^:\w[\w-]*:", stripped):
            continue
        if stripped.startswith("+++") or stripped.startswith("(") and stripped.endswith(")="):
            continue
        out.append((number, line))
    return out


def numeral_problems(paths: list[Path], root: Path | None = None) -> list[str]:
    """``file:line: '12' ...`` for every numeral in prose that is neither glued nor allowed."""
    problems = []
    for path in paths:
        lines = _prose_lines(path)
        # paragraphs: a run of consecutive prose lines not separated by a blank line
        paragraph_of, current, index = {}, 0, 0
        for number, line in lines:
            if not line.strip() or (index and lines[index - 1][0] != number - 1):
                current += 1
            paragraph_of[number] = current
            index += 1
        exempt = {paragraph_of[n] for n, line in lines if "{cite" in line or "numerals:" in line}
        for number, line in lines:
            if paragraph_of[number] in exempt:
                continue
            text = line
            for pattern in _SKIP_INLINE:
                text = pattern.sub(" ", text)
            text = re.sub(r"^\s*(?:#+\s*[\d.]*|\d+[.)]|[-*+]\s+\d+[.)])\s", " ", text)  # headings, list markers
            for m in _NUMERAL.finditer(text):
                token = m.group(0).strip()
                bare = token.lstrip("+-−").rstrip("%").strip()
                if _YEAR.match(bare):
                    continue
                if _LEVEL_AFTER.match(text[m.end():]) and bare in ("90", "95", "99"):
                    continue
                before = text[: m.start()].rstrip()
                if _REFERENCE.search(before[-20:]) or re.search(r"(?:Tables?|Figures?|Sections?)\s[\d,\sand]*$", before):
                    continue
                shown = path.relative_to(root) if root and path.is_relative_to(root) else path
                problems.append(f"{shown}:{number}: numeral {token!r} in prose is neither glued nor allowed: "
                                f"{line.strip()[:100]}")
    return problems


def prose_files(root: Path) -> list[Path]:
    """The text notebooks and the chapter landing pages of the book."""
    return sorted(root.glob("notebooks/*/[0-9][0-9]_*.md")) + sorted(root.glob("book/chapters/*.md"))


def registry_problems(root: Path, chapters=CHAPTERS) -> list[str]:
    """What is missing for each registered chapter, and folders that no registry entry claims."""
    problems = []
    from fmbook.book.build import toc_files

    toc = set(toc_files(yaml.safe_load((root / "_toc.yml").read_text())))
    bib = (root / "book/references.bib").read_text(encoding="utf-8") if (root / "book/references.bib").is_file() else ""
    ids = {c.id for c in chapters}
    for c in chapters:
        if not (root / f"{c.landing_page}.md").is_file():
            problems.append(f"{c.id}: no landing page {c.landing_page}.md")
        elif f"_times/{c.id}.md" not in (root / f"{c.landing_page}.md").read_text(encoding="utf-8"):
            problems.append(f"{c.id}: landing page does not include _times/{c.id}.md (each notebook's time)")
        if c.landing_page not in toc:
            problems.append(f"{c.id}: landing page {c.landing_page} is not in _toc.yml")
        folder = root / c.notebooks_folder
        notebooks = sorted(folder.glob("[0-9][0-9]_*.md"))
        if folder.is_dir() and notebooks:
            if not (folder / "profiles.yml").is_file():
                problems.append(f"{c.id}: no {c.notebooks_folder}/profiles.yml")
            for nb in notebooks:
                entry = f"{c.notebooks_folder}/{nb.stem}"
                if entry not in toc:
                    problems.append(f"{c.id}: notebook {entry} is not in _toc.yml")
        if c.kind == "paper" and f"{{{c.bibkey}," not in bib.replace(" ", ""):
            problems.append(f"{c.id}: bibliography key {c.bibkey!r} not in book/references.bib")
    for folder in sorted((root / "notebooks").iterdir()) if (root / "notebooks").is_dir() else []:
        if folder.is_dir() and folder.name not in ids and not folder.name.startswith((".", "_")):
            problems.append(f"notebooks/{folder.name}: not registered in lib/fmbook/book/registry.py")
    return problems


METADATA_KEYS = ("description", "budget_s", "accelerator_full", "licences")


def metadata_problems(chapters_root: Path) -> list[str]:
    """Every text notebook's front matter carries the ``fmbook`` block the status page reads."""
    import jupytext

    problems = []
    for md in sorted(chapters_root.glob("*/[0-9][0-9]_*.md")):
        meta = jupytext.read(md).metadata.get("fmbook") or {}
        name = f"{md.parent.name}/{md.name}"
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            problems.append(f"{name}: front matter lacks fmbook: {', '.join(missing)}")
            continue
        budget = meta["budget_s"]
        if not isinstance(budget, dict) or not {"smoke", "local"} <= set(budget):
            problems.append(f"{name}: fmbook.budget_s needs seconds for smoke and local, got {budget!r}")
    return problems


# --- teaching: exercises at the end of every notebook, goals and prerequisites on every landing page
EXERCISE_KINDS = ("predict", "extend", "argue")
_EXERCISE = re.compile(r"^`{3,}\{exercise\}[^\n]*\n:label:\s*(\S+)", re.M)
_SOLUTION = re.compile(r"^`{3,}\{solution(?:-start)?\}\s*(\S+)", re.M)


def exercise_problems(chapters_root: Path, chapters=CHAPTERS) -> list[str]:
    """Every notebook ends with three or four exercises labelled ``<chapter>-<NN>-<kind>``, one of
    each kind in :data:`EXERCISE_KINDS` (predict before running, extend the library with a test, argue
    with the paper), each with a solution, all before the last cell ``run.finish()``."""
    problems = []
    for chapter in chapters:
        for path in sorted((chapters_root / chapter.id).glob("[0-9][0-9]_*.md")):
            text = path.read_text()
            where = f"{chapter.id}/{path.name}"
            labels = _EXERCISE.findall(text)
            solved = set(_SOLUTION.findall(text))
            if not 3 <= len(labels) <= 4:
                problems.append(f"{where}: {len(labels)} exercises (want 3 or 4)")
            prefix = f"{chapter.id}-{path.name[:2]}-"
            for label in labels:
                if not label.startswith(prefix):
                    problems.append(f"{where}: exercise label {label!r} does not start with {prefix!r}")
                if label not in solved:
                    problems.append(f"{where}: exercise {label!r} has no solution")
            for kind in EXERCISE_KINDS:
                if prefix + kind not in labels:
                    problems.append(f"{where}: no {kind!r} exercise (label {prefix + kind})")
            if labels:
                last_cell = text.rsplit("```{code-cell}", 1)[-1]
                if "run.finish()" not in last_cell or text.find(f":label: {labels[-1]}") > text.rfind("```{code-cell}"):
                    problems.append(f"{where}: the exercises must come before the last cell, run.finish()")
    return problems


LANDING_SECTIONS = ("## Learning goals", "## Prerequisites", "## Time to run")


def landing_problems(book_root: Path, chapters=CHAPTERS) -> list[str]:
    """Every chapter's landing page has its learning goals and prerequisites before the notebooks,
    and the generated times of every notebook."""
    problems = []
    for chapter in chapters:
        path = book_root / "chapters" / f"{chapter.id}.md"
        if not path.is_file():
            continue  # registry_problems reports it
        lines = path.read_text().splitlines()
        for heading in LANDING_SECTIONS:
            if heading not in lines:
                problems.append(f"{path.name}: no section {heading!r}")
        if all(h in lines for h in LANDING_SECTIONS[:2]) and lines.index(LANDING_SECTIONS[0]) > lines.index(LANDING_SECTIONS[1]):
            problems.append(f"{path.name}: learning goals must come before prerequisites")
    return problems
