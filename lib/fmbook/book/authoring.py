"""Write chapter notebooks from Python: the parameters and bootstrap cells come out right.

>>> write_notebook("notebooks/nmtune/01_noisy_pretraining.ipynb", "nmtune", "01_noisy_pretraining",
...                parameters='profile = "auto"  # ...\\nseed = 0  # ...',
...                cells=[md("# 1. Noisy pre-training ..."), code("x = 1"), code("run.finish()")])
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from fmbook.book.nb import bootstrap_cell


def md(source: str, tags: list[str] | None = None):
    cell = nbformat.v4.new_markdown_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def code(source: str, tags: list[str] | None = None):
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def build_notebook(chapter: str, notebook: str, parameters: str, cells: list, title_cell=None):
    """Title (first of ``cells`` if markdown), parameters cell, bootstrap cell, then the body."""
    cells = list(cells)
    head = [cells.pop(0)] if title_cell is None and cells and cells[0].cell_type == "markdown" else (
        [title_cell] if title_cell is not None else [])
    nb = nbformat.v4.new_notebook()
    nb.cells = [*head, code(parameters, tags=["parameters"]),
                code(bootstrap_cell(chapter, notebook), tags=["hide-input"]), *cells]
    for index, cell in enumerate(nb.cells):  # stable ids: regenerating a notebook changes nothing
        cell.id = f"{notebook[:2]}-{index:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write_notebook(path: str | Path, chapter: str, notebook: str, parameters: str, cells: list) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = build_notebook(chapter, notebook, parameters, cells)
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
    return path
