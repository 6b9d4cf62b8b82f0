"""Where things live: the repository (when there is one), chapters, results, build and cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the fmbook package (this file is in fmbook/core)


def repo_root() -> Path | None:
    """The book's repository root (the folder holding ``_toc.yml``), or None outside a checkout.

    ``FMBOOK_ROOT`` wins; otherwise the library's own location (an editable install) and then the
    working directory and its parents are searched.
    """
    env = os.environ.get("FMBOOK_ROOT")
    if env:
        return Path(env).resolve()
    for start in (_PACKAGE_DIR, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "_toc.yml").is_file() and (folder / "notebooks").is_dir():
                return folder
    return None


def chapters_dir() -> Path:
    """Folder with one sub-folder per chapter (notebooks and ``profiles.yml``).

    In a checkout this is ``notebooks/``; an installed wheel carries a copy (``fmbook/_chapters``)
    so that a notebook opened alone, as in Colab, resolves its profile the same way.
    """
    root = repo_root()
    if root is not None:
        return root / "notebooks"
    packaged = _PACKAGE_DIR / "_chapters"
    if packaged.is_dir():
        return packaged
    raise FileNotFoundError(
        "fmbook cannot find the chapters: not inside a checkout of the book and no packaged copy. "
        "Set FMBOOK_ROOT to the repository root."
    )


def _base_dir() -> Path:
    root = repo_root()
    return root if root is not None else Path.cwd().resolve()


BENCH_FOLDER = "bench"  # results/bench/<profile>/: the LM benchmark's records, not a notebook's


def results_dir() -> Path:
    """``results/<chapter>/<profile>/<notebook>.json`` live here (``FMBOOK_RESULTS`` overrides)."""
    env = os.environ.get("FMBOOK_RESULTS")
    return Path(env).resolve() if env else _base_dir() / "results"


def build_dir() -> Path:
    """Executed notebooks, the staged book source and the HTML (``FMBOOK_BUILD`` overrides)."""
    env = os.environ.get("FMBOOK_BUILD")
    return Path(env).resolve() if env else _base_dir() / "_build"


def cache_dir() -> Path:
    """Downloaded assets, converted models, trained encoders, model-output caches.

    ``FMBOOK_CACHE`` overrides; the default follows XDG (``~/.cache/fmbook``).
    """
    env = os.environ.get("FMBOOK_CACHE")
    if env:
        path = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "fmbook"
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir() -> Path:
    return _PACKAGE_DIR


@contextmanager
def atomic_folder(target: Path, replace: bool | Callable[[], bool] = True) -> Iterator[Path]:
    """Build a cache folder under a temporary name beside ``target``; rename it into place at the end.

    An error (or an interrupt) inside the block removes the staging folder and leaves ``target`` as
    it was. If ``target`` exists by the end (an earlier run, or another process that finished
    first), it is replaced when ``replace`` (or ``replace()``) is true and kept otherwise.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            if not (replace() if callable(replace) else replace):
                shutil.rmtree(staging, ignore_errors=True)
                return
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
