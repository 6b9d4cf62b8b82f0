"""Shared fixtures: a miniature book in a temporary folder, for the machinery's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mini_book(tmp_path, monkeypatch):
    """A book with one chapter 'demo' of two notebooks; FMBOOK_ROOT points at it."""
    from fmbook.book.authoring import code, md, write_notebook

    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: notebooks/demo/01_first\n  - file: notebooks/demo/02_second\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text("title: mini\n")
    params = ('profile = "auto"  # smoke | local | full\nseed = 0  # random seed\n'
              'n = 10  # sample size\nscale = 1.5  # spread\nlabel = "x"  # a name\nfail = False  # raise on purpose\n')
    body = [
        md("# First\nA demo notebook."),
        code("import numpy as np\nx = np.random.default_rng(seed).normal(size=n) * scale\n"
             "run.uses_data('demo-normal', n=n)\nrun.log(mean=float(x.mean()), n=n)"),
        code("if fail:\n    raise ValueError('asked to fail')"),
        code("run.headline('mean is near zero', ours=float(x.mean()), paper=0.0)\nrun.finish()"),
    ]
    write_notebook(tmp_path / "notebooks/demo/01_first.ipynb", "demo", "01_first", params, body)
    write_notebook(tmp_path / "notebooks/demo/02_second.ipynb", "demo", "02_second",
                   'profile = "auto"  # profile\nseed = 0  # seed\nn = 5  # size\n',
                   [md("# Second"), code("run.log(n=n)\nrun.finish()")])
    (tmp_path / "notebooks/demo/profiles.yml").write_text(
        "smoke:\n  _all: {n: 3}\n  01_first: {scale: 0.5}\nlocal: {}\nfull:\n  _all: {n: 1000}\n")
    monkeypatch.setenv("FMBOOK_ROOT", str(tmp_path))
    for var in ("FMBOOK_RESULTS", "FMBOOK_BUILD", "FMBOOK_RESULT_PATH"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def smoke_run():
    """Every notebook of every chapter executed at the smoke profile (skips unchanged ones)."""
    from fmbook.book import runner

    outcomes = runner.run([], profile="smoke", jobs=2)
    failed = [o.message for o in outcomes if o.status not in ("ran", "skipped")]
    assert not failed, "\n".join(failed)
    return outcomes


@pytest.fixture(scope="session")
def built_book(smoke_run):
    """The HTML book built strictly (-W -n) from the smoke run; returns the folder of index.html."""
    from fmbook.book.build import build

    return build(profile="smoke")
