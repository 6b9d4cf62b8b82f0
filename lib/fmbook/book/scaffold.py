"""``python -m fmbook new-chapter NAME``: a chapter that builds and passes its tests at smoke.

It writes the landing page, one text notebook with its ``.ipynb`` pair, ``profiles.yml``, a method
module with a tested ``claims(...)``, a test file, the registry entry, the table-of-contents entry
and a bibliography stub. Every file is a starting point to rewrite; CONTRIBUTING.md lists the steps.
"""

from __future__ import annotations

import re
from pathlib import Path

from fmbook.core.paths import repo_root

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(ValueError):
    pass


_NOTEBOOK = '''---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
    jupytext_version: 1.19.6
kernelspec:
  display_name: Python 3
  language: python
  name: python3
fmbook:
  description: "A first look: the chapter's claim on a small synthetic sample."
  budget_s: {{smoke: 30, local: 60}}
  accelerator_full: "none"
  licences: {{"synthetic data": "generated here"}}
---

# 1. A first look

Replace this notebook with the chapter's first real step. It shows the shape every notebook has:
parameters, the bootstrap cell, library calls, a figure with its provenance line, a claim decided
by its interval, and `run.finish()`.

```{{code-cell}}
:tags: [parameters]

profile = "auto"  # smoke | local | full; auto: full on a GPU, local otherwise
seed = 0  # seed of this notebook's randomness
n = 200  # sample size
effect = 0.3  # true mean difference of the synthetic sample
```

```{{code-cell}}
:tags: [hide-input]

{bootstrap}
```

```{{code-cell}}
import matplotlib.pyplot as plt

from fmbook import {name}

sample = {name}.synthetic_sample(n=n, effect=effect, seed=seed)
run.uses_data("synthetic-normal", n=n, effect=effect)
run.glue("n", n)
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(sample, bins=30)
ax.set(title="The synthetic sample", xlabel="difference", ylabel="count")
run.stamp(fig)
```

The sample holds {{glue:text}}`n` differences.

```{{code-cell}}
run.claims({name}.claims(sample))
run.finish()
```
'''

_MODULE = '''"""{title}: the method of the chapter ``{name}`` (start here; replace the example)."""

from __future__ import annotations

import numpy as np

from fmbook.core import stats
from fmbook.core.claims import Claim


def synthetic_sample(n: int, effect: float, seed: int = 0) -> np.ndarray:
    """``n`` paired differences drawn from N(effect, 1) (an example input for the scaffold)."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {{n}}")
    return np.random.default_rng(seed).normal(effect, 1.0, size=n)


def claims(differences: np.ndarray) -> list[Claim]:
    """The chapter's paper-vs-ours rows, each decided by its interval."""
    interval = stats.t_interval(differences)
    return [Claim.from_interval("The method improves on the baseline", interval,
                                "mean paired difference, 95% t-interval", paper=None,
                                resolvable=interval.half_width)]
'''

_TEST = '''"""fmbook.{name}: the example claim is decided by its interval."""

from fmbook import {name}


def test_claims_follow_the_interval():
    assert {name}.claims({name}.synthetic_sample(400, 1.0))[0].verdict == "holds"
    assert {name}.claims({name}.synthetic_sample(400, -1.0))[0].verdict == "contradicted"
'''

_LANDING = '''# {title}

**Learning goals.** What a reader can do after this chapter.

**Prerequisites.** Which earlier chapters or concepts this one builds on.

This chapter reproduces {{cite}}`{name}`. Its notebooks:

1. *A first look* — the shape every notebook has.

## Time to run

```{{include}} _times/{name}.md
```
'''


def new_chapter(name: str, title: str = "", root: Path | None = None) -> list[Path]:
    """Write the files of a new chapter ``name``; returns the paths written."""
    from fmbook.book.nb import bootstrap_cell
    from fmbook.book.pairs import Pair, sync

    if not NAME_RE.match(name):
        raise ScaffoldError(f"chapter name {name!r} must match {NAME_RE.pattern} (e.g. 'my_paper')")
    root = root or repo_root()
    if root is None:
        raise ScaffoldError("new-chapter needs a checkout of the book (no _toc.yml found)")
    title = title or name.replace("_", " ").title()
    folder = root / "notebooks" / name
    if folder.exists() or (root / "lib/fmbook" / f"{name}.py").exists():
        raise ScaffoldError(f"chapter {name!r} exists already ({folder})")
    written = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    notebook = "01_first_look"
    write(folder / f"{notebook}.md", _NOTEBOOK.format(name=name, bootstrap=bootstrap_cell(name, notebook)))
    write(folder / "profiles.yml", f"smoke:\n  {notebook}: {{n: 50}}\nlocal: {{}}\nfull: {{}}\n")
    write(root / "lib/fmbook" / f"{name}.py", _MODULE.format(name=name, title=title))
    write(root / "tests" / f"test_{name}.py", _TEST.format(name=name))
    write(root / "book/chapters" / f"{name}.md", _LANDING.format(name=name, title=title))

    registry = root / "lib/fmbook/book/registry.py"
    text = registry.read_text(encoding="utf-8")
    entry = f'    Chapter("{name}", "{title}", bibkey="{name}", short="{title}"),\n'
    marker = '    Chapter("atlas",'
    if marker not in text:
        raise ScaffoldError(f"cannot find where to add the registry entry in {registry}")
    registry.write_text(text.replace(marker, entry + marker, 1), encoding="utf-8")
    written.append(registry)

    toc = root / "_toc.yml"
    text = toc.read_text(encoding="utf-8")
    lines = [f"      - file: book/chapters/{name}\n", "        sections:\n",
             f"          - file: notebooks/{name}/{notebook}\n"]
    anchor = "  - caption: The field around these papers\n"
    if anchor not in text:
        text += "".join(["  - caption: New chapters\n", "    chapters:\n", *lines])
    else:
        text = text.replace(anchor, "".join(lines) + anchor, 1)
    toc.write_text(text, encoding="utf-8")
    written.append(toc)

    bib = root / "book/references.bib"
    with bib.open("a", encoding="utf-8") as f:
        f.write(f"\n@misc{{{name},\n  title = {{{title}}},\n  note = {{complete this entry}},\n  year = {{2026}}\n}}\n")
    written.append(bib)
    sync(root / "notebooks")
    written.append(Pair(folder / f"{notebook}.md", folder / f"{notebook}.ipynb").notebook)
    return written
