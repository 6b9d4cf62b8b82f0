"""Text notebooks and their ``.ipynb`` pairs.

A chapter notebook is written as MyST Markdown (``notebooks/<chapter>/NN_name.md``, jupytext
``md:myst``); people edit that file. Its pair ``NN_name.ipynb`` carries the same cells without
outputs: papermill runs it and Colab opens it. ``python -m fmbook sync`` writes every ``.ipynb`` from
its ``.md`` (keeping cell ids, so a sync without edits changes nothing); ``python -m fmbook sync
--check`` (and a test) reports the pairs that differ.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmbook.core.paths import chapters_dir

SYNC_COMMAND = "python -m fmbook sync"


@dataclass(frozen=True)
class Pair:
    text: Path
    notebook: Path

    @property
    def name(self) -> str:
        return f"{self.text.parent.name}/{self.text.stem}"


def pairs(root: Path | None = None) -> list[Pair]:
    """Every ``notebooks/<chapter>/NN_*.md`` with its ``.ipynb`` path (which may not exist yet)."""
    base = root or chapters_dir()
    return [Pair(md, md.with_suffix(".ipynb")) for md in sorted(base.glob("*/[0-9][0-9]_*.md"))]


def _cells(nb: Any) -> list[tuple[str, str, list[str]]]:
    out = []
    for cell in nb["cells"]:
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        out.append((cell["cell_type"], source.strip("\n"), sorted(cell.get("metadata", {}).get("tags", []))))
    return out


def difference(pair: Pair) -> str | None:
    """None when the pair agrees (cells' types, sources, tags and the ``fmbook`` metadata); else why not."""
    import jupytext

    if not pair.notebook.is_file():
        return f"{pair.notebook.name} is missing"
    text_nb = jupytext.read(pair.text)
    ipynb = json.loads(pair.notebook.read_text(encoding="utf-8"))
    if text_nb.metadata.get("fmbook") != ipynb.get("metadata", {}).get("fmbook"):
        return "the front matter's fmbook metadata differs"
    a, b = _cells(text_nb), _cells(ipynb)
    if len(a) != len(b):
        return f"{len(a)} cells in the text, {len(b)} in the .ipynb"
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"cell {index} differs ({x[0]}: {x[1][:50]!r}...)"
    if any(c.get("outputs") for c in ipynb["cells"] if c["cell_type"] == "code"):
        return "the .ipynb carries outputs (source notebooks carry none)"
    return None


def out_of_sync(root: Path | None = None) -> list[str]:
    """One message per pair that differs, naming the command that syncs it."""
    messages = []
    for pair in pairs(root):
        why = difference(pair)
        if why:
            messages.append(f"notebooks/{pair.name}: .md and .ipynb out of sync ({why}); run: {SYNC_COMMAND}")
    orphans = [p for p in sorted((root or chapters_dir()).glob("*/[0-9][0-9]_*.ipynb")) if not p.with_suffix(".md").is_file()]
    messages += [f"notebooks/{p.parent.name}/{p.name}: no text notebook {p.stem}.md beside it (write the .md; "
                 "the .ipynb is generated from it)" for p in orphans]
    return messages


PIP_SPEC_RE = re.compile(r'(os\.environ\.get\("FMBOOK_PIP_SPEC", )"[^"]*"(\))')


def update_pip_spec(pair: Pair, spec: str) -> bool:
    """Point the bootstrap cell's install line at the book's repository setting; True if changed."""
    text = pair.text.read_text(encoding="utf-8")
    new = PIP_SPEC_RE.sub(lambda m: f'{m.group(1)}"{spec}"{m.group(2)}', text)
    if new != text:
        pair.text.write_text(new, encoding="utf-8")
    return new != text


def sync(root: Path | None = None) -> list[str]:
    """Write each ``.ipynb`` from its ``.md`` where they differ (outputs dropped, cell ids kept).

    The bootstrap cell's install line is first brought in step with ``_config.yml``'s repository.
    """
    import jupytext
    from jupytext.cli import jupytext as jupytext_cli

    from fmbook.book.nb import pip_spec

    spec = pip_spec()
    written = []
    for pair in pairs(root):
        update_pip_spec(pair, spec)
        if difference(pair) is None:
            continue
        jupytext_cli([str(pair.text), "--to", "ipynb", "--update", "--quiet"])
        nb = json.loads(pair.notebook.read_text(encoding="utf-8"))
        front = jupytext.read(pair.text).metadata.get("fmbook")
        if front is not None:  # ``--update`` keeps the old notebook metadata: the front matter wins
            nb.setdefault("metadata", {})["fmbook"] = front
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        pair.notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        jupytext.read(pair.notebook)  # still readable
        written.append(pair.name)
    return written
