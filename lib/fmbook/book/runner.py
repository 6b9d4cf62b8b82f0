"""Execute chapter notebooks with papermill at a profile, skipping what has not changed.

For each notebook the runner resolves its parameters (:mod:`fmbook.book.profiles`), hashes its inputs
(notebook source, resolved parameters, library code), and skips it when the last successful run had
the same hash. Otherwise papermill executes it in a subprocess into a staging folder; only when the
notebook finished *and* wrote its results file are the executed copy and the results moved into
place, so a failed or interrupted run leaves the previous good files untouched. Chapters are
independent and run in parallel (``jobs``); notebooks within a chapter run in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from fmbook.book import profiles as P
from fmbook.book.nb import RESULT_PATH_ENV
from fmbook.core.paths import build_dir, package_dir
from fmbook.core.plotting import METADATA_KEY as FIGURE_KEY
from fmbook.core.progress import LOG_ENV
from fmbook.book.results import atomic_write_json, load, result_path

DEFAULT_ESTIMATE_S = {"smoke": 20.0, "local": 120.0, "full": 600.0}


@dataclass
class Job:
    resolved: P.Resolved
    source: Path
    input_hash: str

    @property
    def name(self) -> str:
        return f"{self.resolved.chapter}/{self.resolved.notebook}"


@dataclass
class Outcome:
    job: Job
    status: str  # "ran" | "skipped" | "failed" | "not run"
    seconds: float
    message: str = ""


def library_hash() -> str:
    """SHA-256 over the library's Python sources (its code version for skip-if-unchanged)."""
    digest = hashlib.sha256()
    root = package_dir()
    for path in sorted(root.rglob("*.py")):
        if "_chapters" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def notebook_source_hash(path: Path) -> str:
    """Hash of the cells' types, sources and tags, ignoring outputs and notebook metadata."""
    nb_json = json.loads(Path(path).read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", "")), sorted(c.get("metadata", {}).get("tags", [])))
             for c in nb_json.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def input_hash(resolved: P.Resolved, source: Path, lib_hash: str) -> str:
    payload = {"notebook": notebook_source_hash(source), "params": resolved.values,
               "profile": resolved.profile, "library": lib_hash}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def executed_path(profile: str, chapter: str, notebook: str) -> Path:
    return build_dir() / "executed" / profile / chapter / f"{notebook}.ipynb"


def log_path(profile: str, chapter: str, notebook: str) -> Path:
    """What the notebook's kernel logged (stderr, warnings, progress) in its last run."""
    return build_dir() / "logs" / profile / chapter / f"{notebook}.log"


def failed_path(profile: str, chapter: str, notebook: str) -> Path:
    return build_dir() / "failed" / profile / chapter / f"{notebook}.ipynb"


def plan(targets: list[str], profile: str, overrides: dict[str, Any] | None = None) -> list[Job]:
    """Resolve every selected notebook; refuse unknown names and ill-typed values up front."""
    P.check_profile(profile)
    selected: list[tuple[str, str]] = []
    for target in targets or P.list_chapters():
        chapter, notebook = P.parse_target(target)
        for nb in [notebook] if notebook else P.list_notebooks(chapter):
            if (chapter, nb) not in selected:
                selected.append((chapter, nb))
    overrides = overrides or {}
    declared = {key: P.notebook_parameters(*key) for key in selected}
    for name in overrides:
        if not any(name in params for params in declared.values()):
            allowed = sorted({n for params in declared.values() for n in params})
            raise P.ParameterError(f"unknown parameter {name!r} for the selected notebooks; "
                                   f"allowed: {', '.join(allowed)}")
    lib_hash = library_hash()
    jobs = []
    for chapter, nb in selected:
        mine = {k: v for k, v in overrides.items() if k in declared[(chapter, nb)]}
        resolved = P.resolve(chapter, nb, profile, mine)
        source = P.notebook_path(chapter, nb)
        jobs.append(Job(resolved, source, input_hash(resolved, source, lib_hash)))
    return jobs


def is_up_to_date(job: Job) -> bool:
    r = job.resolved
    res, exe = result_path(r.chapter, r.profile, r.notebook), executed_path(r.profile, r.chapter, r.notebook)
    if not (res.is_file() and exe.is_file()):
        return False
    try:
        return load(res).get("runner", {}).get("input_hash") == job.input_hash
    except (OSError, ValueError):
        return False


def estimate_seconds(job: Job) -> float:
    """Expected seconds of a job: its last recorded execution at this profile, else the budget its
    front matter states for the profile (set from a measured run), else a default per profile."""
    r = job.resolved
    try:
        return float(load(result_path(r.chapter, r.profile, r.notebook))["runner"]["execution_s"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return float(P.notebook_metadata(r.chapter, r.notebook)["budget_s"][r.profile])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_ESTIMATE_S[r.profile]


def longest_first(by_chapter: dict[str, list[Job]], seconds: dict[str, float]) -> list[list[Job]]:
    """Chapters in the order the workers take them: the longest expected chapter first (ties keep the
    book's order), so that with several workers a long chapter does not start last and run alone."""
    return sorted(by_chapter.values(), key=lambda jobs: -sum(seconds[j.name] for j in jobs))  # stable


def _first_error(nb_json: dict) -> str:
    """'cell N: Ename: evalue' for the first cell with an error output."""
    code_index = 0
    for index, cell in enumerate(nb_json.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        code_index += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first_line = "".join(cell.get("source", "")).strip().splitlines()[:1]
                return (f"cell {index} (code cell {code_index}: {first_line[0][:60] if first_line else ''!r}): "
                        f"{output.get('ename')}: {str(output.get('evalue'))[:500]}")
    return "no cell reported an error"


def figure_cell_options(cell: dict) -> dict[str, str] | None:
    """myst-nb image options for a cell's figures, from the metadata the library attaches to each
    figure (:func:`fmbook.core.plotting.figure_info`): ``alt`` from the titles, and the classes
    ``fmbook-figure fmbook-minfont-N`` (N: the smallest font in tenths of a pixel of the PNG), which
    the browser tests scale by the figure's rendered width."""
    infos = [o.get("metadata", {}).get(FIGURE_KEY) for o in cell.get("outputs", [])
             if any(k.startswith("image/") for k in o.get("data", {}))]
    infos = [i for i in infos if i]
    if not infos:
        return None
    alt = "; ".join(dict.fromkeys(i.get("alt") or "Figure" for i in infos))
    classes = ["fmbook-figure"]
    fonts = [i["min_font_pt"] * i.get("dpi", 100) / 72 for i in infos if i.get("min_font_pt")]
    if fonts:
        classes.append(f"fmbook-minfont-{int(min(fonts) * 10)}")
    return {"alt": alt, "classes": " ".join(classes)}


def _tidy_executed(path: Path) -> None:
    """Prepare the executed copy for the book: hide papermill's injected-parameters cell (nb.start
    shows the values) and give every figure its alt text and font class (:func:`figure_cell_options`)."""
    nb_json = json.loads(path.read_text())
    for cell in nb_json.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        options = figure_cell_options(cell) if cell.get("cell_type") == "code" else None
        if options:
            cell["metadata"].setdefault("mystnb", {}).setdefault("image", {}).update(options)
    path.write_text(json.dumps(nb_json, indent=1))


class _Tail(threading.Thread):
    """Print the lines a running notebook writes to its log file (see :mod:`fmbook.core.progress`)."""

    def __init__(self, path: Path, prefix: str, echo: Callable[[str], None] | None):
        super().__init__(daemon=True)
        self.path, self.prefix, self.echo = path, prefix, echo
        self.stop = threading.Event()
        self.lines: list[str] = []

    def _drain(self, handle) -> None:
        for line in handle.read().splitlines():
            if line.strip():
                self.lines.append(line)
                if self.echo is not None:
                    self.echo(f"    {self.prefix}: {line}")

    def run(self) -> None:
        while not self.path.exists() and not self.stop.wait(0.2):
            pass
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            while not self.stop.wait(0.5):
                self._drain(handle)
            self._drain(handle)


def worker_plan(jobs: int, chapters: int) -> tuple[int, int | None]:
    """Workers for ``jobs`` requested over ``chapters`` chapters (one chapter per worker at a time),
    and each worker's CPU threads (:func:`threads_per_worker`)."""
    workers = max(1, min(jobs, chapters))
    return workers, threads_per_worker(workers)


def threads_per_worker(workers: int, cores: int | None = None) -> int | None:
    """CPU threads each notebook's kernel may use when ``workers`` notebooks run at once: the cores
    shared out (at least one), or None for one worker (the libraries' own default, all cores).

    Two kernels that each start one thread per core oversubscribe the machine; PyTorch's threads
    then wait on each other, and a language-model notebook measured at 2.9 answers/s alone fell to
    0.5/s beside another one (2 cores), far below the half it should keep."""
    if workers <= 1:
        return None
    return max(1, (cores or os.cpu_count() or 1) // workers)


def execute(job: Job, force: bool = False, echo: Callable[[str], None] | None = None,
            threads: int | None = None) -> Outcome:
    """Run one notebook (or skip it) and move its products into place only on success.

    ``echo`` receives a line when the notebook starts and every line it logs while it runs
    (progress, warnings, library logging), prefixed with its name; none of them enters the notebook.
    ``threads`` caps the kernel's CPU threads (OpenMP and MKL, which PyTorch reads at start) unless
    the caller's environment already sets them.
    """
    r = job.resolved
    if not force and is_up_to_date(job):
        return Outcome(job, "skipped", 0.0, "unchanged")
    staging = Path(tempfile.mkdtemp(prefix="run-", dir=_ensure(build_dir() / "tmp")))
    out_nb, out_json = staging / f"{r.notebook}.ipynb", staging / f"{r.notebook}.json"
    params = dict(r.values)
    params[P.RUNNER_FLAG] = True
    params[P.SOURCES_PARAM] = r.sources
    (staging / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env[RESULT_PATH_ENV] = str(out_json)
    log_file = staging / "notebook.log"
    env[LOG_ENV] = str(log_file)  # stderr, warnings and logging of the kernel: tailed below
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Progress bars would be published as frozen widgets in the static pages: off for runner runs.
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, str(threads))
    cmd = [sys.executable, "-m", "papermill", str(job.source), str(out_nb), "-f", str(staging / "params.yaml"),
           "--cwd", str(job.source.parent), "--kernel", "python3", "--no-progress-bar", "--log-level", "ERROR"]
    t0 = time.perf_counter()
    if echo is not None:
        echo(f"[start] {job.name} (profile {r.profile})")
    tail = _Tail(log_file, job.name, echo)
    tail.start()
    try:
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        finally:
            tail.stop.set()
            tail.join(timeout=5)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out_json.is_file():
            if out_nb.is_file():
                reason = _first_error(json.loads(out_nb.read_text()))
                target = failed_path(r.profile, r.chapter, r.notebook)
                _ensure(target.parent)
                shutil.copy2(out_nb, target)
                where = f" (executed copy kept at {target})"
            else:
                reason, where = proc.stderr.strip()[-1500:] or "papermill exited without a notebook", ""
            if proc.returncode == 0:
                reason = "the notebook finished without calling run.finish(), so it wrote no results"
            return Outcome(job, "failed", seconds, f"{job.name} failed at {reason}{where}")
        record = load(out_json)
        warned = sum(" py.warnings: " in line or line.startswith("WARNING") for line in tail.lines)
        record["runner"] = {"input_hash": job.input_hash, "execution_s": round(seconds, 2),
                            "command": f"python -m fmbook run {job.name} --profile {r.profile}",
                            "log_lines": len(tail.lines), "warnings_logged": warned}
        _tidy_executed(out_nb)
        exe = executed_path(r.profile, r.chapter, r.notebook)
        _ensure(exe.parent)
        os.replace(out_nb, exe)
        atomic_write_json(result_path(r.chapter, r.profile, r.notebook), record)
        failed_path(r.profile, r.chapter, r.notebook).unlink(missing_ok=True)
        return Outcome(job, "ran", seconds)
    finally:
        if log_file.is_file():  # kept for reading: _build/logs/<profile>/<chapter>/<notebook>.log
            kept = log_path(r.profile, r.chapter, r.notebook)
            _ensure(kept.parent)
            shutil.copy2(log_file, kept)
        shutil.rmtree(staging, ignore_errors=True)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fmt(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def run(targets: list[str], profile: str = "local", overrides: dict[str, Any] | None = None,
        jobs: int = 1, force: bool = False, echo: Callable[[str], None] = print) -> list[Outcome]:
    """Execute the selected chapters; returns one :class:`Outcome` per notebook.

    Up to ``jobs`` chapters run at once, the longest expected first (:func:`longest_first`), each
    kernel with its share of the cores (:func:`threads_per_worker`); the notebooks of one chapter run
    in order, and a failure stops the rest of its chapter only."""
    if jobs < 1:
        raise P.ParameterError(f"jobs must be at least 1, got {jobs}")
    planned = plan(targets, profile, overrides)
    by_chapter: dict[str, list[Job]] = {}
    for job in planned:
        by_chapter.setdefault(job.resolved.chapter, []).append(job)
    total = len(planned)
    remaining = {job.name: (0.0 if not force and is_up_to_date(job) else estimate_seconds(job)) for job in planned}
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    workers, threads = worker_plan(jobs, len(by_chapter))
    echo(f"Running {total} notebook(s) of {len(by_chapter)} chapter(s) at profile '{profile}' "
         f"with {workers} worker(s)" + (f" of {threads} CPU thread(s) each" if threads else "")
         + f"; estimated {_fmt(sum(remaining.values()) / workers)}")

    def report(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)
            remaining[outcome.job.name] = 0.0
            left = sum(remaining.values()) / workers
            tag = {"ran": "done", "skipped": "skipped (unchanged)", "failed": "FAILED",
                   "not run": "not run"}[outcome.status]
            time_part = f" in {_fmt(outcome.seconds)}" if outcome.status in ("ran", "failed") else ""
            echo(f"[{len(outcomes)}/{total}] {outcome.job.name}: {tag}{time_part}"
                 f"  (elapsed {_fmt(time.perf_counter() - start)}, about {_fmt(left)} left)")
            if outcome.status in ("failed", "not run") and outcome.message:
                echo(f"    {outcome.message}")

    def locked_echo(line: str) -> None:
        with lock:
            echo(line)

    def run_chapter(chapter_jobs: list[Job]) -> None:
        failed = False
        for job in chapter_jobs:
            if failed:
                report(Outcome(job, "not run", 0.0, "an earlier notebook of its chapter failed"))
                continue
            try:
                outcome = execute(job, force=force, echo=locked_echo, threads=threads)
            except Exception as exc:  # noqa: BLE001 - report and go on with other chapters
                outcome = Outcome(job, "failed", 0.0, f"{job.name} failed: {type(exc).__name__}: {exc}")
            failed = outcome.status == "failed"
            report(outcome)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run_chapter, longest_first(by_chapter, remaining)))
    ran = sum(o.status == "ran" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    bad = [o for o in outcomes if o.status in ("failed", "not run")]
    echo(f"{ran} ran, {skipped} skipped, {len(bad)} failed or not run, in {_fmt(time.perf_counter() - start)}")
    return outcomes
