"""Progress and library logging: to the runner's console, never into a published notebook.

>>> from fmbook.core.progress import logger, progress
>>> for batch in progress(batches, desc="embedding"):   # "embedding: 12/40, 3.1/s, about 9 s left"
...     ...
>>> logger.info("cache hit for %s", key)

How it is routed (:func:`route_output`, called by ``nb.start``):

* under the runner (``python -m fmbook run``), the environment variable :data:`LOG_ENV` names a
  file; the kernel's ``sys.stderr``, Python warnings and every logger write there, and the runner
  tails the file and prints its lines on its console, prefixed with the notebook's name. So nothing
  a library says (warnings, progress, log records) ends up in the executed notebook or the book;
* opened by hand (Jupyter, Colab), progress lines and warnings go to stderr as usual, where the
  reader sees them while the cell runs.

Progress is a line every few seconds ("items done / total, rate, time left"), never a bar: bars are
published as frozen widgets in static pages.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

LOG_ENV = "FMBOOK_LOG"  # set by the runner: the file it tails
logger = logging.getLogger("fmbook")
T = TypeVar("T")

_FORMAT = "%(levelname)s %(name)s: %(message)s"
_routed: dict[str, object] = {}


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def progress_line(desc: str, done: int, total: int | None, elapsed: float) -> str:
    """``"desc: done/total, rate/s, about T left"`` (no total: no time left)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    head = f"{desc}: {done}/{total}" if total is not None else f"{desc}: {done}"
    parts = [head, f"{rate:.3g}/s" if rate else "—/s"]
    if total is not None and rate > 0:
        parts.append(f"about {_fmt_seconds((total - done) / rate)} left")
    elif total is not None and done >= total:
        parts.append("done")
    return ", ".join(parts)


class Progress:
    """Count work done and log a progress line at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, total: int | None = None, desc: str = "progress", every_s: float = 5.0,
                 log: logging.Logger | None = None):
        if total is not None and total < 0:
            raise ValueError(f"total must be None or >= 0, got {total}")
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.total, self.desc, self.every_s = total, desc, every_s
        self.log = log or logger
        self.done = 0
        self.t0 = time.perf_counter()
        self._last = self.t0
        self.lines: list[str] = []

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._emit(now)

    def close(self) -> None:
        self._emit(time.perf_counter())

    def _emit(self, now: float) -> None:
        self._last = now
        line = progress_line(self.desc, self.done, self.total, now - self.t0)
        self.lines.append(line)
        self.log.info(line)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "progress",
             every_s: float = 5.0) -> Iterator[T]:
    """Yield from ``iterable`` and log progress lines (a drop-in for a tqdm loop)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, every_s) as bar:
        for item in iterable:
            yield item
            bar.update()


class _LineFile(io.TextIOBase):
    """A text stream appending to the runner's log file, flushed on every write (the runner tails it)."""

    def __init__(self, path: str):
        self._handle = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        self._handle.write(text)
        self._handle.flush()
        return len(text)

    def flush(self) -> None:
        self._handle.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # some libraries read it
        return "utf-8"


def route_output() -> str:
    """Route stderr, warnings and logging (idempotent). Returns ``"runner"`` or ``"interactive"``."""
    path = os.environ.get(LOG_ENV)
    mode = "runner" if path else "interactive"
    if _routed.get("mode") == mode:
        return mode
    if path:
        stream = _LineFile(path)
        _routed["stderr"] = sys.stderr
        sys.stderr = stream  # library prints, tqdm (if anyone enables it), logging's last resort
        handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_fmbook", False)]:
        root.removeHandler(old)
    handler._fmbook = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    if path:
        logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger -> the file
        _quiet_library_handlers()
    _routed["mode"] = mode
    return mode


def _quiet_library_handlers() -> None:
    """Libraries that bring their own stderr handler (transformers) propagate to ours instead.

    Only when already imported: imported later, its handler is created on the re-routed stderr.
    """
    if "transformers" not in sys.modules:
        return
    try:
        from transformers.utils import logging as hf_logging
    except Exception:  # noqa: BLE001 - not installed, or broken: nothing to re-route
        return
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()
