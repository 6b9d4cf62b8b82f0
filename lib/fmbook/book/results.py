"""The results store: one JSON file per executed notebook, with its provenance, written atomically.

``results/<chapter>/<profile>/<notebook>.json`` holds the metrics a notebook logged, its claim
rows (paper vs ours), the resolved parameters, the models and data it used, package versions,
hardware, git commit, start time and duration. ``smoke``/``local`` results are build products;
``full`` results come from GPU runs and are committed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from fmbook.core.paths import BENCH_FOLDER, repo_root, results_dir

TRACKED_PACKAGES = ("fmbook", "torch", "transformers", "numpy", "scikit-learn", "scipy", "pandas",
                    "sentence-transformers", "papermill", "matplotlib", "jupyter-book")


def to_jsonable(value: Any) -> Any:
    """Numbers, arrays and tensors to plain JSON types (NaN becomes null)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(to_jsonable(data), handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def result_path(chapter: str, profile: str, notebook: str, root: Path | None = None) -> Path:
    return (root or results_dir()) / chapter / profile / f"{notebook}.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "Apple MPS"
    return None


def hardware() -> dict[str, Any]:
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "gpu": gpu_name(),
            "platform": platform.platform(), "python": platform.python_version()}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> dict[str, Any]:
    """Commit of the book's checkout (and whether it had uncommitted changes); None outside one."""
    root = repo_root()
    if root is None or not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit, "dirty": bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance() -> dict[str, Any]:
    return {"hardware": hardware(), "packages": package_versions(), "git": git_commit()}


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def iter_results(root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Every notebook's results file under ``root`` (default: the results folder), sorted by path;
    the benchmark's records (``results/bench``) are not notebook results and are left out."""
    base = root or results_dir()
    if not base.is_dir():
        return
    for path in sorted(base.glob("*/*/*.json")):
        if path.parent.parent.name == BENCH_FOLDER:
            continue
        try:
            record = load(path)
        except (OSError, json.JSONDecodeError):
            continue
        record.setdefault("_path", str(path))
        yield record
