"""What every part of the atlas shares: its error type and the reproduced papers (from the registry)."""

from __future__ import annotations

from fmbook.book.registry import PAPERS


class AtlasError(ValueError):
    """Bad input to the atlas: unknown file, format, parameter value or chapter."""


# The reproduced papers (seeds/000_*.txt): arXiv id -> chapter id, in the registry's order.
CHAPTER_ARXIV: dict[str, str] = {p.arxiv: p.id for p in PAPERS}
CHAPTERS: tuple[str, ...] = tuple(CHAPTER_ARXIV.values())
CHAPTER_LABELS: dict[str, str] = {p.id: p.short or p.id for p in PAPERS}  # short names for maps and tables


def short(text: str, n: int = 90) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
